"""The one path from an `Event` to a record on the ``hilt`` logger (plus cost scopes and callbacks)."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import _recorder
from ._internal import report_failure, report_problem
from .audit import dispatch_callbacks, wait_for_callbacks
from .context import CallScope, capture_scope, current_conversation
from .errors import HILTError
from .events import Actor, Event, is_error_event

if TYPE_CHECKING:
    from .session import Session

__all__ = ["audit_log", "durable_handlers", "emit", "event_level", "flush", "logger"]

logger = logging.getLogger("hilt")
# Events are an audit trail, not application logs: they reach only the handlers hilt or the user put
# on this logger. `propagate = True` (or `instrument(propagate=True)`) sends them to the root too.
logger.propagate = False
if logger.level == logging.NOTSET:
    logger.setLevel(logging.INFO)
if not logger.handlers:
    logger.addHandler(logging.NullHandler())  # no stderr "last resort" output for error events


_durable_cache: tuple[tuple[logging.Handler, ...], bool] = ((), False)


def durable_handlers() -> bool:
    """True when a handler on the ``hilt`` logger syncs every line to disk (``fsync=True``): providers then
    write a call's events before it returns, so a call that returned is on disk (cached per handler set)."""
    global _durable_cache
    handlers = tuple(logger.handlers)
    cached_handlers, durable = _durable_cache
    if handlers != cached_handlers:
        durable = any(getattr(handler, "fsync", False) is True for handler in handlers)
        _durable_cache = (handlers, durable)
    return durable


def event_level(event: Event) -> int:
    """``WARNING`` for error events, ``INFO`` for the rest (a pinned detail)."""
    return logging.WARNING if is_error_event(event) else logging.INFO


def _apply_scope(event: Event, scope: CallScope) -> None:
    tags = scope.tags
    extensions = event.extensions
    if tags is not None:
        if tags.user_id is not None:
            extensions.setdefault("user_id", tags.user_id)
        if tags.tenant is not None:
            extensions.setdefault("tenant", tags.tenant)
        if tags.metadata:
            extensions.setdefault("metadata", dict(tags.metadata))
    if scope.trackers and "call_id" in extensions:
        if event.action == "prompt":
            for tracker in scope.trackers:
                tracker.add_call()
        elif event.action == "completion":
            metrics = event.metrics
            for tracker in scope.trackers:
                tracker.add_usage(metrics.tokens, metrics.cost_usd)  # type: ignore[union-attr]
        elif is_error_event(event):
            for tracker in scope.trackers:
                tracker.add_error()


_LEVEL_NAMES = {logging.INFO: "INFO", logging.WARNING: "WARNING"}
_START_NS = int(logging._startTime * 1e9) if isinstance(logging._startTime, float) else int(logging._startTime)


def _event_record(level: int, event: Event, session: Session | None, thread: threading.Thread | None) -> logging.LogRecord:
    """A ``LogRecord`` with every standard attribute, built without the stdlib's per-call path arithmetic.

    ``logging.LogRecord.__init__`` splits a source path and looks up names on every call; an event's
    record has no source line, so those values are constants here. Thread and process fields follow
    the stdlib's ``logThreads`` / ``logProcesses`` / ``logMultiprocessing`` switches; ``thread`` is the
    thread the call was made on (the recorder thread writes provider events).
    """
    now = time.time_ns()
    if thread is None:
        thread = threading.current_thread()
    record = logging.LogRecord.__new__(logging.LogRecord)
    record.__dict__.update(
        name="hilt",
        msg="hilt %s",
        args=(event.action,),
        levelname=_LEVEL_NAMES.get(level) or logging.getLevelName(level),
        levelno=level,
        pathname="hilt",
        filename="hilt",
        module="hilt",
        exc_info=None,
        exc_text=None,
        stack_info=None,
        lineno=0,
        funcName=None,
        created=now / 1e9,
        msecs=float((now % 1_000_000_000) // 1_000_000),
        relativeCreated=(now - _START_NS) / 1e6,
        thread=thread.ident if logging.logThreads else None,
        threadName=thread.name if logging.logThreads else None,
        processName=_process_name() if logging.logMultiprocessing else None,
        process=os.getpid() if logging.logProcesses else None,
        taskName=_task_name() if getattr(logging, "logAsyncioTasks", False) else None,
        hilt_event=event,
        hilt_session=session,
    )
    return record


def _task_name() -> str | None:
    """The running asyncio task's name, as Python 3.12+ records put in ``taskName``."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return None
    return task.get_name() if task is not None else None


def _process_name() -> str:
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is not None:
        try:
            return multiprocessing.current_process().name  # type: ignore[no-any-return]
        except Exception:
            pass
    return "MainProcess"


def emit(event: Event, *, scope: CallScope | None = None, session: Session | None = None) -> None:
    """Record ``event``: tag it with the conversation context, count it in cost scopes, log it on ``hilt``.

    The record carries the event as ``record.hilt_event``, so any handler (or a ``QueueHandler`` hop)
    gets the finished event. Provider calls still being recorded in the background are written
    first, so the log keeps the order things happened in. Never raises: a failure is reported on
    ``hilt.internal``.

    Args:
        event: the event to record.
        scope: the context captured when the call started (providers pass it); default: the current one.
        session: send the event to this session rather than the active one.
    """
    try:
        if not isinstance(event, Event):
            raise TypeError(f"hilt.emit() takes an Event, got {type(event).__name__}")
        _recorder.drain()
        if scope is None:
            scope = capture_scope()
        _apply_scope(event, scope)
        target = session if session is not None else scope.session
        level = event_level(event)
        if logger.disabled:
            report_problem(
                "emit",
                "the 'hilt' logger is disabled (logging.config.dictConfig with disable_existing_loggers=True?); "
                "events reach only sessions and callbacks. Add 'disable_existing_loggers: false' or configure 'hilt'.",
            )
            to_logger = False
        else:
            to_logger = logger.isEnabledFor(level)
        to_session = target is not None and not target.attached
        if to_logger or to_session:
            record = _event_record(level, event, target, scope.thread)
            if to_logger:
                logger.handle(record)
            if to_session:
                target.handle(record)  # type: ignore[union-attr]
        dispatch_callbacks(event, scope.loop, scope.context)
    except Exception as exc:
        report_failure("emit", exc)


def flush(timeout: float = 5.0) -> bool:
    """Finish recording everything that happened so far in this process, then return.

    LLM calls are recorded on a background thread (the call returns first); this writes what is
    still pending to the handlers on the calling thread, then waits up to ``timeout`` seconds for
    audit callbacks to receive what was queued for them. ``uninstrument()``, exit and
    ``Session.read()`` do it too. Handlers with their own background work (``HiltQueueHandler``,
    ``HiltSheetsHandler``) keep their own ``flush()``.

    Returns:
        True when everything was delivered; False when callbacks were still busy at ``timeout``.
    """
    try:
        _recorder.drain()
    except Exception as exc:
        report_failure("flush", exc)
    return wait_for_callbacks(timeout)


def audit_log(event_type: str, details: Mapping[str, Any] | None = None, **more: Any) -> Event:
    """Record a custom audit event (``data_export``, ``consent_given``...) through the same pipeline as LLM calls.

    Args:
        event_type: the audit ``event_type`` written for it.
        details: a dict of facts about it; keyword arguments are merged in.

    Returns:
        The event written (``action="audit"``, facts in ``extensions.details``).

    Raises:
        HILTError: ``event_type`` is not a non-empty string, or ``details`` is not a dict.
    """
    if not isinstance(event_type, str) or not event_type.strip():
        raise HILTError(f"event_type: expected a non-empty string such as 'data_export', got {event_type!r}")
    if details is not None and not isinstance(details, Mapping):
        raise HILTError(f"details: expected a dict, got {type(details).__name__}; or pass the facts as keywords")
    facts = dict(details or {})
    facts.update(more)
    tags = current_conversation()
    event = Event(
        session_id=tags.id if tags is not None else None,
        actor=Actor(type="system", id="app"),
        action="audit",
        extensions={"audit_event_type": event_type, "details": facts},
    )
    emit(event)
    return event

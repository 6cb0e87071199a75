"""The one path from an `Event` to a record on the ``hilt`` logger (plus cost scopes and callbacks)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._internal import report_failure, report_problem
from .audit import dispatch_callbacks
from .context import CallScope, capture_scope, current_conversation
from .errors import HILTError
from .events import Actor, Event, is_error_event

if TYPE_CHECKING:
    from .session import Session

__all__ = ["audit_log", "emit", "event_level", "logger"]

logger = logging.getLogger("hilt")
# Events are an audit trail, not application logs: they reach only the handlers hilt or the user put
# on this logger. `propagate = True` (or `instrument(propagate=True)`) sends them to the root too.
logger.propagate = False
if logger.level == logging.NOTSET:
    logger.setLevel(logging.INFO)
if not logger.handlers:
    logger.addHandler(logging.NullHandler())  # no stderr "last resort" output for error events


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


def emit(event: Event, *, scope: CallScope | None = None, session: Session | None = None) -> None:
    """Record ``event``: tag it with the conversation context, count it in cost scopes, log it on ``hilt``.

    The record carries the event as ``record.hilt_event``, so any handler (or a ``QueueHandler`` hop)
    gets the finished event. Never raises: a failure is reported on ``hilt.internal``.

    Args:
        event: the event to record.
        scope: the context captured when the call started (providers pass it); default: the current one.
        session: send the event to this session rather than the active one.
    """
    try:
        if not isinstance(event, Event):
            raise TypeError(f"hilt.emit() takes an Event, got {type(event).__name__}")
        if scope is None:
            scope = capture_scope()
        _apply_scope(event, scope)
        target = session if session is not None else scope.session
        level = event_level(event)
        record = logging.LogRecord("hilt", level, "hilt", 0, "hilt %s", (event.action,), None)
        record.hilt_event = event
        record.hilt_session = target
        if logger.disabled:
            report_problem(
                "emit",
                "the 'hilt' logger is disabled (logging.config.dictConfig with disable_existing_loggers=True?); "
                "events reach only sessions and callbacks. Add 'disable_existing_loggers: false' or configure 'hilt'.",
            )
        elif logger.isEnabledFor(level):
            logger.handle(record)
        if target is not None and not target.attached:
            target.handle(record)
        dispatch_callbacks(event)
    except Exception as exc:
        report_failure("emit", exc)


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

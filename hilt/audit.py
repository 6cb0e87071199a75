"""Audit events for people and tools outside the log file: the ``AuditEvent`` shape and user callbacks.

A callback receives every event (or the ``event_types`` it asked for) as an :class:`AuditEvent`.
Callbacks run on hilt's ``hilt-callbacks`` thread, in event order, so a slow one never holds up an
LLM call; ``async def`` ones run on the loop that was running where the call was made, or on a
background loop when there was none. A failing callback never affects the LLM call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import copy
import inspect
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from ._internal import report_failure, report_problem
from .errors import HILTError
from .events import Event, is_error_event

__all__ = [
    "AUDIT_EVENT_TYPES",
    "AuditEvent",
    "audit_event_type",
    "dispatch_callbacks",
    "register_audit_callback",
    "unregister_audit_callback",
    "wait_for_callbacks",
]

#: The event types hilt writes itself; ``audit_log("my_type", ...)`` adds its own.
AUDIT_EVENT_TYPES = ("llm_call_started", "llm_call_completed", "llm_call_error", "event")


@dataclass(frozen=True)
class AuditEvent:
    """One audit record: ``timestamp`` (ISO 8601 ``Z``, the event's), ``event_type``, ``details`` (the event dict)."""

    timestamp: str
    event_type: str
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"timestamp": self.timestamp, "event_type": self.event_type, "details": self.details}


def audit_event_type(event: Event) -> str:
    """llm_call_started/completed/error for provider calls, the ``audit_log`` type, or ``event`` for the rest."""
    extensions = event.extensions
    custom = extensions.get("audit_event_type")
    if custom:
        return str(custom)
    if "call_id" in extensions:
        if event.action == "prompt":
            return "llm_call_started"
        if event.action == "completion":
            return "llm_call_completed"
        if is_error_event(event):
            return "llm_call_error"
    return "event"


Callback = Callable[[AuditEvent], Any]


@dataclass(frozen=True)
class _Registration:
    fn: Callback
    event_types: frozenset[str] | None
    name: str


_registrations: tuple[_Registration, ...] = ()
_registry_lock = threading.Lock()


def register_audit_callback(fn: Callback, event_types: Iterable[str] | str | None = None) -> None:
    """Call ``fn(AuditEvent)`` for every event, or only for ``event_types`` (e.g. ``["llm_call_error"]``).

    Registering the same function again replaces its filter.

    Raises:
        HILTError: ``fn`` is not callable or ``event_types`` is not a list of names.
    """
    global _registrations
    if not callable(fn):
        raise HILTError(f"fn: {fn!r} is not callable; pass a function taking one AuditEvent")
    types: frozenset[str] | None = None
    if event_types is not None:
        if isinstance(event_types, str):
            event_types = [event_types]
        types = frozenset(event_types)
        if not types or not all(isinstance(t, str) and t for t in types):
            raise HILTError(
                f"event_types: expected a list of event type names such as {list(AUDIT_EVENT_TYPES)}, got {event_types!r}"
            )
    name = getattr(fn, "__qualname__", None) or repr(fn)
    with _registry_lock:
        kept = tuple(r for r in _registrations if r.fn != fn)
        _registrations = kept + (_Registration(fn, types, name),)


def unregister_audit_callback(fn: Callback) -> None:
    """Stop calling ``fn``; unknown functions are ignored."""
    global _registrations
    with _registry_lock:
        _registrations = tuple(r for r in _registrations if r.fn != fn)


def registered_callbacks() -> tuple[Callback, ...]:
    return tuple(r.fn for r in _registrations)


def dispatch_callbacks(event: Event, loop: Any = None, context: contextvars.Context | None = None) -> None:
    """Queue ``event`` for the callbacks that want it; they run on the ``hilt-callbacks`` thread.

    The emitting thread only snapshots the event, so a slow or blocking callback never holds up an
    LLM call. ``loop`` is the event loop running where the call was made: ``async def`` callbacks
    run on it (or on a background loop when there was none). ``context`` is a copy of the caller's
    ``contextvars``, which callbacks run in (an OpenTelemetry span current at the call stays current).
    """
    registrations = _registrations
    if not registrations:
        return
    event_type = audit_event_type(event)
    wanted = tuple(r for r in registrations if r.event_types is None or event_type in r.event_types)
    if wanted:
        _runner.put((event.timestamp, event_type, _snapshot(event), wanted, loop, context))


def _snapshot(event: Event) -> Any:
    """The event frozen as JSON bytes now (later changes to the object don't reach callbacks)."""
    data = event.to_dict()
    try:
        return orjson.dumps(data)
    except TypeError:
        return copy.deepcopy(data)


def _thaw(snapshot: Any) -> dict[str, Any]:
    """A private dict for one callback: editing it changes nothing written or seen by other callbacks."""
    if isinstance(snapshot, bytes):
        return orjson.loads(snapshot)  # type: ignore[no-any-return]
    return copy.deepcopy(snapshot)


#: Events allowed to wait for callbacks; past this, newer events skip the callbacks (reported, counted).
MAX_CALLBACK_BACKLOG = 10_000
#: A sync callback running longer than this is reported once on ``hilt.internal`` (it delays later callbacks).
SLOW_CALLBACK_SECONDS = 1.0


class _CallbackRunner:
    """One daemon thread that runs callbacks in event order, with a bounded backlog and a bounded wait."""

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._unfinished = 0
        self._thread: threading.Thread | None = None

    def put(self, item: Any) -> None:
        with self._cond:
            if self._unfinished >= MAX_CALLBACK_BACKLOG:
                report_problem(
                    "audit callbacks backlog",
                    "%d events wait for audit callbacks (a callback blocks?); newer events skip the callbacks "
                    "(they are still written to the log) and are counted",
                    self._unfinished,
                )
                return
            self._items.append(item)
            self._unfinished += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="hilt-callbacks", daemon=True)
                self._thread.start()
            self._cond.notify()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every queued event to reach its callbacks; True when none is left."""
        if threading.current_thread() is self._thread:
            return True  # a callback waiting for callbacks would wait for itself
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._unfinished:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._items:
                    self._cond.wait()
                item = self._items.popleft()
            try:
                _run_callbacks(*item)
            finally:
                with self._cond:
                    self._unfinished -= 1
                    if not self._unfinished:
                        self._cond.notify_all()

    def reset_after_fork(self) -> None:
        self._items.clear()
        self._cond = threading.Condition(threading.Lock())
        self._unfinished = 0
        self._thread = None


_runner = _CallbackRunner()


def _run_callbacks(
    timestamp: str, event_type: str, snapshot: Any, wanted: tuple[_Registration, ...], loop: Any,
    context: contextvars.Context | None,
) -> None:
    for registration in wanted:
        place = f"audit callback {registration.name}"
        started = time.monotonic()
        try:
            audit_event = AuditEvent(timestamp, event_type, _thaw(snapshot))
            if context is None:
                _call(registration.fn, audit_event, place, loop)
            else:
                context.run(_call, registration.fn, audit_event, place, loop)
        except Exception as exc:
            report_failure(place, exc)
        took = time.monotonic() - started
        if took > SLOW_CALLBACK_SECONDS:
            report_problem(
                f"slow {place}",
                "audit callback %s took %.1f s; the LLM call did not wait for it, later callbacks did "
                "(further slow runs are counted)",
                registration.name, took,
            )


def _call(fn: Callback, audit_event: AuditEvent, place: str, loop: Any) -> None:
    result = fn(audit_event)
    if inspect.isawaitable(result):
        _schedule(result, place, loop)  # scheduled from inside the caller's context, so its task inherits it


# --- async callbacks -------------------------------------------------------------------------

_pending: dict[Any, Any] = {}  # future -> the loop it runs on
_pending_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    """A daemon thread's event loop for async callbacks fired where no loop is running."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="hilt-callbacks-loop", daemon=True)
            thread.start()
            _loop = loop
        return _loop


def _schedule(awaitable: Any, place: str, loop: Any) -> None:
    """Run an async callback's coroutine on the caller's loop when it still runs, else on the background loop."""

    def done(future: Any) -> None:
        with _pending_lock:
            _pending.pop(future, None)
        if not future.cancelled() and future.exception() is not None:
            report_failure(place, future.exception())

    target = loop if loop is not None and loop.is_running() and not loop.is_closed() else _background_loop()
    future = asyncio.run_coroutine_threadsafe(_as_coroutine(awaitable), target)
    with _pending_lock:
        _pending[future] = target
    future.add_done_callback(done)


async def _as_coroutine(awaitable: Any) -> Any:
    return await awaitable


def wait_for_callbacks(timeout: float = 5.0) -> bool:
    """Wait (bounded) until queued events reached their callbacks and async callbacks finished; True if all did.

    Async callbacks on the loop running this very thread are not waited for (they can only run
    once this thread returns to its loop).
    """
    deadline = time.monotonic() + timeout
    if not _runner.wait(timeout):
        return False
    here = asyncio._get_running_loop()
    with _pending_lock:
        futures = [future for future, loop in _pending.items() if loop is not here]
    if not futures:
        return True
    _done, not_done = concurrent.futures.wait(futures, timeout=max(0.0, deadline - time.monotonic()))
    return not not_done


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_runner.reset_after_fork)

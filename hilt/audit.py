"""Audit events for people and tools outside the log file: the ``AuditEvent`` shape and user callbacks.

A callback receives every event (or the ``event_types`` it asked for) as an :class:`AuditEvent`.
Sync callbacks run on the caller's thread; ``async def`` ones run on the caller's running loop,
or on a background loop when there is none. A failing callback never affects the LLM call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import inspect
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from ._internal import report_failure
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


def _private_copy(event: Event) -> dict[str, Any]:
    """A deep, JSON-pure copy of the event dict, so a callback that edits it cannot change what is written."""
    data = event.to_dict()
    try:
        return orjson.loads(orjson.dumps(data))  # type: ignore[no-any-return]
    except (TypeError, orjson.JSONDecodeError):
        return copy.deepcopy(data)


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


def dispatch_callbacks(event: Event) -> None:
    """Hand ``event`` to every matching callback; a callback's failure is reported, never raised."""
    registrations = _registrations
    if not registrations:
        return
    event_type = audit_event_type(event)
    for registration in registrations:
        if registration.event_types is not None and event_type not in registration.event_types:
            continue
        place = f"audit callback {registration.name}"
        try:
            result = registration.fn(AuditEvent(event.timestamp, event_type, _private_copy(event)))
            if inspect.isawaitable(result):
                _schedule(result, place)
        except Exception as exc:
            report_failure(place, exc)


# --- async callbacks -------------------------------------------------------------------------

_pending: set[Any] = set()
_pending_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    """A daemon thread's event loop for async callbacks fired where no loop is running."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="hilt-callbacks", daemon=True)
            thread.start()
            _loop = loop
        return _loop


def _schedule(awaitable: Any, place: str) -> None:
    def done(future: Any) -> None:
        with _pending_lock:
            _pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            report_failure(place, future.exception())

    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not None:
        future: Any = running.create_task(_as_coroutine(awaitable))
    else:
        future = asyncio.run_coroutine_threadsafe(_as_coroutine(awaitable), _background_loop())
    with _pending_lock:
        _pending.add(future)
    future.add_done_callback(done)


async def _as_coroutine(awaitable: Any) -> Any:
    return await awaitable


def wait_for_callbacks(timeout: float = 5.0) -> bool:
    """Wait (bounded) for async callbacks running on the background loop; True when all finished."""
    with _pending_lock:
        background = [f for f in _pending if isinstance(f, concurrent.futures.Future)]
    if not background:
        return True
    _done, not_done = concurrent.futures.wait(background, timeout=timeout)
    return not not_done

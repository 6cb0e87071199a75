"""Per-call context on ``contextvars``: conversation tags, cost scopes and the active session.

Each thread and each asyncio task sees its own values, so concurrent requests never tag each
other's events.
"""

from __future__ import annotations

import hashlib
import json
import threading
from asyncio import _get_running_loop
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import Context, ContextVar, copy_context
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from .session import Session

__all__ = [
    "CallScope",
    "ConversationTags",
    "CostTracker",
    "InstrumentationContext",
    "capture_scope",
    "conversation",
    "conversation_id_for",
    "current_conversation",
    "get_context",
    "track_costs",
]


@dataclass(frozen=True)
class ConversationTags:
    """The values set by :func:`conversation`; ``None`` means not set."""

    id: str | None = None
    user_id: str | None = None
    tenant: str | None = None
    metadata: Mapping[str, Any] | None = None


_conversation: ContextVar[ConversationTags | None] = ContextVar("hilt_conversation", default=None)


def current_conversation() -> ConversationTags | None:
    """The tags of the innermost :func:`conversation` block, or ``None`` outside one."""
    return _conversation.get()


@contextmanager
def conversation(
    id: str | None = None,
    user_id: str | None = None,
    tenant: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Iterator[ConversationTags]:
    """Group the calls inside under one conversation id and tag their events with user, tenant and metadata.

    A nested block inherits what it does not set. Without ``id`` the conversation id follows the
    default rule (a hash of the opening messages), still salted by ``user_id``/``tenant``.
    """
    outer = _conversation.get() or ConversationTags()
    merged_metadata = dict(outer.metadata or {})
    merged_metadata.update(metadata or {})
    tags = ConversationTags(
        id=id if id is not None else outer.id,
        user_id=user_id if user_id is not None else outer.user_id,
        tenant=tenant if tenant is not None else outer.tenant,
        metadata=merged_metadata or None,
    )
    token = _conversation.set(tags)
    try:
        yield tags
    finally:
        _conversation.reset(token)


def conversation_id_for(provider: str, messages: Sequence[Any], tags: ConversationTags | None = None) -> str:
    """The documented conversation id: ``conv_`` + 16 hex of SHA-256 over provider, user/tenant and opening messages.

    The opening is every message up to and including the first user message; later turns resend
    it, so all turns of one conversation share the id across processes and restarts.
    """
    if tags is not None and tags.id is not None:
        return tags.id
    opening: list[Any] = []
    for message in messages:
        opening.append(message)
        if isinstance(message, Mapping) and message.get("role") == "user":
            break
    salt = {"provider": provider}
    if tags is not None:
        if tags.user_id is not None:
            salt["user_id"] = tags.user_id
        if tags.tenant is not None:
            salt["tenant"] = tags.tenant
    try:
        payload = orjson.dumps([salt, opening], option=orjson.OPT_SORT_KEYS, default=str)
    except TypeError:  # lone surrogates in the text: the stdlib's ASCII escapes are stable too
        payload = json.dumps([salt, opening], sort_keys=True, default=str, separators=(",", ":")).encode("ascii")
    return "conv_" + hashlib.sha256(payload).hexdigest()[:16]


class CostTracker:
    """Running totals for the calls made inside one :func:`track_costs` block; safe to update from many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.errors = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.total_tokens = 0
        self.cost_usd = 0.0

    def add_call(self) -> None:
        with self._lock:
            self.calls += 1

    def add_error(self) -> None:
        with self._lock:
            self.errors += 1

    def add_usage(self, tokens: Mapping[str, int | None], cost_usd: float | None) -> None:
        prompt = tokens.get("prompt") or 0
        completion = tokens.get("completion") or 0
        total = tokens.get("total")
        with self._lock:
            self.prompt_tokens += prompt
            self.completion_tokens += completion
            self.total_tokens += total if total is not None else prompt + completion
            if cost_usd is not None:
                self.cost_usd += cost_usd

    def __repr__(self) -> str:
        return (
            f"CostTracker(calls={self.calls}, errors={self.errors}, total_tokens={self.total_tokens}, "
            f"cost_usd={self.cost_usd:.6f})"
        )


_cost_scopes: ContextVar[tuple[CostTracker, ...]] = ContextVar("hilt_cost_scopes", default=())


@contextmanager
def track_costs() -> Iterator[CostTracker]:
    """Sum tokens, cost, calls and errors of the LLM calls started inside the block (nested blocks each count)."""
    tracker = CostTracker()
    token = _cost_scopes.set(_cost_scopes.get() + (tracker,))
    try:
        yield tracker
    finally:
        _cost_scopes.reset(token)


_session_override: ContextVar[Session | None] = ContextVar("hilt_session", default=None)


class CallScope:
    """The context of one call, captured when it starts so its later events (written by the recorder
    thread, a stream ending in another thread, a garbage-collected stream) are still tagged and
    counted where it began: conversation tags, cost scopes, session override, the calling thread and
    its running event loop (where async callbacks run), and a copy of its ``contextvars`` (callbacks
    run inside it, so an OpenTelemetry span current at the call is current in the callback)."""

    __slots__ = ("tags", "trackers", "session", "thread", "loop", "context")

    def __init__(
        self,
        tags: ConversationTags | None = None,
        trackers: tuple[CostTracker, ...] = (),
        session: Session | None = None,
        thread: threading.Thread | None = None,
        loop: Any = None,
        context: Context | None = None,
    ) -> None:
        self.tags = tags
        self.trackers = trackers
        self.session = session
        self.thread = thread
        self.loop = loop
        self.context = context


def capture_scope() -> CallScope:
    """Snapshot of the current conversation, cost scopes, session override, thread, running loop and context."""
    return CallScope(
        _conversation.get(), _cost_scopes.get(), _session_override.get(), threading.current_thread(),
        _get_running_loop(), copy_context(),
    )


class _SessionSwitch:
    """Returned by :meth:`InstrumentationContext.use_session`: already active, undone on ``with`` exit."""

    def __init__(self, session: Session | None) -> None:
        self._token = _session_override.set(session)
        self.session = session

    def __enter__(self) -> Session | None:
        return self.session

    def __exit__(self, *exc_info: object) -> None:
        _session_override.reset(self._token)


class InstrumentationContext:
    """What ``hilt.instrumentation.get_context()`` returns: the active session and whether hilt is instrumented."""

    @property
    def session(self) -> Session | None:
        """The session events go to here: the one set by :meth:`use_session`, else the instrumented one."""
        override = _session_override.get()
        if override is not None:
            return override
        from .instrumentation import active_session

        return active_session()

    @property
    def is_instrumented(self) -> bool:
        from .instrumentation import is_instrumented

        return is_instrumented()

    def use_session(self, session: Session | None) -> _SessionSwitch:
        """Send the events of this thread/task to ``session``; as a ``with`` block it is undone at the end."""
        return _SessionSwitch(session)


_context = InstrumentationContext()


def get_context() -> InstrumentationContext:
    """The instrumentation context (one per process; its values are per thread and task)."""
    return _context

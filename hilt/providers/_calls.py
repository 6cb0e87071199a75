"""Provider-agnostic life of one LLM call: the prompt event, then exactly one completion or error event.

A provider describes the request (:class:`RequestFacts`) and the outcome (:class:`ResponseFacts`);
this module turns them into events with the pinned actors, links, latency and cost, and emits them
with the context captured when the call started.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .._emit import emit
from .._internal import report_failure
from ..context import CallScope, conversation_id_for
from ..events import Actor, Content, Event, Metrics, new_event_id, utc_timestamp
from ..pricing import cost_usd
from ._content import prepare_structure, prepare_text

__all__ = ["CONNECTION_FAILED_STATUS", "CallRecord", "RequestFacts", "ResponseFacts", "empty_tokens", "start_call"]

#: ``status_code`` of a call that got no HTTP response (connection refused, DNS, timeout).
CONNECTION_FAILED_STATUS = 599


def empty_tokens() -> dict[str, int | None]:
    """Token counts as written when the API reported none: every key present, every value ``None``."""
    return {"prompt": None, "completion": None, "total": None, "cached": None, "reasoning": None}


@dataclass
class RequestFacts:
    """What a provider read from the request before sending it."""

    provider: str
    operation: str
    model: str | None
    stream: bool
    text: Any = None
    messages: list[Any] | None = None
    tools: list[Any] | None = None
    request: dict[str, Any] = field(default_factory=dict)
    conversation_key: list[Any] | None = None  # the messages the conversation id is hashed over
    session_id: str | None = None  # a known conversation id (e.g. from previous_response_id)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ResponseFacts:
    """What a provider read from the response (or the stream so far)."""

    text: Any = None
    tool_calls: list[Any] | None = None
    refusal: Any = None
    finish_reason: str | None = None
    response_model: str | None = None
    response_id: str | None = None
    tokens: dict[str, int | None] = field(default_factory=empty_tokens)
    usage_reported: bool = False
    ttft_ms: float | None = None
    stream_completed: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class CallRecord:
    """One call: knows its ids and start time, and emits its closing event exactly once.

    Built on the recorder thread from what the caller's thread captured: the context (``scope``),
    the start (``started`` from ``time.perf_counter()``, ``started_ns`` from ``time.time_ns()``).
    Its events are written by recorder tasks, which run one at a time, so a flag is enough to
    keep the closing event single.
    """

    __slots__ = (
        "facts", "scope", "call_id", "prompt_event_id", "session_id", "started", "started_ns", "status_code",
        "request_id", "attempts", "_finished",
    )

    def __init__(self, facts: RequestFacts, scope: CallScope, started: float, started_ns: int) -> None:
        self.facts = facts
        self.scope = scope
        self.call_id = new_event_id()
        self.prompt_event_id = new_event_id()
        tags = scope.tags
        if tags is not None and tags.id is not None:
            self.session_id: str | None = tags.id
        elif facts.session_id is not None:
            self.session_id = facts.session_id
        else:
            self.session_id = conversation_id_for(facts.provider, facts.conversation_key or [], tags)
        self.started = started
        self.started_ns = started_ns
        self.status_code: int | None = None
        self.request_id: str | None = None
        self.attempts: int | None = None
        self._finished = False

    def _claim_finish(self) -> bool:
        if self._finished:
            return False
        self._finished = True
        return True

    def _base_extensions(self) -> dict[str, Any]:
        facts = self.facts
        extensions: dict[str, Any] = {
            "call_id": self.call_id,
            "provider": facts.provider,
            "operation": facts.operation,
            "model": facts.model,
            "stream": facts.stream,
        }
        extensions.update(facts.extra)
        return extensions

    def emit_prompt(self) -> None:
        facts = self.facts
        scope = self.scope
        tags = scope.tags
        user = tags.user_id if tags is not None and tags.user_id is not None else "user"
        extensions = self._base_extensions()
        if facts.request:
            extensions["request"] = facts.request
        content = Content(
            text=prepare_text(facts.text),
            messages=prepare_structure(facts.messages),
            tools=prepare_structure(facts.tools),
        )
        event = Event(
            session_id=self.session_id,
            actor=Actor(type="human", id=user),
            action="prompt",
            content=content,
            extensions=extensions,
            event_id=self.prompt_event_id,
            timestamp=utc_timestamp(self.started_ns),
        )
        emit(event, scope=scope)

    def _response_extensions(self) -> dict[str, Any]:
        extensions = self._base_extensions()
        extensions["reply_to"] = self.prompt_event_id
        extensions["status_code"] = self.status_code
        extensions["request_id"] = self.request_id
        if self.attempts is not None:
            extensions["attempts"] = self.attempts
        return extensions

    def emit_completion(self, response: ResponseFacts, ended: float, ended_ns: int) -> None:
        """Emit the completion event (once; later calls do nothing) for a call that ended at ``ended``/``ended_ns``."""
        if not self._claim_finish():
            return
        latency_ms = round((ended - self.started) * 1000.0, 3)
        facts = self.facts
        model = response.response_model or facts.model
        tokens = response.tokens
        cost = cost_usd(facts.provider, model, tokens) if response.usage_reported else None
        metrics = Metrics(tokens=tokens, cost_usd=cost, latency_ms=latency_ms, ttft_ms=response.ttft_ms)
        extensions = self._response_extensions()
        extensions["response_model"] = response.response_model
        extensions["response_id"] = response.response_id
        extensions["finish_reason"] = response.finish_reason
        if facts.stream:
            extensions["stream_completed"] = bool(response.stream_completed)
            extensions["usage_source"] = "api" if response.usage_reported else "missing"
        extensions.update(response.extra)
        event = Event(
            session_id=self.session_id,
            actor=Actor(type="agent", id=model),
            action="completion",
            content=Content(
                text=prepare_text(response.text),
                tool_calls=prepare_structure(response.tool_calls) or None,
                refusal=prepare_text(response.refusal),
            ),
            metrics=metrics,
            extensions=extensions,
            timestamp=utc_timestamp(ended_ns),
        )
        emit(event, scope=self.scope)

    def emit_error(
        self, error: dict[str, Any], partial: ResponseFacts | None, ended: float, ended_ns: int
    ) -> None:
        """Emit the error event that ends a failed call (once); ``partial`` keeps a broken stream's text."""
        if not self._claim_finish():
            return
        latency_ms = round((ended - self.started) * 1000.0, 3)
        extensions = self._response_extensions()
        if extensions.get("status_code") is None:
            extensions["status_code"] = CONNECTION_FAILED_STATUS
        extensions["error"] = error
        metrics = Metrics(tokens=empty_tokens(), latency_ms=latency_ms)
        content = Content(text=None)
        if partial is not None:
            extensions["response_model"] = partial.response_model
            extensions["response_id"] = partial.response_id
            extensions["finish_reason"] = partial.finish_reason
            if self.facts.stream:
                extensions["stream_completed"] = False
                extensions["usage_source"] = "api" if partial.usage_reported else "missing"
            metrics.tokens = partial.tokens
            metrics.ttft_ms = partial.ttft_ms
            if partial.usage_reported:
                metrics.cost_usd = cost_usd(self.facts.provider, partial.response_model or self.facts.model, partial.tokens)
            content = Content(
                text=prepare_text(partial.text),
                tool_calls=prepare_structure(partial.tool_calls) or None,
                refusal=prepare_text(partial.refusal),
            )
        event = Event(
            session_id=self.session_id,
            actor=Actor(type="system", id=self.facts.provider),
            action="system",
            content=content,
            metrics=metrics,
            extensions=extensions,
            timestamp=utc_timestamp(ended_ns),
        )
        emit(event, scope=self.scope)


def start_call(facts: RequestFacts, scope: CallScope, started: float, started_ns: int) -> CallRecord | None:
    """Begin recording a call that started at ``started``/``started_ns`` in ``scope``: emit the prompt event.

    ``None`` if that failed (reported on ``hilt.internal``)."""
    try:
        record = CallRecord(facts, scope, started, started_ns)
        record.emit_prompt()
        return record
    except Exception as exc:
        report_failure("recording a prompt", exc)
        return None

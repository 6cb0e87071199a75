"""The event model: one audit record (`Event`) and its parts, with a lossless dict round trip."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

import uuid_utils

from .errors import HILTError

__all__ = [
    "ACTIONS",
    "ACTOR_TYPES",
    "HILT_VERSION",
    "Actor",
    "Content",
    "Event",
    "Metrics",
    "is_error_event",
    "new_event_id",
    "utc_timestamp",
]

HILT_VERSION = "1.0"

#: Actions hilt itself writes or documents; any other lower-case name (``data_export``) is allowed too.
ACTIONS = frozenset(
    {"prompt", "completion", "system", "tool_call", "tool_result", "retrieval", "feedback", "audit"}
)
ACTOR_TYPES = frozenset({"human", "agent", "tool", "system"})
TOKEN_KEYS = ("prompt", "completion", "total", "cached", "reasoning")

_ACTION_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")


def new_event_id() -> str:
    """A unique, time-ordered id (UUIDv7), so sorting ids sorts events by creation time."""
    return str(uuid_utils.uuid7())


_second_cache: tuple[int, str] = (-1, "")


def utc_timestamp(ns: int | None = None) -> str:
    """The current time (or ``ns``, from ``time.time_ns()``) as UTC ISO 8601 with microseconds and ``Z``
    (``2026-01-31T09:15:11.020871Z``)."""
    global _second_cache
    now = (time.time_ns() if ns is None else ns) // 1000
    second, micros = divmod(now, 1_000_000)
    cached_second, prefix = _second_cache
    if cached_second != second:
        prefix = datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        _second_cache = (second, prefix)
    return f"{prefix}.{micros:06d}Z"


def _split_known(data: Mapping[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key not in known}


@dataclass
class Actor:
    """Who acted: ``type`` is human, agent, tool or system; ``id`` names them (a user, a model, a provider)."""

    type: str = "system"
    id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "id": self.id, **self.extra}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Actor:
        return cls(type=data.get("type", "system"), id=data.get("id"), extra=_split_known(data, ("type", "id")))


_CONTENT_PARTS = ("text", "messages", "tools", "tool_calls", "refusal")


@dataclass
class Content:
    """What was said: ``text`` plus optional structured parts (messages, tools, tool calls, refusal)."""

    text: str | None = None
    messages: list[Any] | None = None
    tools: list[Any] | None = None
    tool_calls: list[Any] | None = None
    refusal: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"text": self.text}
        if self.messages is not None:
            data["messages"] = self.messages
        if self.tools is not None:
            data["tools"] = self.tools
        if self.tool_calls is not None:
            data["tool_calls"] = self.tool_calls
        if self.refusal is not None:
            data["refusal"] = self.refusal
        data.update(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | str | None) -> Content:
        if data is None:
            return cls()
        if isinstance(data, str):
            return cls(text=data)
        return cls(
            text=data.get("text"),
            messages=data.get("messages"),
            tools=data.get("tools"),
            tool_calls=data.get("tool_calls"),
            refusal=data.get("refusal"),
            extra=_split_known(data, _CONTENT_PARTS),
        )


_METRIC_KEYS = ("tokens", "cost_usd", "latency_ms", "ttft_ms")


@dataclass
class Metrics:
    """Measurements of a call: ``tokens`` (prompt, completion, total, cached, reasoning), ``cost_usd``, latencies in ms."""

    tokens: dict[str, int | None] = field(default_factory=dict)
    cost_usd: float | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def is_empty(self) -> bool:
        """True when nothing was measured (prompt and manual events), so the key is left out of the line."""
        return not self.tokens and self.cost_usd is None and self.latency_ms is None and self.ttft_ms is None and not self.extra

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"tokens": self.tokens, "cost_usd": self.cost_usd, "latency_ms": self.latency_ms}
        if self.ttft_ms is not None:
            data["ttft_ms"] = self.ttft_ms
        data.update(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Metrics:
        if not data:
            return cls()
        return cls(
            tokens=dict(data.get("tokens") or {}),
            cost_usd=data.get("cost_usd"),
            latency_ms=data.get("latency_ms"),
            ttft_ms=data.get("ttft_ms"),
            extra=_split_known(data, _METRIC_KEYS),
        )


_EVENT_KEYS = (
    "hilt_version", "event_id", "timestamp", "session_id", "actor", "action", "content", "metrics", "extensions",
)


@dataclass
class Event:
    """One audit record. ``actor``, ``content`` and ``metrics`` accept plain dicts, as the seeds' examples pass them.

    Raises:
        HILTError: ``action`` is not a lower-case name such as ``prompt`` or ``data_export``.
    """

    session_id: str | None = None
    actor: Actor | Mapping[str, Any] = field(default_factory=Actor)
    action: str = "system"
    content: Content | Mapping[str, Any] | str | None = field(default_factory=Content)
    metrics: Metrics | Mapping[str, Any] | None = field(default_factory=Metrics)
    extensions: dict[str, Any] = field(default_factory=dict)
    event_id: str = field(default_factory=new_event_id)
    timestamp: str = field(default_factory=utc_timestamp)
    hilt_version: str = HILT_VERSION
    unknown_fields: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS and (not isinstance(self.action, str) or not _ACTION_PATTERN.fullmatch(self.action)):
            raise HILTError(
                f"action: {self.action!r} is not a valid action; use one of {sorted(ACTIONS)} "
                "or a lower-case name of letters, digits and '_' (e.g. 'data_export')"
            )
        if not isinstance(self.actor, Actor):
            if not isinstance(self.actor, Mapping):
                raise HILTError(f"actor: expected a dict like {{'type': 'human', 'id': 'user'}}, got {self.actor!r}")
            self.actor = Actor.from_dict(self.actor)
        if not isinstance(self.content, Content):
            self.content = Content.from_dict(self.content)
        if not isinstance(self.metrics, Metrics):
            self.metrics = Metrics.from_dict(self.metrics)
        if self.extensions is None:
            self.extensions = {}


    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict written as one line; ``hilt_version`` always present, empty metrics left out."""
        data: dict[str, Any] = {
            "hilt_version": self.hilt_version,
            "event_id": self.event_id,
            "timestamp": self.timestamp,
            "session_id": self.session_id,
            "actor": self.actor.to_dict(),  # type: ignore[union-attr]
            "action": self.action,
            "content": self.content.to_dict(),  # type: ignore[union-attr]
        }
        metrics: Metrics = self.metrics  # type: ignore[assignment]
        if not metrics.is_empty():
            data["metrics"] = metrics.to_dict()
        data["extensions"] = self.extensions
        if self.unknown_fields:
            data.update(self.unknown_fields)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """Rebuild an event from :meth:`to_dict` output (or a parsed JSONL line), keeping ids and unknown keys."""
        if not isinstance(data, Mapping):
            raise HILTError(f"an event must be a JSON object, got {type(data).__name__}")
        return cls(
            session_id=data.get("session_id"),
            actor=Actor.from_dict(data.get("actor") or {}),
            action=data.get("action", "system"),
            content=Content.from_dict(data.get("content")),
            metrics=Metrics.from_dict(data.get("metrics")),
            extensions=dict(data.get("extensions") or {}),
            event_id=data.get("event_id"),  # type: ignore[arg-type]  # kept as read: never invented
            timestamp=data.get("timestamp"),  # type: ignore[arg-type]
            hilt_version=data.get("hilt_version", HILT_VERSION),
            unknown_fields=_split_known(data, _EVENT_KEYS),
        )


def is_error_event(event: Event) -> bool:
    """True for the ``system`` event that ends a failed call (it carries ``extensions.error``)."""
    return event.action == "system" and "error" in event.extensions

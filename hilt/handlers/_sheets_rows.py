"""Turning an event into a Google Sheets row: one cell per column, numbers as numbers, formulas escaped."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..events import Event

__all__ = ["MAX_CELL_CHARS", "cell_value", "column_letters", "event_cells", "render_row"]

#: Google Sheets refuses a cell longer than this.
MAX_CELL_CHARS = 50_000
_FORMULA_STARTS = ("=", "+", "-", "@")


def event_cells(event: Event) -> dict[str, Any]:
    """Every known column's value for ``event`` (``None`` where the event has none)."""
    ext = event.extensions or {}
    metrics = event.metrics
    tokens = getattr(metrics, "tokens", None) or {}
    actor = event.actor
    content = event.content
    error = ext.get("error")
    return {
        "timestamp": event.timestamp,
        "conversation_id": event.session_id,
        "event_id": event.event_id,
        "reply_to": ext.get("reply_to"),
        "status_code": ext.get("status_code"),
        "session": event.session_id,
        "speaker": getattr(actor, "id", None),
        "action": event.action,
        "message": getattr(content, "text", None),
        "tokens_in": tokens.get("prompt"),
        "tokens_out": tokens.get("completion"),
        "cost_usd": getattr(metrics, "cost_usd", None),
        "latency_ms": getattr(metrics, "latency_ms", None),
        "model": ext.get("response_model") or ext.get("model"),
        "relevance_score": ext.get("relevance_score"),
        "provider": ext.get("provider"),
        "cached_tokens": tokens.get("cached"),
        "reasoning_tokens": tokens.get("reasoning"),
        "total_tokens": tokens.get("total"),
        "ttft_ms": getattr(metrics, "ttft_ms", None),
        "error_type": error.get("type") if isinstance(error, dict) else None,
        "user_id": ext.get("user_id"),
        "tenant": ext.get("tenant"),
        "operation": ext.get("operation"),
        "finish_reason": ext.get("finish_reason"),
        "call_id": ext.get("call_id"),
        "request_id": ext.get("request_id"),
    }


def cell_value(value: Any, escape_formulas: bool) -> Any:
    """A JSON value the Sheets API stores as intended: numbers stay numbers, text is capped and escaped."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if not isinstance(value, str):
        try:
            value = json.dumps(value, ensure_ascii=False, default=str)
        except Exception:
            value = str(value)
    if escape_formulas and value.startswith(_FORMULA_STARTS):
        value = "'" + value
    if len(value) > MAX_CELL_CHARS:
        value = value[: MAX_CELL_CHARS - 1] + "…"
    return value


def render_row(cells: dict[str, Any], header: Sequence[str]) -> list[Any]:
    """The row in the sheet's header order (columns hilt does not fill are left empty)."""
    return [cells.get(name, "") for name in header]


def column_letters(number: int) -> str:
    """The A1 letters of a 1-based column number (1 → ``A``, 27 → ``AA``)."""
    letters = ""
    while number > 0:
        number, rest = divmod(number - 1, 26)
        letters = chr(65 + rest) + letters
    return letters

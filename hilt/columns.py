"""Names of the tabular columns (Google Sheets rows, CSV exports) and their validation."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import HILTError

__all__ = ["COLUMNS", "DEFAULT_COLUMNS", "validate_columns"]

#: The original library's 15 columns, in their order.
DEFAULT_COLUMNS = (
    "timestamp", "conversation_id", "event_id", "reply_to", "status_code", "session", "speaker", "action",
    "message", "tokens_in", "tokens_out", "cost_usd", "latency_ms", "model", "relevance_score",
)
#: Every column hilt can fill: the original 15 plus what the richer event holds.
COLUMNS = DEFAULT_COLUMNS + (
    "provider", "cached_tokens", "reasoning_tokens", "total_tokens", "ttft_ms", "error_type", "user_id", "tenant",
    "operation", "finish_reason", "call_id", "request_id",
)


def validate_columns(columns: Sequence[str] | None, argument: str = "columns") -> tuple[str, ...]:
    """The chosen columns in order, or the defaults; an unknown or repeated name raises listing the valid ones."""
    if columns is None:
        return DEFAULT_COLUMNS
    if isinstance(columns, str) or not isinstance(columns, Sequence):
        raise HILTError(f"{argument}: expected a list of column names, got {columns!r}")
    unknown = [name for name in columns if name not in COLUMNS]
    if unknown:
        raise HILTError(f"{argument}: unknown column(s) {unknown}; valid columns are {list(COLUMNS)}")
    repeated = sorted({name for name in columns if list(columns).count(name) > 1})
    if repeated:
        raise HILTError(f"{argument}: column(s) {repeated} given more than once")
    if not columns:
        raise HILTError(f"{argument}: the list is empty; leave it out for the default columns")
    return tuple(columns)

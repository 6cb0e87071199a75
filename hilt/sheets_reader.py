"""Reading events back from a Google Sheets worksheet written by ``HiltSheetsHandler``.

``read_sheet_events(worksheet)`` turns each row into an :class:`~hilt.events.Event`, by the header's
column names (see ``hilt.columns.COLUMNS``): any subset of the columns, in any order, works; columns
hilt does not know are ignored; an empty cell is a missing value (left out), never ``0`` or ``""``.
Numbers come back as numbers (the values are read unformatted), and the ``'`` the handler puts in
front of formula-looking text (``=``, ``+``, ``-``, ``@``) is removed, so the text is the one recorded.

``open_worksheet(...)`` opens the worksheet with the same credentials and sheet-id resolution as
the handler (arguments, then ``GOOGLE_SHEET_ID`` / ``GOOGLE_CREDENTIALS_PATH``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

from ._internal import report_problem
from .errors import HILTError
from .events import Event
from .handlers._sheets_rows import _FORMULA_STARTS
from .handlers.sheets import _build_client, _client_email, _import_gspread, resolve_target

__all__ = ["open_worksheet", "read_sheet_events"]

#: column -> (part of the event, key); the inverse of ``handlers._sheets_rows.event_cells``.
_TOKENS = {"tokens_in": "prompt", "tokens_out": "completion", "total_tokens": "total",
           "cached_tokens": "cached", "reasoning_tokens": "reasoning"}
_METRICS = ("cost_usd", "latency_ms", "ttft_ms")
_EXTENSIONS = ("reply_to", "status_code", "relevance_score", "provider", "user_id", "tenant", "operation",
               "finish_reason", "call_id", "request_id")
_NUMERIC = frozenset(_TOKENS) | frozenset(_METRICS) | {"status_code", "relevance_score"}
#: The actor type hilt gives each action it writes (DESIGN: prompt human, completion agent, error system).
_ACTOR_TYPES = {"prompt": "human", "completion": "agent", "system": "system"}


def open_worksheet(
    sheet_id: str | None = None,
    credentials_path: str | os.PathLike[str] | None = None,
    credentials_json: str | Mapping[str, Any] | None = None,
    worksheet_name: str = "Logs",
    client: Any = None,
) -> Any:
    """The ``gspread.Worksheet`` to read; nothing is created or written.

    Raises:
        HILTError: gspread not installed, no sheet id, unusable credentials, spreadsheet not found (404)
            or not shared with the service account (403), or no such worksheet.
    """
    gspread = _import_gspread()
    sheet_id = resolve_target(sheet_id, worksheet_name)
    if client is None:
        client = _build_client(credentials_path, credentials_json)
    try:
        spreadsheet = client.open_by_key(sheet_id)
    except gspread.exceptions.SpreadsheetNotFound as exc:
        raise HILTError(
            f"sheet_id: spreadsheet {sheet_id!r} was not found (404); check the id in the sheet's URL"
        ) from exc
    except PermissionError as exc:
        who = _client_email(client) or "the service account's client_email"
        raise HILTError(
            f"sheet_id: spreadsheet {sheet_id!r} is not shared with {who} (403); open the sheet, "
            f"click Share and add {who} (Viewer is enough to read)"
        ) from exc
    try:
        return spreadsheet.worksheet(worksheet_name)
    except gspread.exceptions.WorksheetNotFound as exc:
        raise HILTError(
            f"worksheet_name: spreadsheet {sheet_id!r} has no tab named {worksheet_name!r}"
        ) from exc


def _unescape(value: str) -> str:
    """Undo the handler's formula escape: ``'=1+1`` -> ``=1+1`` (other text is left as it is)."""
    if len(value) > 1 and value[0] == "'" and value[1:].startswith(_FORMULA_STARTS):
        return value[1:]
    return value


def _number(value: Any) -> Any:
    """A numeric column's cell: numbers as they are; text holding a number (``"nan"``, ``"12"``) converted."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if number.is_integer() and value.strip().lstrip("+-").isdigit() else number
    return value


def _row_event(header: list[str], row: list[Any]) -> Event | None:
    """The event a row holds, or ``None`` for a row with no known, non-empty cell."""
    cells: dict[str, Any] = {}
    for name, value in zip(header, row):
        if not name or name in cells or value is None or value == "":
            continue
        if isinstance(value, str):
            value = _unescape(value)
        if name in _NUMERIC:
            value = _number(value)
        cells[name] = value
    if not cells:
        return None
    data: dict[str, Any] = {}
    actor: dict[str, Any] = {}
    content: dict[str, Any] = {}
    tokens: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    extensions: dict[str, Any] = {}
    for name, value in cells.items():
        if name in ("event_id", "timestamp", "action"):
            data[name] = value if isinstance(value, str) else str(value)
        elif name == "conversation_id" or (name == "session" and "conversation_id" not in cells):
            data["session_id"] = value if isinstance(value, str) else str(value)
        elif name == "speaker":
            actor["id"] = value if isinstance(value, str) else str(value)
        elif name == "message":
            content["text"] = value if isinstance(value, str) else str(value)
        elif name in _TOKENS:
            tokens[_TOKENS[name]] = value
        elif name in _METRICS:
            metrics[name] = value
        elif name == "model":
            extensions["model"] = value
        elif name == "error_type":
            extensions["error"] = {"type": value}
        elif name in _EXTENSIONS:
            extensions[name] = value
    if actor and data.get("action") in _ACTOR_TYPES:
        actor["type"] = _ACTOR_TYPES[data["action"]]
    if tokens:
        metrics["tokens"] = tokens
    data.update(actor=actor, content=content or None, metrics=metrics or None, extensions=extensions)
    if not any(key in data for key in ("event_id", "timestamp", "session_id", "action")) \
            and not actor and not content and not metrics and not extensions:
        return None  # only columns hilt does not know
    return Event.from_dict(data)


def read_sheet_events(worksheet: Any, strict: bool = False) -> Iterator[Event]:
    """Yield the events of ``worksheet``'s rows in sheet order (row 1 is the header).

    A row that can't be an event (an ``action`` cell that is not a lower-case name) is reported on
    ``hilt.internal`` as ``<tab>!row <n>`` and skipped, or raises with ``strict=True``.

    Raises:
        HILTError: with ``strict=True``, at the first such row.
    """
    values = worksheet.get_values(
        value_render_option="UNFORMATTED_VALUE", date_time_render_option="FORMATTED_STRING", pad_values=False
    )
    if not values:
        return
    header = [str(name).strip() if name is not None else "" for name in values[0]]
    title = getattr(worksheet, "title", "worksheet")
    for number, row in enumerate(values[1:], start=2):
        try:
            event = _row_event(header, row)
        except HILTError as exc:
            if strict:
                raise HILTError(f"{title}!row {number}: {exc}") from exc
            report_problem("sheets read", "hilt: %s!row %d skipped: %s", title, number, exc)
            continue
        if event is not None:
            yield event

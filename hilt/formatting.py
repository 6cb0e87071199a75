"""JSON formatters for event records, built on python-json-logger's orjson formatter."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import orjson
from pythonjsonlogger.core import LogData
from pythonjsonlogger.orjson import OrjsonFormatter

from .audit import audit_event_type
from .events import Event

__all__ = ["AUDIT_PREFIX", "HiltAuditFormatter", "HiltJSONFormatter", "dumps_line", "loads_line"]

AUDIT_PREFIX = "[HILT_AUDIT] "

# JSON allows these raw, but Python's str.splitlines() and some log shippers treat them as line breaks;
# escaping them keeps one event on exactly one line for every reader.
_LINE_BREAKS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}


def dumps_line(data: Any, default: Any = None) -> str:
    """Serialize to one line of JSON: orjson when it can, else stdlib json with ASCII escapes.

    The fallback covers what orjson refuses, such as lone surrogates in text (they become
    ``\\udXXX`` escapes that ``json.loads`` turns back into the same string: lossless).
    """
    try:
        text = orjson.dumps(data, default=default, option=orjson.OPT_NON_STR_KEYS).decode("utf-8")
    except TypeError:
        text = json.dumps(data, default=default if default is not None else repr, ensure_ascii=True)
        return text
    if "\u2028" in text or "\u2029" in text or "\x85" in text:
        for raw, escaped in _LINE_BREAKS.items():
            text = text.replace(raw, escaped)
    return text


def loads_line(raw: bytes | str) -> Any:
    """Parse one line as :func:`dumps_line` writes it: orjson, or stdlib json for the ``\\udXXX`` escapes of
    lone surrogates that orjson refuses. Raises orjson's ``JSONDecodeError`` (a ``ValueError``) otherwise."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as first:
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise first from None  # orjson's message says more about what is wrong


class HiltJSONFormatter(OrjsonFormatter):
    """Formats an event record as the event dict itself: one JSONL line with no logging noise keys.

    ``fields`` adds record attributes (``["levelname", "name"]``) under a ``"log"`` key when wanted.
    Records that carry no event fall back to python-json-logger's usual output.
    """

    def __init__(self, *args: Any, fields: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields = tuple(fields)
        # The plain class with no extras can go straight from the event to UTF-8 bytes (see format_line).
        self._direct = type(self) is HiltJSONFormatter and not self.fields and not self.prefix

    def format_line(self, record: logging.LogRecord) -> bytes:
        """The record as one UTF-8 line ending in ``\n``: what the JSONL handler writes."""
        event: Event | None = getattr(record, "hilt_event", None)
        if self._direct and event is not None:
            try:
                data = orjson.dumps(
                    event.to_dict(), default=self.json_default,
                    option=orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE,
                )
            except TypeError:
                pass  # lone surrogates and the like: the careful path below
            else:
                if b"\xe2\x80\xa8" in data or b"\xe2\x80\xa9" in data or b"\xc2\x85" in data:
                    for raw, escaped in _LINE_BREAKS.items():
                        data = data.replace(raw.encode("utf-8"), escaped.encode("ascii"))
                return data
        return (self.format(record) + "\n").encode("utf-8", "backslashreplace")

    def format(self, record: logging.LogRecord) -> str:
        event: Event | None = getattr(record, "hilt_event", None)
        if event is None:
            return super().format(record)
        log_data: LogData = self.event_data(event, record)
        if self.fields:
            log_data["log"] = {name: getattr(record, name, None) for name in self.fields}
        log_data = self.process_log_record(log_data)
        return self.serialize_log_record(log_data)

    def event_data(self, event: Event, record: logging.LogRecord) -> LogData:
        """The dict written for an event record; override to reshape lines."""
        return event.to_dict()

    def jsonify_log_record(self, log_data: LogData) -> str:
        return dumps_line(log_data, self.json_default)


class HiltAuditFormatter(HiltJSONFormatter):
    """Formats an event record as ``[HILT_AUDIT] {"timestamp", "event_type", "details"}`` on one line."""

    def __init__(self, *args: Any, prefix: str = AUDIT_PREFIX, **kwargs: Any) -> None:
        super().__init__(*args, prefix=prefix, **kwargs)

    def event_data(self, event: Event, record: logging.LogRecord) -> LogData:
        return {"timestamp": event.timestamp, "event_type": audit_event_type(event), "details": event.to_dict()}

"""``Session``: append events to a JSONL log and read them back (the seeds' API)."""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import IO, Any


from . import _recorder
from ._emit import emit
from ._internal import internal_logger
from .errors import HILTError
from .events import Event
from .formatting import loads_line
from .handlers.jsonl import HiltJSONLHandler

__all__ = ["Session"]

_MAX_REPORTED_LINES = 20


class Session:
    """A JSONL audit log: ``append(event)`` writes through the ``hilt`` pipeline, ``read()`` yields `Event`s.

    Args:
        path: the ``.jsonl`` file (``.gz`` files are read too). ``None``: a session with no file of its
            own, whose events go only to the handlers configured on the ``hilt`` logger.
        mode: ``"a"`` append (and read), ``"w"`` truncate then append, ``"r"`` read only.
        backend: ``None`` or ``"local"`` (the JSONL file above), or ``"sheets"``: read the events of a
            Google Sheets worksheet (written by ``HiltSheetsHandler``); such a session is read-only.
        sheet_id, credentials_path, credentials_json, worksheet_name, client: with ``backend="sheets"``,
            as for ``HiltSheetsHandler`` (env ``GOOGLE_SHEET_ID`` / ``GOOGLE_CREDENTIALS_PATH`` by default).
        **handler_options: passed to :class:`HiltJSONLHandler` (``fsync``, ``max_bytes``, ...).

    Raises:
        HILTError: an unknown mode or backend, ``mode="r"`` on a file that does not exist, or (sheets)
            no sheet id, unusable credentials, a spreadsheet not found / not shared, no such worksheet.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        mode: str = "a",
        backend: str | None = None,
        *,
        sheet_id: str | None = None,
        credentials_path: str | os.PathLike[str] | None = None,
        credentials_json: str | Mapping[str, Any] | None = None,
        worksheet_name: str = "Logs",
        client: Any = None,
        **handler_options: Any,
    ) -> None:
        self.backend = backend
        self.worksheet: Any = None
        if backend == "sheets":
            if path is not None or handler_options:
                extra = "path" if path is not None else sorted(handler_options)[0]
                raise HILTError(f"{extra}: not used with backend='sheets'; a sheets session reads the worksheet only")
            from .sheets_reader import open_worksheet

            self.path = None
            self.mode = "r"
            self.attached = False
            self.handler = None
            self.worksheet = open_worksheet(sheet_id, credentials_path, credentials_json, worksheet_name, client)
            return
        if backend not in (None, "local"):
            raise HILTError(f"backend: {backend!r} is not supported; use 'local' (a JSONL file) or 'sheets'")
        if sheet_id is not None or credentials_path is not None or credentials_json is not None or client is not None:
            raise HILTError("backend: sheet_id/credentials/client are for backend='sheets'; pass backend='sheets'")
        if mode not in ("a", "w", "r"):
            raise HILTError(f"mode: {mode!r} is not supported; use 'a' (append), 'w' (truncate) or 'r' (read)")
        self.path = os.fspath(path) if path is not None else None
        self.mode = mode
        self.attached = False  # True while instrument() has this session's handler on the 'hilt' logger
        self.handler: logging.Handler | None = None
        if mode == "r":
            _recorder.drain()  # a call that just returned may not have created the file yet
            if self.path is None or not os.path.isfile(self.path):
                raise HILTError(f"path: {self.path!r} is not a file; mode='r' reads an existing log")
        elif self.path is not None:
            self.handler = HiltJSONLHandler(self.path, mode=mode, delay=True, **handler_options)
            self.handler.addFilter(self._accepts)

    def _accepts(self, record: logging.LogRecord) -> bool:
        """Events routed to another session (``use_session``) stay out of this one's file."""
        target = getattr(record, "hilt_session", None)
        return target is None or target is self

    def handle(self, record: logging.LogRecord) -> None:
        """Write a record to this session's own file (used when it is not on the ``hilt`` logger)."""
        if self.handler is not None:
            self.handler.handle(record)

    def append(self, event: Event) -> Event:
        """Record ``event`` through the ``hilt`` pipeline into this session (audit and callbacks see it too).

        Raises:
            HILTError: the session was opened read-only, or ``event`` is not an ``Event``.
        """
        if self.backend == "sheets":
            raise HILTError(
                "append: a Session(backend='sheets') only reads; record to a sheet with "
                "hilt.instrument(sheet_id=...) or a HiltSheetsHandler on the 'hilt' logger"
            )
        if self.mode == "r":
            raise HILTError(f"append: session {self.path!r} was opened with mode='r'; open it with mode='a' to write")
        if not isinstance(event, Event):
            raise HILTError(f"append: expected an Event, got {type(event).__name__}; build one with hilt.Event(...)")
        emit(event, session=self)
        return event

    def read(self, strict: bool = False) -> Iterator[Event]:
        """Yield the events in file order.

        A torn last line (a crash mid-write) is skipped and reported; any other malformed line is
        reported as ``path:line`` on ``hilt.internal`` and skipped, or raises with ``strict=True``.

        LLM calls this process has made are written first (their recording finishes in the
        background), so a log read right after a call holds it.

        Raises:
            HILTError: with ``strict=True``, at the first malformed line, naming ``path:line``.
        """
        _recorder.drain()
        if self.backend == "sheets":
            from .sheets_reader import read_sheet_events

            yield from read_sheet_events(self.worksheet, strict=strict)
            return
        if self.path is None:
            return
        if not os.path.exists(self.path):
            if self.mode == "r":
                raise HILTError(f"path: {self.path!r} does not exist")
            return
        skipped = 0
        with _open_log(self.path) as handle:
            previous: tuple[int, bytes] | None = None
            for item in enumerate(handle, start=1):
                if not item[1].strip():
                    continue
                if previous is not None:
                    event = self._parse(previous, strict, last=False, skipped=skipped)
                    if event is None:
                        skipped += 1
                    else:
                        yield event
                previous = item
            if previous is not None:
                event = self._parse(previous, strict, last=True, skipped=skipped)
                if event is not None:
                    yield event
                else:
                    skipped += 1
        if skipped > _MAX_REPORTED_LINES:
            internal_logger.warning("hilt: %s: %d unreadable lines skipped in all", self.path, skipped)

    def _parse(self, item: tuple[int, bytes], strict: bool, last: bool, skipped: int) -> Event | None:
        number, raw = item
        try:
            return Event.from_dict(loads_line(raw))
        except (HILTError, TypeError, ValueError, AttributeError) as exc:
            problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        torn = last and not raw.endswith(b"\n")
        where = f"{self.path}:{number}"
        if strict:
            raise HILTError(f"{where}: {'torn last line' if torn else 'malformed line'}: {problem}")
        if skipped < _MAX_REPORTED_LINES:
            if torn:
                internal_logger.warning("hilt: %s: torn last line skipped (a crash mid-write?)", where)
            else:
                internal_logger.warning("hilt: %s: malformed line skipped: %s", where, problem)
        return None

    def close(self) -> None:
        """Flush and close this session's file; idempotent."""
        if self.handler is not None:
            self.handler.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[Event]:
        return self.read()

    def __repr__(self) -> str:
        if self.backend == "sheets":
            return f"Session(backend='sheets', worksheet={getattr(self.worksheet, 'title', None)!r})"
        return f"Session({self.path!r}, mode={self.mode!r})"


def _open_log(path: str) -> IO[bytes]:
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")

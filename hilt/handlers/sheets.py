"""``HiltSheetsHandler``: events as rows of a Google Sheets worksheet, sent in batches from a background thread.

``emit()`` only turns the event into a row and queues it. A worker thread appends the queued rows
with one ``values.append`` request per batch (every ``flush_interval`` seconds, or as soon as
``batch_size`` rows wait), so 1,000 calls a minute cost about a dozen write requests. 429, 5xx and
dropped connections are retried with capped exponential backoff and jitter; when the outcome of an
append is unknown (5xx, or the connection dropped after sending), the sheet's ``event_id`` column is
read back before re-sending, so no row is written twice.

Rows never vanish: past ``max_queue`` rows, or while the sheet can't be reached, they go to a local
JSONL spill file (created 0600) and are replayed in order once the sheet answers again. ``close()``
(and interpreter exit) waits a bounded time and leaves whatever is still unsent in the spill file,
which the next handler on the same ``spill_path`` replays.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from .._internal import report_failure, report_problem
from ..columns import validate_columns
from ..errors import HILTError
from ._base import HiltHandler
from ._sheets_rows import cell_value, column_letters, event_cells, render_row

__all__ = ["DEFAULT_SPILL_PATH", "SCOPES", "HiltSheetsHandler"]

SCOPES = ["https://www.googleapis.com/auth/spreadsheets"]
DEFAULT_SPILL_PATH = os.path.join("logs", "hilt-sheets-spill.jsonl")
FILE_MODE = 0o600
DIR_MODE = 0o700
_INSTALL_HINT = 'the Google Sheets backend needs the "sheets" extra: pip install "hilt[sheets]"'


class _Unknown(Exception):
    """An append failed in a way that may have applied it on the server (5xx, dropped connection)."""


class _Retryable(Exception):
    """An append failed and was certainly not applied (429, auth refresh, connection refused)."""


class _SetupFailed(Exception):
    """The worksheet could not be prepared yet (network); tried again later."""


def resolve_target(sheet_id: str | None, worksheet_name: Any) -> str:
    """The spreadsheet id (``sheet_id`` or ``GOOGLE_SHEET_ID``), after checking both names; raises HILTError."""
    sheet_id = sheet_id if sheet_id is not None else os.environ.get("GOOGLE_SHEET_ID")
    if not sheet_id or not isinstance(sheet_id, str):
        raise HILTError(
            "sheet_id: no spreadsheet id; pass sheet_id= (the long id in the sheet's URL, "
            "docs.google.com/spreadsheets/d/<id>/edit) or set GOOGLE_SHEET_ID"
        )
    if not isinstance(worksheet_name, str) or not worksheet_name:
        raise HILTError(f"worksheet_name: expected the tab's name, got {worksheet_name!r}")
    return sheet_id


def _import_gspread() -> Any:
    try:
        import gspread
    except ModuleNotFoundError as exc:
        raise HILTError(f"sheet_id: {_INSTALL_HINT}") from exc
    return gspread


def _quote_title(title: str) -> str:
    return "'" + title.replace("'", "''") + "'"


def _load_credentials_info(credentials_path: Any, credentials_json: Any) -> tuple[dict[str, Any], str]:
    """The service-account key dict and the argument it came from."""
    if credentials_json is not None:
        argument = "credentials_json"
        if isinstance(credentials_json, Mapping):
            info = dict(credentials_json)
        elif isinstance(credentials_json, (str, bytes)):
            try:
                info = json.loads(credentials_json)
            except ValueError as exc:
                raise HILTError(
                    "credentials_json: not valid JSON; pass the service-account key file's content or a dict"
                ) from exc
        else:
            raise HILTError(f"credentials_json: expected a dict or JSON text, got {type(credentials_json).__name__}")
    else:
        path = credentials_path if credentials_path is not None else os.environ.get("GOOGLE_CREDENTIALS_PATH")
        argument = "credentials_path" if credentials_path is not None else "GOOGLE_CREDENTIALS_PATH"
        if not path:
            raise HILTError(
                "credentials_path: no Google credentials; pass credentials_path= (a service-account key .json), "
                "credentials_json=, or set GOOGLE_CREDENTIALS_PATH"
            )
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise HILTError(
                f"{argument}: {path!r} does not exist or is not a file; download a service-account key "
                "(Google Cloud console > IAM > Service accounts > Keys) and pass its path"
            )
        try:
            with open(path, encoding="utf-8") as handle:
                info = json.load(handle)
        except (OSError, ValueError) as exc:
            raise HILTError(f"{argument}: {path!r} is not a readable JSON key file ({exc})") from exc
    if not isinstance(info, dict) or info.get("type") != "service_account":
        kind = info.get("type") if isinstance(info, dict) else type(info).__name__
        raise HILTError(
            f"{argument}: not a service-account key (type={kind!r}); create a key for a service account "
            "and share the spreadsheet with its client_email"
        )
    missing = [key for key in ("client_email", "private_key", "token_uri") if not info.get(key)]
    if missing:
        raise HILTError(f"{argument}: the service-account key lacks {missing}; download a fresh key file")
    return info, argument


def _build_client(credentials_path: Any, credentials_json: Any) -> Any:
    gspread = _import_gspread()
    info, argument = _load_credentials_info(credentials_path, credentials_json)
    try:
        from google.oauth2.service_account import Credentials
    except ModuleNotFoundError as exc:
        raise HILTError(f"credentials_path: {_INSTALL_HINT}") from exc
    try:
        credentials = Credentials.from_service_account_info(info, scopes=SCOPES)
    except (ValueError, TypeError) as exc:
        raise HILTError(f"{argument}: the service-account key can't be used ({exc})") from exc
    return gspread.Client(auth=credentials)


def _client_email(client: Any) -> str | None:
    http = getattr(client, "http_client", None)
    for owner in (getattr(http, "auth", None), getattr(getattr(http, "session", None), "credentials", None)):
        email = getattr(owner, "service_account_email", None) or getattr(owner, "_service_account_email", None)
        if email:
            return str(email)
    return None


class HiltSheetsHandler(HiltHandler):
    """Append each event as a row of a Google Sheets worksheet, batched, off the caller's thread.

    Args:
        sheet_id: the spreadsheet id (from its URL); default env ``GOOGLE_SHEET_ID``.
        credentials_path: a service-account key file; default env ``GOOGLE_CREDENTIALS_PATH``.
        credentials_json: the key as a dict or JSON text (instead of a file).
        worksheet_name: the tab; created when missing.
        columns: which columns, in which order (see ``hilt.columns.COLUMNS``); default the 15 classic ones.
            On a sheet that already has a header, rows follow that header by name, and chosen columns
            it lacks are added at its end.
        client: a ready ``gspread.Client`` (then no credentials are read).
        batch_size: most rows per append request; a full batch is sent at once.
        flush_interval: seconds a queued row waits at most before its batch is sent.
        max_queue: rows held in memory; beyond that they go to the spill file.
        spill_path: the local JSONL file for rows not yet sent (created 0600).
        escape_formulas: prefix text cells starting with ``=``, ``+``, ``-`` or ``@`` with ``'``.
        max_retries: attempts of one batch before it is spilled (retries then continue from the spill file).
        backoff_base, backoff_max: exponential backoff (with jitter) between attempts, in seconds.
        close_timeout: seconds ``close()`` / ``flush()`` wait for the sheet before leaving rows in the spill file.

    Raises:
        HILTError: gspread not installed, no sheet id, unusable credentials, spreadsheet not found or not
            shared with the service account, or a bad option.
    """

    def __init__(
        self,
        sheet_id: str | None = None,
        credentials_path: str | os.PathLike[str] | None = None,
        credentials_json: str | Mapping[str, Any] | None = None,
        worksheet_name: str = "Logs",
        columns: Sequence[str] | None = None,
        client: Any = None,
        batch_size: int = 200,
        flush_interval: float = 5.0,
        max_queue: int = 10_000,
        spill_path: str | os.PathLike[str] = DEFAULT_SPILL_PATH,
        escape_formulas: bool = True,
        level: int | str = logging.NOTSET,
        *,
        max_retries: int = 5,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        close_timeout: float = 10.0,
    ) -> None:
        super().__init__(level)
        self._closed = True  # until the worker runs: close() on a half-built handler must work
        self._worker: threading.Thread | None = None
        sheet_id = resolve_target(sheet_id, worksheet_name)
        self.columns = validate_columns(columns)
        for name, value, low in (("batch_size", batch_size, 1), ("max_queue", max_queue, 1), ("max_retries", max_retries, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise HILTError(f"{name}: expected a whole number >= {low}, got {value!r}")
        for name, value in (("flush_interval", flush_interval), ("backoff_base", backoff_base),
                            ("backoff_max", backoff_max), ("close_timeout", close_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise HILTError(f"{name}: expected a number of seconds >= 0, got {value!r}")
        if not isinstance(spill_path, (str, os.PathLike)) or not os.fspath(spill_path):
            raise HILTError(f"spill_path: expected a file path such as 'logs/hilt-sheets-spill.jsonl', got {spill_path!r}")
        self.sheet_id = sheet_id
        self.worksheet_name = worksheet_name
        self.batch_size = batch_size
        self.flush_interval = float(flush_interval)
        self.max_queue = max_queue
        self.escape_formulas = bool(escape_formulas)
        self.max_retries = max_retries
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.close_timeout = float(close_timeout)
        self.spill_path = os.path.abspath(os.fspath(spill_path))
        if os.path.isdir(self.spill_path):
            raise HILTError(f"spill_path: {self.spill_path!r} is a directory; pass a file path")

        if client is None:
            client = _build_client(credentials_path, credentials_json)
        self.client = client
        self._email = _client_email(client)

        # Queue state, all guarded by self._cv.
        self._cv = threading.Condition(threading.Lock())
        self._queue: deque[dict[str, Any]] = deque()
        self._first_queued = 0.0  # monotonic time the oldest queued row arrived
        self._inflight: list[dict[str, Any]] | None = None  # a batch taken from the queue, being sent
        self._spill_rows = 0  # unsent rows in the spill file (from _spill_offset on)
        self._spill_offset = 0
        self._spill_check = False  # the spill file came from an earlier run: check its head against the sheet
        self._failing = False  # the last attempt failed; flush() stops waiting
        self._flush_wanted = False
        self._closing = False
        self._busy = False
        self._next_try = 0.0

        # Worksheet state, used by the worker only (after set-up here).
        self._spreadsheet: Any = None
        self._worksheet: Any = None
        self._header: list[str] | None = None
        self._last_row: int | None = None  # last row known to hold data (from append answers)

        self._load_spill()
        try:
            self._setup()
        except _SetupFailed as exc:  # the network, not the configuration: spill and retry in the background
            report_failure(f"{type(self).__name__} set-up", exc.__cause__ or exc)
            self._failing = True
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="hilt-sheets", daemon=True)
        self._worker.start()
        ref = weakref.ref(self)
        self._atexit = lambda: (ref() is not None and ref().close())  # type: ignore[union-attr]
        atexit.register(self._atexit)

    # --- set-up -------------------------------------------------------------------------

    def _classify(self, exc: BaseException) -> BaseException:
        """Map a gspread/requests/google-auth exception to _Retryable / _Unknown, or return it (permanent)."""
        gspread = _import_gspread()
        if isinstance(exc, gspread.exceptions.APIError):
            code = getattr(exc, "code", None)
            status = getattr(getattr(exc, "response", None), "status_code", None)
            code = status if isinstance(status, int) else code
            if code == 429 or code == 408:
                return _Retryable(str(exc))
            if isinstance(code, int) and code >= 500:
                return _Unknown(str(exc))
            return exc
        try:
            import requests
        except ModuleNotFoundError:  # pragma: no cover - gspread depends on requests
            return exc
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return _Retryable(str(exc))
        if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                            requests.exceptions.ChunkedEncodingError)):
            return _Unknown(str(exc))
        try:
            from google.auth.exceptions import RefreshError, TransportError
        except ModuleNotFoundError:  # pragma: no cover
            return exc
        if isinstance(exc, TransportError):
            return _Retryable(str(exc))
        if isinstance(exc, RefreshError) and getattr(exc, "retryable", False):
            return _Retryable(str(exc))
        return exc

    def _setup(self) -> None:
        """Open the spreadsheet, find or create the worksheet, read (only) its header row, write it if missing."""
        gspread = _import_gspread()
        try:
            spreadsheet = self.client.open_by_key(self.sheet_id)
        except gspread.exceptions.SpreadsheetNotFound as exc:
            raise HILTError(
                f"sheet_id: spreadsheet {self.sheet_id!r} was not found (404); check the id in the sheet's URL"
            ) from exc
        except PermissionError as exc:
            who = self._email or "the service account's client_email"
            raise HILTError(
                f"sheet_id: spreadsheet {self.sheet_id!r} is not shared with {who} (403); open the sheet, "
                f"click Share and add {who} as an Editor"
            ) from exc
        except Exception as exc:
            self._raise_setup(exc)
        try:
            try:
                worksheet = spreadsheet.worksheet(self.worksheet_name)
            except gspread.exceptions.WorksheetNotFound:
                worksheet = spreadsheet.add_worksheet(
                    self.worksheet_name, rows=1000, cols=max(len(self.columns), 1)
                )
            answer = spreadsheet.values_get(f"{_quote_title(self.worksheet_name)}!1:1")
            existing = [str(name) for name in (answer.get("values") or [[]])[0]]
            if any(existing):
                header = list(existing)
                missing = [name for name in self.columns if name not in header]
                if missing:
                    header.extend(missing)
                    if worksheet.col_count < len(header):
                        worksheet.add_cols(len(header) - worksheet.col_count)
                    self._write_header_cells(spreadsheet, len(existing) + 1, missing)
            else:
                header = list(self.columns)
                if worksheet.col_count < len(header):
                    worksheet.add_cols(len(header) - worksheet.col_count)
                self._write_header_cells(spreadsheet, 1, header)
                self._last_row = 1
        except HILTError:
            raise
        except Exception as exc:
            self._raise_setup(exc)
        self._spreadsheet, self._worksheet, self._header = spreadsheet, worksheet, header

    def _write_header_cells(self, spreadsheet: Any, first_col: int, names: list[str]) -> None:
        start = column_letters(first_col)
        spreadsheet.values_update(
            f"{_quote_title(self.worksheet_name)}!{start}1", params={"valueInputOption": "RAW"},
            body={"values": [names]},
        )

    def _raise_setup(self, exc: BaseException) -> None:
        kind = self._classify(exc)
        if isinstance(kind, (_Retryable, _Unknown)):
            raise _SetupFailed(str(exc)) from exc
        try:
            from google.auth.exceptions import RefreshError
        except ModuleNotFoundError:  # pragma: no cover
            RefreshError = ()  # type: ignore[assignment,misc]
        if isinstance(exc, RefreshError):
            raise HILTError(
                f"credentials_path: Google refused the service account's key ({exc}); "
                "check the key is current and belongs to an enabled service account"
            ) from exc
        raise HILTError(f"sheet_id: the worksheet {self.worksheet_name!r} could not be prepared: {exc}") from exc

    # --- spill file ---------------------------------------------------------------------

    def _load_spill(self) -> None:
        """Count rows left by an earlier run; they are replayed first."""
        try:
            with open(self.spill_path, "rb") as handle:
                self._spill_rows = sum(1 for line in handle if line.strip())
        except FileNotFoundError:
            self._spill_rows = 0
        except OSError as exc:
            raise HILTError(f"spill_path: {self.spill_path!r} can't be read ({exc.strerror})") from exc
        self._spill_check = self._spill_rows > 0

    def _open_spill(self, flags: int) -> int:
        os.makedirs(os.path.dirname(self.spill_path), mode=DIR_MODE, exist_ok=True)
        return os.open(self.spill_path, flags | getattr(os, "O_CLOEXEC", 0), FILE_MODE)

    @staticmethod
    def _lines(rows: Sequence[dict[str, Any]]) -> bytes:
        return b"".join(json.dumps(row, ensure_ascii=False).encode("utf-8", "backslashreplace") + b"\n" for row in rows)

    def _spill_append(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append rows at the end of the spill file (caller holds the lock)."""
        if not rows:
            return
        data = self._lines(rows)
        fd = self._open_spill(os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        self._spill_rows += len(rows)

    def _spill_rewrite(self, before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]]) -> None:
        """Rewrite the spill file as ``before`` + its unsent rows + ``after`` (caller holds the lock)."""
        remainder = b""
        if self._spill_rows:
            with open(self.spill_path, "rb") as handle:
                handle.seek(self._spill_offset)
                remainder = handle.read()
        data = self._lines(before) + remainder + self._lines(after)
        tmp = self.spill_path + ".tmp"
        os.makedirs(os.path.dirname(self.spill_path), mode=DIR_MODE, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.spill_path)
        self._spill_offset = 0
        self._spill_rows = sum(1 for line in data.split(b"\n") if line.strip())

    def _spill_head(self) -> tuple[list[dict[str, Any]], int]:
        """Up to ``batch_size`` rows from the head of the spill file and the bytes they take (lock held)."""
        rows: list[dict[str, Any]] = []
        used = 0
        with open(self.spill_path, "rb") as handle:
            handle.seek(self._spill_offset)
            while len(rows) < self.batch_size:
                line = handle.readline()
                if not line.endswith(b"\n"):
                    break
                used += len(line)
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise ValueError("not a JSON object")
                except ValueError as exc:
                    report_problem(f"{type(self).__name__} spill", "skipped an unreadable line in %s: %s",
                                   self.spill_path, exc)
                    self._spill_rows -= 1
                    continue
                rows.append(row)
        return rows, used

    def _spill_consumed(self, used: int, count: int) -> None:
        """The head rows were sent: move past them; truncate the file once all are sent (lock held)."""
        self._spill_offset += used
        self._spill_rows = max(0, self._spill_rows - count)
        if self._spill_rows == 0:
            fd = self._open_spill(os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.close(fd)
            self._spill_offset = 0

    def _compact_spill(self) -> None:
        """Drop the already-sent head of the spill file, so a later run replays only unsent rows (lock held)."""
        if self._spill_offset and self._spill_rows:
            self._spill_rewrite((), ())

    # --- logging.Handler ----------------------------------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event = record.hilt_event  # type: ignore[attr-defined]
            values = event_cells(event)
            escape = self.escape_formulas
            row = {name: cell_value(values[name], escape) for name in self.columns}
            row["event_id"] = cell_value(values["event_id"], escape)
            with self._cv:
                if self._closed:
                    # After close (e.g. dictConfig closed us): keep the row on disk for the next run, never drop it.
                    self._spill_append([row])
                    report_problem(f"{type(self).__name__}.emit",
                                   "an event reached the closed Sheets handler; it was kept in %s", self.spill_path)
                    return
                if self._spill_rows:
                    self._spill_append([row])  # keep order: older rows are waiting in the spill file
                elif len(self._queue) >= self.max_queue:
                    queued = list(self._queue)
                    self._queue.clear()
                    self._spill_append(queued + [row])
                    self._cv.notify_all()
                else:
                    was_empty = not self._queue
                    if was_empty:
                        self._first_queued = time.monotonic()
                    self._queue.append(row)
                    if was_empty or len(self._queue) >= self.batch_size:
                        self._cv.notify_all()  # the worker starts the flush_interval clock, or sends a full batch
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def _pending(self) -> int:
        return len(self._queue) + self._spill_rows + (len(self._inflight) if self._inflight else 0)

    def flush(self, timeout: float | None = None) -> None:
        """Send everything queued now; wait up to ``timeout`` (default ``close_timeout``) seconds.

        Returns early when the sheet can't be reached (the rows then wait in the spill file).
        """
        wait = self.close_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        with self._cv:
            if self._closed or self._worker is None:
                return
            self._flush_wanted = True
            self._failing = False
            self._next_try = 0.0
            self._cv.notify_all()
            while (self._pending() or self._busy) and not self._failing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            self._flush_wanted = False

    def close(self) -> None:
        """Send what is queued (waiting at most ``close_timeout`` seconds), keep the rest in the spill file; idempotent."""
        worker = self._worker
        with self._cv:
            already = self._closing
            self._closing = True
            self._next_try = 0.0
            self._cv.notify_all()
        if not already and worker is not None and worker is not threading.current_thread():
            worker.join(self.close_timeout)
        with self._cv:
            if not self._closed and (self._queue or self._inflight):
                try:
                    # The worker may still be inside an append of the in-flight batch: if that lands, the
                    # next run's replay finds those rows in the sheet by event_id and skips them.
                    self._spill_rewrite(list(self._inflight or ()), list(self._queue))
                    self._spill_check = True
                except Exception as exc:
                    report_failure(f"{type(self).__name__}.close", exc)
                else:
                    self._queue.clear()
            try:
                self._compact_spill()
            except Exception as exc:
                report_failure(f"{type(self).__name__}.close", exc)
            self._closed = True
            self._cv.notify_all()
        if getattr(self, "_atexit", None) is not None:
            atexit.unregister(self._atexit)
        super().close()

    # --- worker -------------------------------------------------------------------------

    def _backoff(self, failures: int) -> float:
        delay = min(self.backoff_max, self.backoff_base * (2 ** max(0, failures - 1)))
        return delay * (0.5 + random.random() / 2)

    def _run(self) -> None:
        failures = 0
        uncertain = False  # the last attempt on the head batch may have been applied
        while True:
            with self._cv:
                while True:
                    now = time.monotonic()
                    if self._closed:
                        return
                    if self._closing and (failures or not self._pending()):
                        return
                    if now >= self._next_try:
                        if self._inflight or self._spill_rows:
                            break
                        if self._queue and (len(self._queue) >= self.batch_size or self._flush_wanted or self._closing
                                            or now - self._first_queued >= self.flush_interval):
                            break
                    if self._next_try > now:
                        timeout = self._next_try - now
                    elif self._queue:
                        timeout = max(0.0, self._first_queued + self.flush_interval - now)
                    else:
                        timeout = None
                    self._cv.wait(timeout)
                self._busy = True
                if self._inflight is None and not self._spill_rows:
                    self._inflight = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
                    if self._queue:
                        self._first_queued = time.monotonic()
                from_spill = self._inflight is None
                try:
                    if from_spill:
                        batch, used = self._spill_head()
                        check = uncertain or self._spill_check
                    else:
                        batch, used = list(self._inflight or ()), 0
                        check = uncertain
                except Exception as exc:
                    report_failure(f"{type(self).__name__} spill", exc)
                    self._busy = False
                    self._failing = True
                    self._next_try = time.monotonic() + self._backoff(failures + 1)
                    failures += 1
                    self._cv.notify_all()
                    continue
            error: BaseException | None = None
            try:
                self._send(batch, check)
            except BaseException as exc:  # noqa: BLE001 - the worker must survive anything
                error = exc
            with self._cv:
                self._busy = False
                if error is None:
                    failures, uncertain = 0, False
                    self._failing = False
                    if from_spill:
                        self._spill_check = False
                        try:
                            self._spill_consumed(used, len(batch))
                        except Exception as exc:
                            report_failure(f"{type(self).__name__} spill", exc)
                    else:
                        self._inflight = None
                else:
                    failures += 1
                    kind = self._classify(error) if not isinstance(error, (_Retryable, _Unknown, _SetupFailed)) else error
                    uncertain = uncertain or isinstance(kind, _Unknown)
                    if not isinstance(kind, (_Retryable, _Unknown, _SetupFailed)):
                        report_failure(f"{type(self).__name__} append", error)
                    elif failures >= self.max_retries:
                        report_failure(f"{type(self).__name__} append", error)
                    permanent = not isinstance(kind, (_Retryable, _Unknown, _SetupFailed))
                    self._failing = self._failing or permanent or failures >= self.max_retries
                    if not from_spill and (failures >= self.max_retries or self._closing
                                           or not isinstance(kind, (_Retryable, _Unknown))):
                        try:
                            self._spill_rewrite(list(self._inflight or ()), list(self._queue))
                            self._queue.clear()
                            self._inflight = None
                            self._spill_check = self._spill_check or uncertain
                        except Exception as exc:
                            report_failure(f"{type(self).__name__} spill", exc)
                    self._next_try = time.monotonic() + self._backoff(failures)
                self._cv.notify_all()

    def _send(self, batch: list[dict[str, Any]], check: bool) -> None:
        """Append ``batch`` (skipping rows the sheet already holds when ``check``); raises on failure."""
        if self._header is None:
            self._setup()
        assert self._header is not None and self._worksheet is not None
        if check:
            batch = self._not_in_sheet(batch)
            if not batch:
                return
        rows = [render_row(row, self._header) for row in batch]
        try:
            answer = self._worksheet.append_rows(rows, value_input_option="RAW")
        except Exception as exc:
            kind = self._classify(exc)
            if kind is exc:
                raise
            raise kind from exc
        try:
            updated = answer["updates"]["updatedRange"]
            self._last_row = int("".join(ch for ch in updated.rsplit(":", 1)[-1] if ch.isdigit()))
        except Exception:
            pass

    def _not_in_sheet(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows of ``batch`` whose event_id is not among the sheet's last rows."""
        assert self._header is not None
        if "event_id" not in self._header:
            report_problem(f"{type(self).__name__} dedupe",
                           "the sheet has no event_id column, so a possibly-applied append was re-sent unchecked")
            return batch
        letter = column_letters(self._header.index("event_id") + 1)
        first = max(2, (self._last_row or 1) + 1 - self.batch_size)  # a margin for rows others appended
        try:
            answer = self._spreadsheet.values_get(f"{_quote_title(self.worksheet_name)}!{letter}{first}:{letter}")
        except Exception as exc:
            kind = self._classify(exc)
            raise (kind if kind is not exc else exc) from exc
        present = {row[0] for row in answer.get("values") or [] if row}
        return [row for row in batch if row.get("event_id") not in present]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.sheet_id}/{self.worksheet_name} ({logging.getLevelName(self.level)})>"

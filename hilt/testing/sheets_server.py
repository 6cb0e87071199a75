"""A local HTTP server imitating the parts of the Google Sheets v4 API and the OAuth2 token endpoint gspread uses.

Used by hilt's tests (and usable by yours) to run the real ``gspread`` and ``google-auth`` offline:

- ``POST /token``: verifies the service account's RS256 JWT assertion with its public key and answers
  an access token;
- ``GET /v4/spreadsheets/{id}``: spreadsheet metadata (``open_by_key``, ``worksheet``);
- ``POST /v4/spreadsheets/{id}:batchUpdate``: ``addSheet`` and ``appendDimension``;
- ``GET|PUT /v4/spreadsheets/{id}/values/{range}``: read / write a range;
- ``POST /v4/spreadsheets/{id}/values/{range}:append``: append rows after the last non-empty row.

gspread always calls ``https://sheets.googleapis.com``; :meth:`SheetsServer.adapter` returns a ``requests``
transport adapter that sends every ``https://`` request to this server instead (mount it on the session
given to ``gspread.Client``). Faults can be injected into the next appends (429/5xx, apply-then-5xx,
dropped connection), appends can be held on a gate, and the whole API can be made unavailable.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..handlers._sheets_rows import column_letters

__all__ = ["SheetsServer", "TOKEN_AUDIENCE", "make_service_account"]

TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
SHEETS_SCOPE = "https://www.googleapis.com/auth/spreadsheets"


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _column_number(letters: str) -> int:
    number = 0
    for char in letters.upper():
        number = number * 26 + (ord(char) - 64)
    return number


_CELL = re.compile(r"^([A-Za-z]*)(\d*)$")


def _parse_range(text: str) -> tuple[str, tuple[int | None, int | None], tuple[int | None, int | None]]:
    """``'Logs'!A1:C`` -> (title, (col, row) start, (col, row) end); ``None`` means open-ended."""
    if "!" in text:
        title, cells = text.rsplit("!", 1)
    else:
        title, cells = text, ""
    if title.startswith("'") and title.endswith("'"):
        title = title[1:-1].replace("''", "'")
    if not cells:
        return title, (1, 1), (None, None)
    first, _, last = cells.partition(":")
    last = last or first

    def cell(part: str) -> tuple[int | None, int | None]:
        match = _CELL.match(part)
        if not match:
            raise ValueError(f"bad range {text!r}")
        col = _column_number(match.group(1)) if match.group(1) else None
        row = int(match.group(2)) if match.group(2) else None
        return col, row

    start, end = cell(first), cell(last)
    return title, (start[0] or 1, start[1] or 1), end


@dataclass
class Worksheet:
    sheet_id: int
    title: str
    index: int
    row_count: int = 1000
    column_count: int = 26
    rows: list[list[Any]] = field(default_factory=list)

    def properties(self) -> dict[str, Any]:
        return {
            "sheetId": self.sheet_id, "title": self.title, "index": self.index, "sheetType": "GRID",
            "gridProperties": {"rowCount": self.row_count, "columnCount": self.column_count},
        }

    def last_row(self) -> int:
        """1-based number of the last row holding a non-empty cell (0 when empty)."""
        for number in range(len(self.rows), 0, -1):
            if any(value not in ("", None) for value in self.rows[number - 1]):
                return number
        return 0

    def values(self) -> list[list[Any]]:
        """Every row up to the last non-empty one, trailing empty cells trimmed (as the API returns them)."""
        out = []
        for row in self.rows[: self.last_row()]:
            row = list(row)
            while row and row[-1] in ("", None):
                row.pop()
            out.append(row)
        return out

    def set_cell(self, row: int, col: int, value: Any) -> None:
        while len(self.rows) < row:
            self.rows.append([])
        cells = self.rows[row - 1]
        while len(cells) < col:
            cells.append("")
        cells[col - 1] = value
        self.row_count = max(self.row_count, row)
        self.column_count = max(self.column_count, col)


@dataclass
class Spreadsheet:
    spreadsheet_id: str
    title: str
    shared_with: set[str]
    worksheets: list[Worksheet] = field(default_factory=list)

    def find(self, title: str) -> Worksheet | None:
        return next((sheet for sheet in self.worksheets if sheet.title == title), None)


class _Fault:
    def __init__(self, kind: str, status: int) -> None:
        self.kind, self.status = kind, status


class SheetsServer:
    """The fake Sheets API + token endpoint on ``127.0.0.1``; use as a context manager or call ``start()``/``stop()``.

    Attributes:
        url: ``http://127.0.0.1:<port>``; ``token_uri`` is ``url + "/token"``.
        requests: ``(method, path)`` of every request received, in order.
        unavailable: while true, every Sheets API request answers ``unavailable_status`` (an outage).
        append_delay: seconds each append waits before it is answered (a slow API).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, Any] = {}  # client_email -> public key
        self._tokens: dict[str, str] = {}  # access token -> client_email
        self.spreadsheets: dict[str, Spreadsheet] = {}
        self.requests: list[tuple[str, str]] = []
        self.appends = 0  # append requests received (including failed ones)
        self.token_requests = 0
        self.unavailable = False
        self.unavailable_status = 503
        self.append_delay = 0.0  # seconds every append waits before answering (a slow Sheets API)
        self._faults: list[_Fault] = []
        self._gate: threading.Event | None = None
        self.held = threading.Event()  # set while an append waits at the gate
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> SheetsServer:
        server = self

        class Handler(_RequestHandler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hilt-sheets-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> SheetsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start() the server first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def token_uri(self) -> str:
        return self.url + "/token"

    def adapter(self) -> Any:
        """A ``requests`` adapter sending every request to this server (mount it on ``"https://"``)."""
        from requests.adapters import HTTPAdapter

        base = self.url

        class LocalAdapter(HTTPAdapter):
            def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
                parts = urlsplit(request.url)
                request.url = base + parts.path + ("?" + parts.query if parts.query else "")
                return super().send(request, *args, **kwargs)

        return LocalAdapter()

    # --- set-up -------------------------------------------------------------------------

    def add_service_account(self, client_email: str, public_key: Any) -> None:
        """Accept JWT assertions from ``client_email`` signed with the private key matching ``public_key``."""
        with self._lock:
            self._keys[client_email] = public_key

    def add_spreadsheet(
        self, spreadsheet_id: str, shared_with: list[str] | set[str] = (), title: str = "hilt test",  # type: ignore[assignment]
        worksheets: dict[str, list[list[Any]]] | None = None,
    ) -> Spreadsheet:
        """A spreadsheet readable by the ``shared_with`` emails, with worksheets ``{title: rows}`` (default ``Sheet1``)."""
        sheet = Spreadsheet(spreadsheet_id, title, set(shared_with))
        for index, (name, rows) in enumerate((worksheets if worksheets is not None else {"Sheet1": []}).items()):
            sheet.worksheets.append(Worksheet(index, name, index, rows=[list(row) for row in rows]))
        with self._lock:
            self.spreadsheets[spreadsheet_id] = sheet
        return sheet

    def values(self, spreadsheet_id: str, title: str) -> list[list[Any]]:
        """The worksheet's rows as stored (trailing empties trimmed)."""
        with self._lock:
            sheet = self.spreadsheets[spreadsheet_id].find(title)
            assert sheet is not None, f"no worksheet {title!r}"
            return sheet.values()

    # --- faults -------------------------------------------------------------------------

    def fail_next_appends(self, count: int = 1, status: int = 429) -> None:
        """The next ``count`` appends answer ``status`` without applying anything."""
        with self._lock:
            self._faults.extend(_Fault("fail", status) for _ in range(count))

    def apply_then_fail_next_appends(self, count: int = 1, status: int = 500) -> None:
        """The next ``count`` appends are applied, then answer ``status`` (the client can't know they were)."""
        with self._lock:
            self._faults.extend(_Fault("apply_then_fail", status) for _ in range(count))

    def drop_next_appends(self, count: int = 1, apply: bool = False) -> None:
        """The next ``count`` appends get their connection closed without an answer (after applying, if ``apply``)."""
        with self._lock:
            self._faults.extend(_Fault("drop_applied" if apply else "drop", 0) for _ in range(count))

    def hold_appends(self) -> threading.Event:
        """Make appends wait until the returned event is set (or :meth:`release` is called)."""
        gate = threading.Event()
        with self._lock:
            self._gate = gate
        return gate

    def release(self) -> None:
        with self._lock:
            gate, self._gate = self._gate, None
        if gate is not None:
            gate.set()

    # --- request handling ---------------------------------------------------------------

    def _take_fault(self) -> _Fault | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def _issue_token(self, assertion: str) -> tuple[int, dict[str, Any]]:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        self.token_requests += 1
        try:
            header_b64, payload_b64, signature_b64 = assertion.split(".")
            header = json.loads(_b64decode(header_b64))
            claims = json.loads(_b64decode(payload_b64))
        except Exception:
            return 400, {"error": "invalid_grant", "error_description": "malformed JWT assertion"}
        if header.get("alg") != "RS256":
            return 400, {"error": "invalid_grant", "error_description": "JWT must be signed with RS256"}
        email = claims.get("iss")
        with self._lock:
            key = self._keys.get(email)
        if key is None:
            return 400, {"error": "invalid_grant", "error_description": f"unknown service account {email!r}"}
        try:
            key.verify(
                _b64decode(signature_b64), f"{header_b64}.{payload_b64}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        now = time.time()
        if claims.get("aud") != TOKEN_AUDIENCE:
            return 400, {"error": "invalid_grant", "error_description": f"bad audience {claims.get('aud')!r}"}
        if not (claims.get("iat", 0) - 300 <= now < claims.get("exp", 0)):
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT: token expired or not yet valid"}
        if SHEETS_SCOPE not in str(claims.get("scope", "")).split():
            return 400, {"error": "invalid_scope", "error_description": f"scope must include {SHEETS_SCOPE}"}
        token = "ya29.local-" + secrets.token_urlsafe(16)
        with self._lock:
            self._tokens[token] = email
        return 200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}

    def _caller(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.startswith("Bearer "):
            return None
        with self._lock:
            return self._tokens.get(authorization[len("Bearer "):])


def _error(code: int, message: str, status: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


_STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 502: "BAD_GATEWAY", 503: "UNAVAILABLE"}


class _RequestHandler(BaseHTTPRequestHandler):
    owner: SheetsServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _fail(self, status: int, message: str) -> None:
        self._send(status, _error(status, message, _STATUS_NAMES.get(status, "UNKNOWN")))

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        owner = self.owner
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        body = self._body()
        owner.requests.append((method, path))
        if path == "/token" and method == "POST":
            form = {key: values[-1] for key, values in parse_qs(body.decode()).items()}
            if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
                return self._send(400, {"error": "unsupported_grant_type"})
            status, answer = owner._issue_token(form.get("assertion", ""))
            return self._send(status, answer)
        match = re.match(r"^/v4/spreadsheets/([^/:]+)(.*)$", path)
        if not match:
            return self._fail(404, f"no such endpoint {path}")
        email = owner._caller(self.headers.get("Authorization"))
        if email is None:
            return self._fail(401, "Request had invalid authentication credentials.")
        if owner.unavailable:
            return self._fail(owner.unavailable_status, "The service is currently unavailable.")
        spreadsheet_id, rest = match.group(1), match.group(2)
        with owner._lock:
            sheet = owner.spreadsheets.get(spreadsheet_id)
        if sheet is None:
            return self._fail(404, "Requested entity was not found.")
        if email not in sheet.shared_with:
            return self._fail(403, "The caller does not have permission")
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            return self._fail(400, "Invalid JSON payload received.")
        try:
            if rest == "" and method == "GET":
                return self._metadata(sheet)
            if rest == ":batchUpdate" and method == "POST":
                return self._batch_update(sheet, payload)
            values = re.match(r"^/values/(.+?)(:append)?$", rest)
            if values and values.group(2) and method == "POST":
                return self._append(sheet, values.group(1), payload, query)
            if values and method == "GET":
                return self._get_values(sheet, values.group(1))
            if values and method == "PUT":
                return self._update_values(sheet, values.group(1), payload)
        except ValueError as exc:
            return self._fail(400, str(exc))
        return self._fail(404, f"no such endpoint {method} {path}")

    def _metadata(self, sheet: Spreadsheet) -> None:
        with self.owner._lock:
            body = {
                "spreadsheetId": sheet.spreadsheet_id,
                "properties": {"title": sheet.title, "locale": "en_US", "timeZone": "Etc/GMT"},
                "sheets": [{"properties": ws.properties()} for ws in sheet.worksheets],
            }
        self._send(200, body)

    def _batch_update(self, sheet: Spreadsheet, payload: dict[str, Any]) -> None:
        replies: list[dict[str, Any]] = []
        with self.owner._lock:
            for request in payload.get("requests", []):
                if "addSheet" in request:
                    props = request["addSheet"].get("properties", {})
                    title = props.get("title") or f"Sheet{len(sheet.worksheets) + 1}"
                    if sheet.find(title) is not None:
                        raise ValueError(f'Invalid requests[0].addSheet: A sheet with the name "{title}" already exists.')
                    grid = props.get("gridProperties", {})
                    ws = Worksheet(
                        max((w.sheet_id for w in sheet.worksheets), default=0) + 1, title, len(sheet.worksheets),
                        grid.get("rowCount", 1000), grid.get("columnCount", 26),
                    )
                    sheet.worksheets.append(ws)
                    replies.append({"addSheet": {"properties": ws.properties()}})
                elif "appendDimension" in request:
                    spec = request["appendDimension"]
                    ws = next((w for w in sheet.worksheets if w.sheet_id == spec.get("sheetId")), None)
                    if ws is None:
                        raise ValueError("appendDimension: no such sheetId")
                    if spec.get("dimension") == "COLUMNS":
                        ws.column_count += int(spec.get("length", 0))
                    else:
                        ws.row_count += int(spec.get("length", 0))
                    replies.append({})
                else:
                    replies.append({})
        self._send(200, {"spreadsheetId": sheet.spreadsheet_id, "replies": replies})

    def _worksheet(self, sheet: Spreadsheet, title: str) -> Worksheet:
        ws = sheet.find(title)
        if ws is None:
            raise ValueError(f"Unable to parse range: {title}")
        return ws

    def _get_values(self, sheet: Spreadsheet, range_text: str) -> None:
        title, (col0, row0), (col1, row1) = _parse_range(range_text)
        with self.owner._lock:
            ws = self._worksheet(sheet, title)
            rows = ws.values()
        end_row = row1 if row1 is not None else len(rows)
        selected = []
        for row in rows[row0 - 1: end_row]:
            cells = row[col0 - 1: col1] if col1 is not None else row[col0 - 1:]
            selected.append(list(cells))
        while selected and not selected[-1]:
            selected.pop()
        body: dict[str, Any] = {"range": range_text, "majorDimension": "ROWS"}
        if selected:
            body["values"] = selected
        self._send(200, body)

    def _update_values(self, sheet: Spreadsheet, range_text: str, payload: dict[str, Any]) -> None:
        title, (col0, row0), _ = _parse_range(range_text)
        values = payload.get("values", [])
        with self.owner._lock:
            ws = self._worksheet(sheet, title)
            for r, row in enumerate(values):
                for c, value in enumerate(row):
                    if value is not None:
                        ws.set_cell(row0 + r, col0 + c, value)
        self._send(200, {"spreadsheetId": sheet.spreadsheet_id, "updatedRange": range_text,
                         "updatedRows": len(values)})

    def _append(self, sheet: Spreadsheet, range_text: str, payload: dict[str, Any], query: dict[str, str]) -> None:
        owner = self.owner
        owner.appends += 1
        if owner.append_delay:
            time.sleep(owner.append_delay)
        with owner._lock:
            gate = owner._gate
        if gate is not None:
            owner.held.set()
            gate.wait(30)
            owner.held.clear()
        if owner.unavailable:
            return self._fail(owner.unavailable_status, "The service is currently unavailable.")
        fault = owner._take_fault()
        if fault is not None and fault.kind in ("fail", "drop"):
            return self._drop() if fault.kind == "drop" else self._fail(fault.status, "injected failure")
        if query.get("valueInputOption") not in ("RAW", "USER_ENTERED"):
            raise ValueError("valueInputOption is required")
        title, _, _ = _parse_range(range_text)
        values = payload.get("values", [])
        with owner._lock:
            ws = self._worksheet(sheet, title)
            start = ws.last_row() + 1
            for r, row in enumerate(values):
                for c, value in enumerate(row):
                    ws.set_cell(start + r, c + 1, value if value is not None else "")
            width = max((len(row) for row in values), default=1)
        if fault is not None:  # applied, but the client is told otherwise
            return self._drop() if fault.kind == "drop_applied" else self._fail(fault.status, "injected failure")
        updated = f"'{title}'!A{start}:{column_letters(width)}{start + len(values) - 1}"
        self._send(200, {
            "spreadsheetId": sheet.spreadsheet_id, "tableRange": f"'{title}'!A1:{column_letters(width)}{start - 1}",
            "updates": {"spreadsheetId": sheet.spreadsheet_id, "updatedRange": updated, "updatedRows": len(values),
                        "updatedColumns": width, "updatedCells": sum(len(row) for row in values)},
        })


def make_service_account(token_uri: str, client_email: str = "hilt-test@hilt-test.iam.gserviceaccount.com") -> tuple[dict[str, Any], Any]:
    """A fresh service-account key dict (as downloaded from Google Cloud) and its public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "hilt-test",
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": client_email,
        "client_id": "1234567890",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    }
    return info, key.public_key()

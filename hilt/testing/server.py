"""Embedded OpenAI-compatible HTTP server, so hilt's tests, ``hilt demo`` and users run offline.

It speaks the wire format the official ``openai`` SDK parses (chat completions, Responses API,
embeddings, legacy completions, SSE streaming, Azure-style paths) and can be scripted to fail::

    from hilt.testing import OpenAIServer
    with OpenAIServer() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="test")
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert server.requests[-1].body["model"] == "gpt-4o-mini"

Standard library only; binds ``127.0.0.1`` on a free port and prints nothing.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import math
import re
import selectors
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import parse_qsl, urlsplit

__all__ = ["OpenAIServer", "RecordedRequest", "ScriptedReply"]

_DATE_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")
_FINGERPRINT = "fp_hilt_test"
_DONE = object()  # marker for the terminating ``data: [DONE]`` SSE line

_DEFAULT_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", None),
    409: ("invalid_request_error", None),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
}
_DEFAULT_ERROR_MESSAGES = {
    400: "Invalid request.",
    401: "Incorrect API key provided.",
    403: "You are not allowed to access this resource.",
    404: "The requested resource does not exist.",
    409: "Conflict.",
    422: "Unprocessable entity.",
    429: "Rate limit reached for requests. Please try again shortly.",
}


# --------------------------------------------------------------------------- public data types


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request the server received, kept so tests can assert on what the SDK sent."""

    method: str
    path: str  # URL path without the query string, e.g. "/v1/chat/completions"
    headers: dict[str, str]  # lower-case header names
    body: Any  # parsed JSON, or None when the body is empty or not JSON
    raw: bytes
    query: dict[str, str] = field(default_factory=dict)  # e.g. {"api-version": "2024-06-01"}


@dataclass(frozen=True)
class ScriptedReply:
    """A canned answer for the next request; build one with the classmethods, queue it with ``enqueue``."""

    kind: str
    status: int = 200
    headers: tuple[tuple[str, str | None], ...] = ()
    body: Any = None  # dict for "json"/"error", bytes for "raw", tuple of events for "sse"
    content_type: str = "application/json"
    text: str | None = None
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    finish_reason: str | None = None
    refusal: str | None = None
    usage: bool | Mapping[str, Any] = True
    model: str | None = None
    content_none: bool = False
    after_chunks: int = 0
    seconds: float = 0.0
    then: ScriptedReply | None = None
    done: bool = True  # "sse": whether to finish with ``data: [DONE]``

    @classmethod
    def error(
        cls,
        status: int,
        *,
        message: str | None = None,
        type: str | None = None,  # noqa: A002 - mirrors the OpenAI error field name
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str | None] | None = None,
    ) -> ScriptedReply:
        """An OpenAI-shaped error body; 429s carry short ``retry-after`` headers (a None header value removes one)."""
        default_type, default_code = _DEFAULT_ERROR_TYPES.get(status, ("server_error", None))
        body = {
            "error": {
                "message": message if message is not None else _DEFAULT_ERROR_MESSAGES.get(
                    status, "The server had an error while processing your request."
                ),
                "type": type if type is not None else default_type,
                "param": param,
                "code": code if code is not None else default_code,
            }
        }
        base: dict[str, str | None] = {}
        if status == 429:
            base = {"retry-after": "1", "retry-after-ms": "10"}
        return cls(kind="error", status=status, body=body, headers=_merge_header_items(base, headers))

    @classmethod
    def raw(
        cls,
        status: int,
        body: bytes,
        content_type: str = "text/plain",
        headers: Mapping[str, str | None] | None = None,
    ) -> ScriptedReply:
        """Arbitrary bytes with any status and content type (HTML error pages, truncated JSON, ...)."""
        return cls(
            kind="raw", status=status, body=bytes(body), content_type=content_type,
            headers=_merge_header_items({}, headers),
        )

    @classmethod
    def json(
        cls, body: Mapping[str, Any], status: int = 200, *, headers: Mapping[str, str | None] | None = None
    ) -> ScriptedReply:
        """Any JSON body sent as-is, for odd shapes (``choices: []``, missing usage, unknown fields)."""
        return cls(kind="json", status=status, body=copy.deepcopy(dict(body)), headers=_merge_header_items({}, headers))

    @classmethod
    def chat(
        cls,
        text: str | None = None,
        *,
        tool_calls: Sequence[Mapping[str, Any]] | None = None,
        finish_reason: str | None = None,
        refusal: str | None = None,
        usage: bool | Mapping[str, Any] = True,
        model: str | None = None,
        content_none: bool = False,
        headers: Mapping[str, str | None] | None = None,
    ) -> ScriptedReply:
        """Override the generated answer; streamed or not per the request's ``stream`` flag.

        ``text=None`` keeps the default answer unless tool calls/refusal are given. ``tool_calls`` items are
        ``{"name", "arguments" (str or dict), "id"?}`` or the full OpenAI shape. ``usage=False`` omits usage;
        a dict is deep-merged over the computed usage. Also applies to ``/responses`` and ``/completions``.
        """
        return cls(
            kind="chat",
            text=text,
            tool_calls=tuple(_normalize_tool_call(tc) for tc in (tool_calls or ())),
            finish_reason=finish_reason,
            refusal=refusal,
            usage=copy.deepcopy(usage) if isinstance(usage, Mapping) else bool(usage),
            model=model,
            content_none=content_none,
            headers=_merge_header_items({}, headers),
        )

    @classmethod
    def sse(cls, events: Iterable[Mapping[str, Any] | str | bytes], *, done: bool = True) -> ScriptedReply:
        """A hand-written event stream: dicts become ``data: {json}``, str ``data: <str>``, bytes go out verbatim."""
        return cls(kind="sse", body=tuple(copy.deepcopy(e) if isinstance(e, Mapping) else e for e in events),
                   content_type="text/event-stream", done=done)

    @classmethod
    def cut_stream(cls, after_chunks: int) -> ScriptedReply:
        """Start a normal 200 SSE stream, send ``after_chunks`` events, then half an event and drop the socket."""
        return cls(kind="cut_stream", after_chunks=max(0, int(after_chunks)))

    @classmethod
    def drop_connection(cls) -> ScriptedReply:
        """Close the socket without sending any response (the client sees a connection error)."""
        return cls(kind="drop")

    @classmethod
    def delay(cls, seconds: float, then: ScriptedReply | None = None) -> ScriptedReply:
        """Sleep before answering with ``then`` (or the default answer), to exercise client timeouts."""
        return cls(kind="delay", seconds=float(seconds), then=then)


def _merge_header_items(
    base: Mapping[str, str | None], extra: Mapping[str, str | None] | None
) -> tuple[tuple[str, str | None], ...]:
    merged = {k.lower(): v for k, v in base.items()}
    for k, v in (extra or {}).items():
        merged[k.lower()] = None if v is None else str(v)
    return tuple(merged.items())


def _normalize_tool_call(tc: Mapping[str, Any]) -> Mapping[str, Any]:
    fn = tc.get("function") if isinstance(tc.get("function"), Mapping) else tc
    args = fn.get("arguments", "{}")
    if not isinstance(args, str):
        args = json.dumps(args)
    return {"id": tc.get("id"), "name": fn.get("name", "tool"), "arguments": args}


# --------------------------------------------------------------------------- server


class OpenAIServer:
    """Local OpenAI-compatible server on a background thread."""

    def __init__(self, *, model_suffix: str = "-2024-08-06", chunk_delay: float = 0.0) -> None:
        self.model_suffix = model_suffix
        self.chunk_delay = chunk_delay
        self._lock = threading.Lock()
        self._queue: deque[ScriptedReply] = deque()
        self._requests: list[RecordedRequest] = []
        self._counter = 0
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._stopping = threading.Event()

    # lifecycle ---------------------------------------------------------------------------

    def start(self) -> OpenAIServer:
        """Bind 127.0.0.1 on a free port and serve on a daemon thread; no-op if already running."""
        if self._httpd is not None:
            return self
        self._stopping = threading.Event()
        httpd = _HTTPServer(("127.0.0.1", 0), _Handler, self)
        self._wake = socket.socketpair()
        self._httpd = httpd
        self._thread = threading.Thread(target=self._serve, args=(httpd, self._wake[0]),
                                        name=f"hilt-openai-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection; safe to call twice."""
        httpd, thread, wake = self._httpd, self._thread, self._wake
        if httpd is None:
            return
        self._stopping.set()
        if wake is not None:
            try:
                wake[1].send(b"x")
            except OSError:
                pass
        if thread is not None:
            thread.join(timeout=5)
        httpd.server_close()
        httpd.close_connections()
        if wake is not None:
            wake[0].close()
            wake[1].close()
        self._httpd = self._thread = self._wake = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @staticmethod
    def _serve(httpd: _HTTPServer, wake: socket.socket) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(httpd.socket, selectors.EVENT_READ)
            sel.register(wake, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    if key.fileobj is wake:
                        return
                    httpd._handle_request_noblock()  # accept + spawn a handler thread

    # addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound TCP port (the server must be started)."""
        if self._httpd is None:
            raise RuntimeError("OpenAIServer is not running; call start() or use it as a context manager")
        return int(self._httpd.server_address[1])

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:<port>``, e.g. for ``AzureOpenAI(azure_endpoint=...)``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``, for ``OpenAI(base_url=...)``."""
        return f"{self.root_url}/v1"

    # scripting & inspection ---------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest | None:
        """The most recent request, or None."""
        with self._lock:
            return self._requests[-1] if self._requests else None

    def enqueue(self, *replies: ScriptedReply) -> None:
        """Queue replies (FIFO): each of the next requests gets one instead of the default answer."""
        for reply in replies:
            if not isinstance(reply, ScriptedReply):
                raise TypeError(f"expected ScriptedReply, got {type(reply).__name__}")
        with self._lock:
            self._queue.extend(replies)

    def reset(self) -> None:
        """Forget queued replies and recorded requests, and restart the id counter at 1."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()
            self._counter = 0

    def _record(self, request: RecordedRequest) -> tuple[int, ScriptedReply | None]:
        with self._lock:
            self._requests.append(request)
            self._counter += 1
            return self._counter, (self._queue.popleft() if self._queue else None)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # tests may open many connections at once

    def __init__(self, address: tuple[str, int], handler: type, owner: OpenAIServer) -> None:
        self.owner = owner
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        with self._connections_lock:
            self._connections.add(sock)
        return sock, addr

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            conns = list(self._connections)
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # stay quiet: clients hanging up mid-stream is expected


class _Abort(Exception):
    """Raised inside the handler to stop answering and drop the connection."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes; avoid 40 ms delayed-ACK stalls
    server: _HTTPServer
    server_version = "hilt-openai-test"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    # plumbing ------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        owner = self.server.owner
        try:
            raw = self._read_body()
            split = urlsplit(self.path)
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            request = RecordedRequest(
                method=self.command,
                path=split.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                raw=raw,
                query=dict(parse_qsl(split.query, keep_blank_values=True)),
            )
            n, reply = owner._record(request)
            self._answer(request, n, reply)
        except (_Abort, OSError):
            self.close_connection = True
            self._hard_close()
        except Exception as exc:  # a bug here should surface as a 500, not a hung client
            self.close_connection = True
            try:
                self._send_json(500, _error_body(f"hilt test server error: {exc!r}", "server_error"), {})
            except OSError:
                pass

    def _hard_close(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _wait(self, seconds: float) -> None:
        if seconds > 0 and self.server.owner._stopping.wait(seconds):
            raise _Abort()

    def _base_headers(self, n: int, reply: ScriptedReply | None) -> dict[str, str | None]:
        headers: dict[str, str | None] = {"x-request-id": f"req_{n}", "openai-processing-ms": "1"}
        if reply is not None:
            headers.update(dict(reply.headers))
        return headers

    def _send_bytes(self, status: int, payload: bytes, content_type: str, headers: Mapping[str, str | None]) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(payload)))
        for k, v in headers.items():
            if v is not None and k not in ("content-type", "content-length"):
                self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _send_json(self, status: int, obj: Any, headers: Mapping[str, str | None]) -> None:
        ctype = headers.get("content-type") or "application/json"
        self._send_bytes(status, json.dumps(obj).encode("utf-8"), ctype, headers)

    def _start_sse(self, headers: Mapping[str, str | None]) -> None:
        self.send_response(200)
        self.send_header("content-type", headers.get("content-type") or "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        for k, v in headers.items():
            if v is not None and k not in ("content-type", "content-length", "transfer-encoding", "cache-control"):
                self.send_header(k, v)
        self.end_headers()

    def _write_chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _stream(self, events: Sequence[Any], headers: Mapping[str, str | None], done: bool) -> None:
        self._start_sse(headers)
        delay = self.server.owner.chunk_delay
        for i, event in enumerate(events):
            if i:
                self._wait(delay)
            self._write_chunk(_sse_bytes(event))
        if done:
            self._wait(delay)
            self._write_chunk(_sse_bytes(_DONE))
        self.wfile.write(b"0\r\n\r\n")

    # dispatch ------------------------------------------------------------------------------

    def _answer(self, request: RecordedRequest, n: int, reply: ScriptedReply | None) -> None:
        while reply is not None and reply.kind == "delay":
            self._wait(reply.seconds)
            reply = reply.then
        headers = self._base_headers(n, reply)
        kind = reply.kind if reply is not None else "default"
        if kind == "drop":
            raise _Abort()
        if kind in ("error", "json"):
            return self._send_json(reply.status, reply.body, headers)
        if kind == "raw":
            return self._send_bytes(reply.status, reply.body, reply.content_type, headers)
        if kind == "sse":
            return self._stream(reply.body, headers, done=reply.done)

        endpoint, deployment = _route(request.path)
        body = request.body if isinstance(request.body, dict) else {}
        handler = _ENDPOINTS.get((request.method, endpoint))
        if handler is None:
            if endpoint in {ep for _, ep in _ENDPOINTS}:
                return self._send_json(405, _error_body(f"Method {request.method} not allowed on /{endpoint}."),
                                       headers)
            return self._send_json(404, _error_body(f"Invalid URL ({request.method} {request.path})"), headers)
        if request.method == "POST" and not isinstance(request.body, dict):
            return self._send_json(400, _error_body("The request body must be a JSON object."), headers)
        model = body.get("model") or deployment
        if request.method == "POST" and not model:
            return self._send_json(400, _error_body("you must provide a model parameter", param="model"), headers)

        ctx = _Context(body=body, n=n, model=str(model or ""), suffix=self.server.owner.model_suffix,
                       reply=reply if kind == "chat" else None, created=int(time.time()))
        result = handler(ctx)
        if kind == "cut_stream":
            events = result.events if result.events is not None else [result.body]
            k = min(reply.after_chunks, max(len(events) - 1, 0))
            self._start_sse(headers)
            for i, event in enumerate(events[:k]):
                if i:
                    self._wait(self.server.owner.chunk_delay)
                self._write_chunk(_sse_bytes(event))
            cut = _sse_bytes(events[k] if events else {"partial": True})
            self._write_chunk(cut[: max(1, len(cut) // 2)])
            raise _Abort()
        if result.events is not None:
            return self._stream(result.events, headers, done=result.done)
        return self._send_json(200, result.body, headers)


def _sse_bytes(event: Any) -> bytes:
    if event is _DONE:
        return b"data: [DONE]\n\n"
    if isinstance(event, bytes):
        return event
    if isinstance(event, str):
        return f"data: {event}\n\n".encode("utf-8")
    if isinstance(event, _Named):
        return f"event: {event.name}\ndata: {json.dumps(event.data)}\n\n".encode("utf-8")
    return f"data: {json.dumps(event)}\n\n".encode("utf-8")


@dataclass
class _Named:
    """An SSE event with an ``event:`` line (the Responses API sends one per event)."""

    name: str
    data: dict[str, Any]


def _error_body(message: str, type: str = "invalid_request_error", param: str | None = None,  # noqa: A002
                code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _route(path: str) -> tuple[str, str | None]:
    """Map ``/v1/x``, ``/openai/x``, ``/openai/v1/x`` and ``/openai/deployments/<d>/x`` to ``(x, d)``."""
    path = path.rstrip("/")
    if path.startswith("/openai/deployments/"):
        deployment, _, rest = path[len("/openai/deployments/"):].partition("/")
        return rest, deployment or None
    for prefix in ("/openai/v1/", "/openai/", "/v1/"):
        if path.startswith(prefix):
            return path[len(prefix):], None
    return path.lstrip("/"), None


# --------------------------------------------------------------------------- answer generation


@dataclass
class _Context:
    body: dict[str, Any]
    n: int
    model: str
    suffix: str
    reply: ScriptedReply | None
    created: int

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def include_usage(self) -> bool:
        opts = self.body.get("stream_options")
        return isinstance(opts, dict) and bool(opts.get("include_usage"))

    def response_model(self) -> str:
        if self.reply is not None and self.reply.model is not None:
            return self.reply.model
        if not self.suffix or _DATE_SUFFIX.search(self.model) or self.model.endswith(self.suffix):
            return self.model
        return self.model + self.suffix


@dataclass
class _Result:
    body: Any = None
    events: list[Any] | None = None
    done: bool = True


@dataclass
class _Answer:
    text: str | None
    tool_calls: list[dict[str, str]]
    refusal: str | None
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def _words(text: str | None) -> int:
    return len(text.split()) if text else 0


def _text_of(content: Any) -> str:
    """Text of a message ``content``: a string, or the text parts of a list joined with a space."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return " ".join(parts)
    return ""


def _split_words(text: str) -> list[str]:
    """Split into word pieces that keep their trailing spaces, so ``"".join`` gives ``text`` back."""
    return [p for p in re.split(r"(?<=\s)(?=\S)", text) if p]


def _split_args(arguments: str) -> list[str]:
    """Split tool-call arguments into at least two pieces (when possible), as the real API streams them."""
    if len(arguments) < 2:
        return [arguments]
    size = max(1, min(8, math.ceil(len(arguments) / 2)))
    return [arguments[i:i + size] for i in range(0, len(arguments), size)]


def _fill_schema(schema: Any, text: str, root: Any, depth: int = 0) -> Any:
    """A value that satisfies a simple JSON schema: strings get ``text``, numbers 1, booleans true."""
    if not isinstance(schema, dict) or depth > 10:
        return text
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return _fill_schema(target, text, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            non_null = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return _fill_schema((non_null or options)[0], text, root, depth + 1)
    typ = schema.get("type")
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), "null")
    if typ == "object" or (typ is None and "properties" in schema):
        props = schema.get("properties") or {}
        return {name: _fill_schema(sub, text, root, depth + 1) for name, sub in props.items()}
    if typ == "array":
        return [_fill_schema(schema.get("items", {"type": "string"}), text, root, depth + 1)]
    if typ == "integer" or typ == "number":
        return 1
    if typ == "boolean":
        return True
    if typ == "null":
        return None
    return {
        "date-time": "2024-01-01T00:00:00Z", "date": "2024-01-01", "time": "00:00:00",
        "email": "user@example.com", "uri": "https://example.com", "uuid": "00000000-0000-4000-8000-000000000000",
    }.get(schema.get("format"), text)


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def _usage(default: dict[str, Any], override: bool | Mapping[str, Any], renames: Mapping[str, str],
           total_from: tuple[str, str]) -> dict[str, Any] | None:
    """Computed usage, dropped for ``False``, deep-merged with a dict (whose chat-style keys get renamed)."""
    if override is False:
        return None
    if not isinstance(override, Mapping):
        return default
    renamed = {renames.get(k, k): v for k, v in override.items()}
    merged = _deep_merge(default, renamed)
    if "total_tokens" not in renamed:
        merged["total_tokens"] = (merged.get(total_from[0]) or 0) + (merged.get(total_from[1]) or 0)
    return merged


def _apply_reply(answer: _Answer, reply: ScriptedReply | None, n: int) -> _Answer:
    """Overlay a ``ScriptedReply.chat`` on the default answer."""
    if reply is None:
        return answer
    if reply.text is not None or reply.tool_calls or reply.refusal is not None or reply.content_none:
        answer.text = None if reply.content_none else reply.text
        answer.refusal = reply.refusal
        answer.tool_calls = [
            {"id": tc.get("id") or (f"call_{n}" if i == 0 else f"call_{n}_{i}"), "name": tc["name"],
             "arguments": tc["arguments"]}
            for i, tc in enumerate(reply.tool_calls)
        ]
        answer.finish_reason = "tool_calls" if answer.tool_calls else "stop"
        answer.completion_tokens = (_words(answer.text) + _words(answer.refusal)
                                    + sum(_words(tc["arguments"]) for tc in answer.tool_calls))
    if reply.finish_reason is not None:
        answer.finish_reason = reply.finish_reason
    return answer


# chat completions ---------------------------------------------------------------------------

_CHAT_RENAMES: dict[str, str] = {}


def _chat_answer(ctx: _Context) -> _Answer:
    messages = [m for m in ctx.body.get("messages") or [] if isinstance(m, dict)]
    user_text = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    prompt_tokens = max(1, sum(_words(_text_of(m.get("content"))) for m in messages))
    tools = [t for t in ctx.body.get("tools") or [] if isinstance(t, dict)]
    fmt = ctx.body.get("response_format")
    fmt = fmt if isinstance(fmt, dict) else {}
    if tools and messages and messages[-1].get("role") == "user":
        tool = tools[0]
        spec = tool.get("function") if isinstance(tool.get("function"), dict) else tool.get(tool.get("type"), tool)
        name = spec.get("name", "tool") if isinstance(spec, dict) else "tool"
        args = json.dumps({"query": user_text})
        answer = _Answer(None, [{"id": f"call_{ctx.n}", "name": name, "arguments": args}], None, "tool_calls",
                         prompt_tokens, _words(args))
    else:
        if fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema") or {}
            text = json.dumps(_fill_schema(schema, user_text, schema))
        elif fmt.get("type") == "json_object":
            text = json.dumps({"echo": user_text})
        else:
            text = f"Echo: {user_text}"
        answer = _Answer(text, [], None, "stop", prompt_tokens, _words(text))
    return _apply_reply(answer, ctx.reply, ctx.n)


def _chat_usage(ctx: _Context, answer: _Answer) -> dict[str, Any] | None:
    default = {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }
    return _usage(default, ctx.reply.usage if ctx.reply else True, _CHAT_RENAMES,
                  ("prompt_tokens", "completion_tokens"))


def _chat(ctx: _Context) -> _Result:
    answer = _chat_answer(ctx)
    usage = _chat_usage(ctx, answer)
    model = ctx.response_model()
    head = {"id": f"chatcmpl-{ctx.n}", "object": "chat.completion", "created": ctx.created, "model": model}
    if not ctx.stream:
        message: dict[str, Any] = {"role": "assistant", "content": answer.text, "refusal": answer.refusal,
                                   "annotations": []}
        if answer.tool_calls:
            message["tool_calls"] = [
                {"id": tc["id"], "type": "function", "function": {"name": tc["name"], "arguments": tc["arguments"]}}
                for tc in answer.tool_calls
            ]
        body = {**head, "choices": [{"index": 0, "message": message, "logprobs": None,
                                     "finish_reason": answer.finish_reason}],
                "service_tier": "default", "system_fingerprint": _FINGERPRINT}
        if usage is not None:
            body["usage"] = usage
        return _Result(body=body)

    head = {**head, "object": "chat.completion.chunk", "service_tier": "default", "system_fingerprint": _FINGERPRINT}
    with_usage = ctx.include_usage and usage is not None

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        out = {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
        if with_usage:
            out["usage"] = None  # the real API sends usage: null on every chunk when include_usage is on
        return out

    first_content = "" if answer.text is not None else None
    events: list[Any] = [chunk({"role": "assistant", "content": first_content, "refusal": None})]
    events += [chunk({"content": piece}) for piece in _split_words(answer.text or "")]
    events += [chunk({"refusal": piece}) for piece in _split_words(answer.refusal or "")]
    for index, tc in enumerate(answer.tool_calls):
        events.append(chunk({"tool_calls": [{"index": index, "id": tc["id"], "type": "function",
                                             "function": {"name": tc["name"], "arguments": ""}}]}))
        events += [chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                   for piece in _split_args(tc["arguments"])]
    events.append(chunk({}, answer.finish_reason))
    if with_usage:
        events.append({**head, "choices": [], "usage": usage})
    return _Result(events=events)


# responses API ------------------------------------------------------------------------------

_RESPONSES_RENAMES = {
    "prompt_tokens": "input_tokens",
    "completion_tokens": "output_tokens",
    "prompt_tokens_details": "input_tokens_details",
    "completion_tokens_details": "output_tokens_details",
}


def _responses_input(body: dict[str, Any]) -> tuple[str, int]:
    """Last user text and the word count over all input (and instructions)."""
    items = body.get("input")
    texts: list[str] = [body["instructions"]] if isinstance(body.get("instructions"), str) else []
    user_text = ""
    if isinstance(items, str):
        texts.append(items)
        user_text = items
    elif isinstance(items, list):
        for item in items:
            if not isinstance(item, dict):
                continue
            if "content" in item:
                text = _text_of(item.get("content"))
                if item.get("role", "user") == "user":
                    user_text = text
            else:
                text = item.get("output") if isinstance(item.get("output"), str) else ""
            texts.append(text)
    return user_text, max(1, sum(_words(t) for t in texts))


def _responses(ctx: _Context) -> _Result:
    user_text, input_tokens = _responses_input(ctx.body)
    fmt = (ctx.body.get("text") or {}).get("format") if isinstance(ctx.body.get("text"), dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt.get("schema") or {}
        text = json.dumps(_fill_schema(schema, user_text, schema))
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        text = json.dumps({"echo": user_text})
    else:
        text = f"Echo: {user_text}"
    answer = _apply_reply(_Answer(text, [], None, "stop", input_tokens, _words(text)), ctx.reply, ctx.n)
    default_usage = {
        "input_tokens": answer.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": answer.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }
    usage = _usage(default_usage, ctx.reply.usage if ctx.reply else True, _RESPONSES_RENAMES,
                   ("input_tokens", "output_tokens"))
    incomplete = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(answer.finish_reason)

    msg_id = f"msg_{ctx.n}"
    items: list[dict[str, Any]] = []
    if answer.text is not None or answer.refusal is not None:
        content = []
        if answer.text is not None:
            content.append({"type": "output_text", "text": answer.text, "annotations": [], "logprobs": []})
        if answer.refusal is not None:
            content.append({"type": "refusal", "refusal": answer.refusal})
        items.append({"id": msg_id, "type": "message", "status": "incomplete" if incomplete else "completed",
                      "role": "assistant", "content": content})
    for i, tc in enumerate(answer.tool_calls):
        items.append({"id": f"fc_{ctx.n}_{i}", "type": "function_call", "status": "completed",
                      "call_id": tc["id"], "name": tc["name"], "arguments": tc["arguments"]})

    def response(status: str, output: list[dict[str, Any]], final_usage: dict[str, Any] | None) -> dict[str, Any]:
        b = ctx.body
        return {
            "id": f"resp_{ctx.n}", "object": "response", "created_at": ctx.created, "status": status,
            "background": False, "error": None,
            "incomplete_details": {"reason": incomplete} if incomplete and status == "incomplete" else None,
            "instructions": b.get("instructions"), "max_output_tokens": b.get("max_output_tokens"),
            "max_tool_calls": b.get("max_tool_calls"), "model": ctx.response_model(), "output": output,
            "parallel_tool_calls": b.get("parallel_tool_calls", True),
            "previous_response_id": b.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None}, "service_tier": "default",
            "store": b.get("store", True), "temperature": b.get("temperature", 1.0),
            "text": b.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": b.get("tool_choice", "auto"), "tools": b.get("tools") or [],
            "top_logprobs": b.get("top_logprobs", 0), "top_p": b.get("top_p", 1.0), "truncation": "disabled",
            "usage": final_usage, "user": b.get("user"), "metadata": b.get("metadata") or {},
        }

    final_status = "incomplete" if incomplete else "completed"
    if not ctx.stream:
        return _Result(body=response(final_status, items, usage))

    events: list[Any] = []

    def emit(kind: str, **data: Any) -> None:
        events.append(_Named(kind, {"type": kind, "sequence_number": len(events), **data}))

    emit("response.created", response=response("in_progress", [], None))
    emit("response.in_progress", response=response("in_progress", [], None))
    for out_index, item in enumerate(items):
        if item["type"] == "message":
            emit("response.output_item.added", output_index=out_index,
                 item={**item, "status": "in_progress", "content": []})
            for c_index, part in enumerate(item["content"]):
                where = {"item_id": item["id"], "output_index": out_index, "content_index": c_index}
                if part["type"] == "output_text":
                    emit("response.content_part.added", **where, part={**part, "text": ""})
                    for piece in _split_words(part["text"]):
                        emit("response.output_text.delta", **where, delta=piece, logprobs=[])
                    emit("response.output_text.done", **where, text=part["text"], logprobs=[])
                else:
                    emit("response.content_part.added", **where, part={**part, "refusal": ""})
                    for piece in _split_words(part["refusal"]):
                        emit("response.refusal.delta", **where, delta=piece)
                    emit("response.refusal.done", **where, refusal=part["refusal"])
                emit("response.content_part.done", **where, part=part)
        else:
            emit("response.output_item.added", output_index=out_index,
                 item={**item, "status": "in_progress", "arguments": ""})
            where = {"item_id": item["id"], "output_index": out_index}
            for piece in _split_args(item["arguments"]):
                emit("response.function_call_arguments.delta", **where, delta=piece)
            emit("response.function_call_arguments.done", **where, name=item["name"], arguments=item["arguments"])
        emit("response.output_item.done", output_index=out_index, item=item)
    emit(f"response.{final_status}", response=response(final_status, items, usage))
    return _Result(events=events, done=False)  # the Responses API sends no [DONE] sentinel


# embeddings ---------------------------------------------------------------------------------


def _vector(text: str, dims: int) -> list[float]:
    """A deterministic unit vector for ``text``, rounded to float32 so base64 and float encodings agree."""
    raw: list[float] = []
    block = 0
    while len(raw) < dims:
        digest = hashlib.sha256(f"{block}:{text}".encode("utf-8")).digest()
        raw += [int.from_bytes(digest[i:i + 4], "little") / 2**31 - 1.0 for i in range(0, 32, 4)]
        block += 1
    raw = raw[:dims]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return list(struct.unpack(f"<{dims}f", struct.pack(f"<{dims}f", *(v / norm for v in raw))))


def _embeddings(ctx: _Context) -> _Result:
    value = ctx.body.get("input")
    if isinstance(value, str):
        inputs: list[Any] = [value]
    elif isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        inputs = [value]  # a single token array
    elif isinstance(value, list):
        inputs = value
    else:
        inputs = []
    dims = ctx.body.get("dimensions")
    dims = dims if isinstance(dims, int) and dims > 0 else 8
    b64 = ctx.body.get("encoding_format") == "base64"
    data, tokens = [], 0
    for index, item in enumerate(inputs):
        if isinstance(item, list):
            text, tokens = " ".join(str(t) for t in item), tokens + len(item)
        else:
            text, tokens = str(item), tokens + _words(str(item))
        vec = _vector(text, dims)
        embedding: Any = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode("ascii") if b64 else vec
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = max(1, tokens)
    return _Result(body={"object": "list", "data": data, "model": ctx.model,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


# legacy completions -------------------------------------------------------------------------


def _completions(ctx: _Context) -> _Result:
    prompt = ctx.body.get("prompt")
    if isinstance(prompt, list):
        prompt = prompt[0] if prompt else ""
    prompt_text = prompt if isinstance(prompt, str) else " ".join(str(t) for t in prompt or [])
    text = f"Echo: {prompt_text}"
    answer = _apply_reply(_Answer(text, [], None, "stop", max(1, _words(prompt_text)), _words(text)),
                          ctx.reply, ctx.n)
    answer.text = answer.text or ""
    default_usage = {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
                     "total_tokens": answer.prompt_tokens + answer.completion_tokens}
    usage = _usage(default_usage, ctx.reply.usage if ctx.reply else True, {}, ("prompt_tokens", "completion_tokens"))
    head = {"id": f"cmpl-{ctx.n}", "object": "text_completion", "created": ctx.created,
            "model": ctx.response_model(), "system_fingerprint": _FINGERPRINT}
    if not ctx.stream:
        body = {**head, "choices": [{"text": answer.text, "index": 0, "logprobs": None,
                                     "finish_reason": answer.finish_reason}]}
        if usage is not None:
            body["usage"] = usage
        return _Result(body=body)

    def chunk(text: str, finish_reason: str | None = None) -> dict[str, Any]:
        return {**head, "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}]}

    events: list[Any] = [chunk(piece) for piece in _split_words(answer.text)]
    events.append(chunk("", answer.finish_reason))
    if ctx.include_usage and usage is not None:
        events.append({**head, "choices": [], "usage": usage})
    return _Result(events=events)


# models -------------------------------------------------------------------------------------


def _models(ctx: _Context) -> _Result:
    ids = ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "text-embedding-3-small", "gpt-3.5-turbo-instruct"]
    return _Result(body={"object": "list", "data": [
        {"id": m, "object": "model", "created": 1700000000, "owned_by": "system"} for m in ids]})


_ENDPOINTS = {
    ("POST", "chat/completions"): _chat,
    ("POST", "responses"): _responses,
    ("POST", "embeddings"): _embeddings,
    ("POST", "completions"): _completions,
    ("GET", "models"): _models,
}

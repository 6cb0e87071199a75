"""OpenAI SDK integration: every request through ``SyncAPIClient`` / ``AsyncAPIClient`` becomes a recorded call.

hilt wraps the SDK's single request choke point (``request``) and the step that receives the HTTP
response (``_process_response``) on the base client classes, so every surface is covered — chat,
Responses, embeddings, legacy completions, ``parse()``, the ``stream()`` helpers, ``with_raw_response``
and ``with_streaming_response`` — for ``OpenAI``, ``AsyncOpenAI``, ``AzureOpenAI`` and any
OpenAI-compatible server, including clients built before :func:`instrument`. Streams keep the SDK's
own class (a recording subclass), and their completion event is written however they end.
"""

from __future__ import annotations

import functools
import inspect
import re
import threading
import time
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, get_origin

import orjson

from .._emit import durable_handlers
from .._internal import report_failure
from .._recorder import run_inline, submit
from ..config import settings
from ..context import capture_scope
from ._calls import CallRecord, ResponseFacts, start_call
from ._content import prepare_text
from ._openai_payloads import KNOWN_OPERATIONS, operation_for, read_request, read_response, stream_state_for

__all__ = ["instrument", "is_instrumented", "uninstrument"]

PROVIDER = "openai"
AZURE_PROVIDER = "azure"

_lock = threading.Lock()
_patches: dict[tuple[type, str], tuple[Any, Any]] = {}  # (class, method) -> (original, hilt's wrapper)
_enabled = False  # False after uninstrument(): a wrapper left under another library's passes calls straight through
_active: ContextVar[_OpenAICall | None] = ContextVar("hilt_openai_call", default=None)
_stream_classes: dict[Any, type] = {}
_RESPONSE_SESSIONS_MAX = 10_000
_response_sessions: OrderedDict[str, str] = OrderedDict()  # Responses API id -> conversation id, this process
_sessions_lock = threading.Lock()
_SECRET_HEADER = re.compile(r"auth|key|token|secret|password|credential|cookie|signature", re.IGNORECASE)
_SECRET_PATTERN = re.compile(r"\b(sk-[A-Za-z0-9_\-*]{6,}|Bearer\s+\S+)")


class _OpenAICall:
    """The OpenAI side of one recorded call: its HTTP response, its stream state, and how it ends.

    The caller's thread only keeps references and clock readings here; reading the request and the
    response and writing the events are tasks for the recorder thread (:mod:`hilt._recorder`), or
    run at once when the caller needs the result right away (a ``track_costs()`` block, ``fsync``).
    """

    # Defaults live on the class, so starting a call sets only what every call has.
    record: CallRecord | None = None  # made by the first task, begin()
    state: Any = None  # the chunk accumulator of a stream
    status_code: int | None = None
    headers: Any = None  # of the final HTTP response
    attempts: int | None = None
    _response_ref: Any = None  # weak once the call returned: the caller's objects keep the response alive
    _response_hold: Any = None  # strong until then (the SDK drops a parsed response at once)
    in_next = False
    tee: list[bytes] | None = None  # body bytes seen through iter_bytes() (with_streaming_response)
    tee_active = False
    tee_done = False
    _watchers: tuple[Any, ...] = ()
    _hooks: tuple[tuple[str, Any], ...] = ()  # (name, hook) set in the response's __dict__, taken off at the end

    def __init__(self, client: Any, options: Any, stream: bool) -> None:
        self.started_ns = time.time_ns()
        self.started = time.perf_counter()
        self.client = client
        # The parts of the SDK's options the recorder reads, not the options: keeping the SDK's objects alive
        # past the call makes its next call allocate cold memory (measured: ~8 µs a call for the options, ~16
        # for the HTTP response, on the caller's thread).
        self.body = getattr(options, "json_data", None)
        self.extra_body = getattr(options, "extra_json", None)
        self.sent_headers = getattr(options, "headers", None)
        self.stream = stream = bool(stream)
        self.operation = operation_for(getattr(options, "url", "") or "")
        self.scope = scope = capture_scope()
        self.inline = bool(scope.trackers) or durable_handlers()
        self._end_token = [True]  # popped by the first ending (list.pop is atomic), so a call ends once
        if stream:
            self.state = stream_state_for(self.operation, self.started)

    @property
    def ended(self) -> bool:
        return not self._end_token

    def run(self, task: Any) -> None:
        if self.inline:
            run_inline(task)
        else:
            submit(task)

    def begin(self) -> None:
        """Task: read the request and write the prompt event."""
        self.record = _start_record(self)

    def end(self, finish: Any) -> None:
        """The call is over: note when, and queue ``finish(ended, ended_ns)`` (only the first ending counts)."""
        ended = time.perf_counter()
        try:
            self._end_token.pop()
        except IndexError:
            return
        ended_ns = time.time_ns()
        if self._hooks:
            self._unhook()
        if self._watchers:
            self._unwatch()  # now, not in the closing task: a finalizer left on would run when the caller drops the stream
        if self.state is not None:
            _compacting(self.state.end)  # hilt keeps no chunk object the caller lets go of (see compact_recent)

        def closing_task() -> None:
            try:
                finish(ended, ended_ns)
            finally:
                self._release()

        self.run(closing_task)

    # --- the HTTP response arrived ---------------------------------------------------------

    def on_http_response(self, response: Any, retries_taken: Any) -> None:
        """The final HTTP response arrived, after ``retries_taken`` retries inside the SDK."""
        self.status_code = response.status_code
        self.headers = response.headers
        self._response_hold = response
        if retries_taken.__class__ is int:
            self.attempts = retries_taken + 1
        if self.stream:
            response.__dict__["_hilt_call"] = self  # how the stream created from this response finds its call

    @property
    def http_response(self) -> Any:
        if self._response_hold is not None:
            return self._response_hold
        return self._response_ref() if self._response_ref is not None else None

    def returned(self, result: Any) -> None:
        """The SDK returned to the caller: finish now if the body is read, else when the response closes."""
        response = self._response_hold
        self._response_hold = None
        if response is None:
            self.end(lambda ended, ended_ns: self.complete(ResponseFacts(), ended, ended_ns))
            return
        if not self.stream:
            content = _content_if_read(response)
            if content is not _NOT_READ:  # the response itself is not kept (see __init__)
                self.end(lambda ended, ended_ns: self.complete_read(content, ended, ended_ns))
                return
        self._response_ref = weakref.ref(response)
        if self.ended:
            return  # nothing left to catch (and no hook would be taken off)
        recording = getattr(type(result), "__hilt_recording__", False)
        if not recording:
            self._maybe_tee(response)
        # The recording stream finishes the call itself (and is watched for abandonment); the hooks
        # catch closes made on the response (stream helpers, raw and streaming responses).
        self._finish_later(response, watch=not recording)

    def complete(self, facts: ResponseFacts, ended: float, ended_ns: int) -> None:
        """Task: write the completion; a Responses id is remembered so ``previous_response_id`` turns keep the conversation."""
        record = self.record
        if record is None:
            return  # the prompt could not be recorded (reported then)
        self._note_response(record)
        if self.operation == "responses" and facts.response_id and record.session_id:
            with _sessions_lock:
                _response_sessions[facts.response_id] = record.session_id
                while len(_response_sessions) > _RESPONSE_SESSIONS_MAX:
                    _response_sessions.popitem(last=False)
        record.emit_completion(facts, ended, ended_ns)

    def complete_read(self, content: bytes, ended: float, ended_ns: int) -> None:
        """Task: the completion of a call whose body the SDK has read (the common case)."""
        if _is_event_stream(self.headers):
            facts = self._facts_from_sse(content, completed=True)
        else:
            facts = self._facts_from_body(_parse_body(content))
        self.complete(facts, ended, ended_ns)

    def _note_response(self, record: CallRecord) -> None:
        record.status_code = self.status_code
        record.attempts = self.attempts
        if self.headers is not None:
            request_id = self.headers.get("x-request-id")
            record.request_id = request_id if isinstance(request_id, str) else None

    def _facts_from_body(self, body: Any) -> ResponseFacts:
        if body is None or self.operation not in KNOWN_OPERATIONS and not isinstance(body, Mapping):
            return ResponseFacts()
        return read_response(self.operation, body)

    def _finish_later(self, response: Any, watch: bool = True) -> None:
        """Hook the response's ``read``/``close`` (``aread``/``aclose`` for async clients) to write the
        completion when the caller is done; ``watch`` it for abandonment."""
        attributes = response.__dict__
        names = ("aread", "aclose") if isinstance(self.client, _async_client_class()) else ("read", "close")
        for name in names:
            if name not in attributes:
                original = getattr(response, name, None)
                if original is not None:
                    self._set_hook(attributes, name, self._then_finish(original, asynchronous=name[0] == "a"))
        if watch:
            self.watch(response)

    def _set_hook(self, attributes: dict[str, Any], name: str, hook: Any) -> None:
        """Put ``hook`` in the response's ``__dict__`` as ``name``, to be taken off by :meth:`_unhook`."""
        attributes[name] = hook
        self._hooks += ((name, hook),)

    def _unhook(self) -> None:
        """The call has ended: take hilt's hooks off the response. A hook holds the response's own bound
        method, a reference cycle that would keep the response, its body and the call alive until the
        garbage collector runs, where without hilt they are freed when the caller lets go."""
        hooks, self._hooks = self._hooks, ()
        response = self.http_response
        if response is not None:
            attributes = response.__dict__
            for name, hook in hooks:
                if attributes.get(name) is hook:  # not if someone has wrapped it since
                    del attributes[name]

    def _then_finish(self, original: Any, asynchronous: bool) -> Any:
        """``original`` (a bound method of the response), after which the call is finished if it can be.

        While it runs, ``in_next`` is set, so the ``close()`` that httpx calls at the end of a read
        waits for the body to be complete; the previous value is restored, so a close made on the
        way to a stream's end still leaves the finishing to the stream.
        """
        call = self

        if asynchronous:

            async def async_hooked(*args: Any, **kwargs: Any) -> Any:
                previous, call.in_next = call.in_next, True
                try:
                    return await original(*args, **kwargs)
                finally:
                    call.in_next = previous
                    call.on_http_closed()

            return async_hooked

        def hooked(*args: Any, **kwargs: Any) -> Any:
            previous, call.in_next = call.in_next, True
            try:
                return original(*args, **kwargs)
            finally:
                call.in_next = previous
                call.on_http_closed()

        return hooked

    def watch(self, owner: Any) -> None:
        """Finish the call as not completed if ``owner`` (the HTTP response or a stream) is garbage-collected first.

        The response lives as long as anything the caller holds (a raw response, a stream, a helper)."""
        if not self.ended:
            self._watchers += (weakref.finalize(owner, _finish_abandoned, self),)

    def _unwatch(self) -> None:
        """The call has ended: nothing is left to catch if its stream or response is abandoned."""
        watchers, self._watchers = self._watchers, ()
        for watcher in watchers:
            watcher.detach()

    def _release(self) -> None:
        """After the closing event: drop the chunks and body copies (nothing keeps the call alive longer
        than the caller's objects)."""
        self.state = None
        self.tee = None

    def _maybe_tee(self, response: Any) -> None:
        if self.operation in KNOWN_OPERATIONS:
            self._install_tee(response)  # a raw or streaming response: the caller may read its bytes directly

    def _install_tee(self, response: Any) -> None:
        """Keep a copy of the decoded body bytes the caller reads (``iter_lines``, ``iter_bytes``, proxies)."""
        call_ref = self
        attributes = response.__dict__
        if "iter_bytes" not in attributes:
            original_iter_bytes = response.iter_bytes

            def iter_bytes(chunk_size: int | None = None) -> Any:
                captured = call_ref.tee = []
                iterator = original_iter_bytes(chunk_size)
                while True:
                    call_ref.tee_active = True
                    try:
                        chunk = next(iterator)
                    except StopIteration:
                        call_ref.tee_done = True
                        break
                    finally:
                        call_ref.tee_active = False
                    captured.append(chunk)
                    yield chunk
                if not call_ref.in_next:
                    call_ref.on_http_closed()

            self._set_hook(attributes, "iter_bytes", iter_bytes)
        if "aiter_bytes" not in attributes and hasattr(response, "aiter_bytes"):
            original_aiter_bytes = response.aiter_bytes

            async def aiter_bytes(chunk_size: int | None = None) -> Any:
                captured = call_ref.tee = []
                iterator = original_aiter_bytes(chunk_size)
                while True:
                    call_ref.tee_active = True
                    try:
                        chunk = await iterator.__anext__()
                    except StopAsyncIteration:
                        call_ref.tee_done = True
                        break
                    finally:
                        call_ref.tee_active = False
                    captured.append(chunk)
                    yield chunk
                if not call_ref.in_next:
                    call_ref.on_http_closed()

            self._set_hook(attributes, "aiter_bytes", aiter_bytes)

    def _facts_from_sse(self, data: bytes, completed: bool) -> ResponseFacts:
        """Facts from raw server-sent-event bytes (a stream the caller read as bytes)."""
        state = stream_state_for(self.operation, self.started)
        if state is None:
            return ResponseFacts(stream_completed=completed)
        for line in data.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if not payload or payload == b"[DONE]":
                continue
            try:
                state.add(orjson.loads(payload))
            except orjson.JSONDecodeError:
                continue  # a torn last event of a cut stream
        facts = state.facts(completed=completed)
        facts.ttft_ms = None  # chunk times are unknown when the caller read raw bytes
        return facts

    def _facts_from_tee(self, captured: list[bytes]) -> ResponseFacts:
        data = b"".join(captured)
        if self.stream or _is_event_stream(self.headers):  # the final response's headers
            return self._facts_from_sse(data, completed=self.tee_done)
        return self._facts_from_body(_parse_body(data))

    def on_http_closed(self) -> None:
        if self.in_next or self.tee_active or self.ended:
            return  # a stream closes its response on the way to its end; the stream finishes the call
        try:
            response = self.http_response
            self.end(lambda ended, ended_ns: self._finish_closed(response, ended, ended_ns))
        except Exception as exc:
            report_failure("openai: finishing a call", exc)

    def _finish_closed(self, response: Any, ended: float, ended_ns: int) -> None:
        """Task: the completion of a call whose response was closed (read through, or given up on)."""
        state = self.state
        if state is not None and (state.chunks or not self.tee):
            facts = state.facts(completed=False)
        elif self.tee:
            facts = self._facts_from_tee(self.tee)
        else:
            content = _content_if_read(response) if response is not None else _NOT_READ
            facts = self._facts_from_body(None if content is _NOT_READ else _parse_body(content))
            if self.stream:
                facts.stream_completed = False
        self.complete(facts, ended, ended_ns)

    # --- streams -----------------------------------------------------------------------------

    def stream_ended(self, completed: bool) -> None:
        try:
            state = self.state
            self.end(lambda ended, ended_ns: self.complete(
                state.facts(completed) if state is not None else ResponseFacts(stream_completed=completed),
                ended, ended_ns,
            ))
        except Exception as exc:
            report_failure("openai: finishing a stream", exc)

    # --- failure -------------------------------------------------------------------------------

    def failed(self, exc: BaseException) -> None:
        """The call's exception is on its way to the caller: queue the error event."""
        try:
            response = self.http_response
            self.end(lambda ended, ended_ns: self._record_failure(exc, response, ended, ended_ns))
        except Exception as failure:
            report_failure("openai: recording an error", failure)

    def _record_failure(self, exc: BaseException, response: Any, ended: float, ended_ns: int) -> None:
        """Task: write the error event of a failed call."""
        record = self.record
        if record is None:
            return
        self._note_response(record)
        status = getattr(exc, "status_code", None)
        if isinstance(status, int):
            record.status_code = status
        request_id = getattr(exc, "request_id", None)
        if isinstance(request_id, str):
            record.request_id = request_id
        if record.attempts is None:
            record.attempts = _attempts_of(exc)
        code = getattr(exc, "code", None) or getattr(exc, "type", None)
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        error = {
            "type": type(exc).__name__,
            "code": code if isinstance(code, (str, int)) else None,
            # An API error message can quote the request, so it is content: redacted, capped, or
            # left out with capture_content=False (type, code and status stay).
            "message": prepare_text(self._scrub(str(message))),
        }
        partial = self.state.facts(completed=False) if self.state is not None else None
        if partial is None and response is not None and 200 <= response.status_code < 300:
            # A 2xx answer the SDK then rejected (e.g. parse()'s LengthFinishReasonError): it was billed.
            content = _content_if_read(response)
            body = None if content is _NOT_READ else _parse_body(content)
            if body is not None:
                partial = self._facts_from_body(body)
        record.emit_error(error, partial, ended, ended_ns)

    def _scrub(self, message: str) -> str:
        """Remove the API key, anything key- or token-shaped, and the values of secret-looking headers sent."""
        api_key = getattr(self.client, "api_key", None)
        secrets = [api_key] if isinstance(api_key, str) and api_key else []
        for headers in (getattr(self.client, "_custom_headers", None), self.sent_headers):
            if isinstance(headers, Mapping):
                secrets.extend(
                    value for name, value in headers.items()
                    if isinstance(name, str) and isinstance(value, str) and len(value) >= 8
                    and _SECRET_HEADER.search(name)
                )
        for secret in sorted(set(secrets), key=len, reverse=True):
            message = message.replace(secret, "[REDACTED]")
        return _SECRET_PATTERN.sub("[REDACTED]", message)


_NOT_READ = object()


def _attempts_of(exc: BaseException) -> int | None:
    """HTTP attempts of a failed call: the SDK numbers each try in the ``x-stainless-retry-count`` request header."""
    try:
        request = exc.request  # type: ignore[attr-defined]
        return int(request.headers["x-stainless-retry-count"]) + 1
    except Exception:
        return None


def _content_if_read(response: Any) -> Any:
    """The response body's bytes if it has been read, else ``_NOT_READ``."""
    try:
        return response.content
    except Exception:
        return _NOT_READ


def _parse_body(content: bytes) -> Any:
    """The parsed JSON body, or ``None`` when it is empty or not JSON."""
    if not content:
        return None
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


def _is_event_stream(headers: Any) -> bool:
    return headers is not None and "text/event-stream" in (headers.get("content-type") or "")


def _finish_abandoned(call: _OpenAICall) -> None:
    """A response or stream was garbage-collected before it ended: close the record as not completed."""
    if not call.ended:
        call.on_http_closed()


# --- starting a call ---------------------------------------------------------------------------


def _start_record(call: _OpenAICall) -> CallRecord | None:
    """Task: read the request the caller sent and write its prompt event."""
    client, body, extra = call.client, call.body, call.extra_body
    if isinstance(extra, Mapping) and extra:
        body = {**(body if isinstance(body, Mapping) else {}), **extra}
    provider = AZURE_PROVIDER if _is_azure(client) else PROVIDER
    facts = read_request(provider, call.operation, body, call.stream)
    previous = facts.extra.get("previous_response_id")
    if facts.session_id is None and previous is not None:
        facts.session_id = _response_sessions.get(previous)
    return start_call(facts, call.scope, call.started, call.started_ns)


@functools.lru_cache(maxsize=64)
def _is_azure_class(client_class: type) -> bool:
    return any(cls.__name__ in ("AzureOpenAI", "AsyncAzureOpenAI", "BaseAzureClient") for cls in client_class.__mro__)


@functools.lru_cache(maxsize=1)
def _async_client_class() -> type:
    from openai._base_client import AsyncAPIClient

    return AsyncAPIClient


def _is_azure(client: Any) -> bool:
    return _is_azure_class(type(client))


def _options_to_send(options: Any, call: _OpenAICall) -> Any:
    """With ``stream_usage``, a copy of ``options`` asking the stream for usage; the caller's data is never changed."""
    if not (settings.stream_usage and call.stream and call.operation in ("chat", "completions")):
        return options
    body = getattr(options, "json_data", None)
    if not isinstance(body, Mapping):
        return options
    stream_options = body.get("stream_options")
    if isinstance(stream_options, Mapping) and "include_usage" in stream_options:
        return options
    try:
        changed = options.model_copy()
        changed.json_data = {**body, "stream_options": {**(stream_options or {}), "include_usage": True}}
        return changed
    except Exception as exc:
        report_failure("openai: adding stream usage", exc)
        return options


# --- stream classes ----------------------------------------------------------------------------


def _recording_stream_class(stream_cls: Any) -> Any:
    """A subclass of the SDK's stream class that records chunks; ``isinstance(s, openai.Stream)`` still holds."""
    cached = _stream_classes.get(stream_cls)
    if cached is not None:
        return cached
    base = get_origin(stream_cls) or stream_cls
    if getattr(base, "__hilt_recording__", False):
        return stream_cls
    from openai import AsyncStream, Stream

    asynchronous = issubclass(base, AsyncStream)
    namespace = _async_stream_namespace(base) if asynchronous else _sync_stream_namespace(base)
    namespace["__hilt_recording__"] = True
    namespace["__module__"] = base.__module__
    namespace["__qualname__"] = base.__qualname__
    recording = types.new_class(base.__name__, (stream_cls,), {}, lambda ns: ns.update(namespace))
    _name_chunk_type(recording, stream_cls, AsyncStream if asynchronous else Stream)
    _stream_classes[stream_cls] = recording
    return recording


def _name_chunk_type(recording: Any, stream_cls: Any, sdk_base: Any) -> None:
    """Let the SDK find the chunk type in ``recording``, as it does in ``stream_cls``.

    The SDK reads it from the generic base its stream class names first (``Stream[Chunk]``). A caller's
    own generic subclass, given as ``MyStream[Chunk]``, makes that base ``MyStream[Chunk]`` in hilt's
    subclass, which the SDK does not look through (it raises). In that case ``Stream[Chunk]`` is added
    after it."""
    from openai._streaming import extract_stream_chunk_type

    chunk_type = extract_stream_chunk_type(stream_cls)
    try:
        if extract_stream_chunk_type(recording) is chunk_type:
            return
    except RuntimeError:
        pass
    recording.__orig_bases__ = (*recording.__dict__.get("__orig_bases__", ()), sdk_base[chunk_type])


def _call_of(stream: Any) -> _OpenAICall | None:
    response = getattr(stream, "response", None)
    return getattr(response, "__dict__", {}).get("_hilt_call") if response is not None else None


def _compacting(step: Callable[[], None]) -> None:
    try:
        step()
    except Exception as exc:
        report_failure("openai: compacting a stream's chunks", exc)


def _look_for_first_token(state: Any, item: Any) -> None:
    try:
        state.look_for_first_token(item)
    except Exception as exc:
        report_failure("openai: reading a stream chunk", exc)


def _sync_stream_namespace(base: type) -> dict[str, Any]:
    """``__next__`` that sees each chunk (``__iter__`` returns the stream itself, so ``for`` loops use it).

    A caller's subclass with its own ``__next__`` or ``__iter__`` keeps both: its chunk iterator is
    wrapped instead (:func:`_chunk_iterator_class`), so what it calls, and when, is as without hilt."""
    from openai import Stream

    base_next = base.__next__  # type: ignore[attr-defined]
    if base_next is not Stream.__next__ or base.__iter__ is not Stream.__iter__:  # type: ignore[attr-defined]
        return {"__init__": _stream_init(base, _chunk_iterator_class(asynchronous=False)), "_hilt_call": None}

    def __next__(self: Any) -> Any:
        call = self._hilt_call
        if call is None:
            return base_next(self)
        call.in_next = True
        try:
            item = self._iterator.__next__()  # the SDK's own __next__, inline: a Python call less per chunk
        except StopIteration:
            call.in_next = False
            call.stream_ended(completed=True)
            raise
        except BaseException as exc:
            call.in_next = False
            call.failed(exc)
            raise
        call.in_next = False
        state = call.state  # per chunk: an append, a length check; until the first token, a look at the chunk
        if state is not None:
            chunks = state.chunks
            chunks.append(item)
            if len(chunks) >= state.compact_at:
                _compacting(state.compact_recent)
            if state.first_token_at is None:
                _look_for_first_token(state, item)
        return item

    def __iter__(self: Any) -> Any:
        return self

    return {"__next__": __next__, "__iter__": __iter__, "__init__": _stream_init(base), "_hilt_call": None}


@functools.lru_cache(maxsize=2)
def _chunk_iterator_class(asynchronous: bool) -> type:
    """For a caller's own stream subclass: an iterator over its chunk iterator that records each chunk with
    the very ``__next__`` (``__anext__``) hilt gives the SDK's own stream classes (they read only
    ``_hilt_call`` and ``_iterator``)."""
    from openai import AsyncStream, Stream

    if asynchronous:
        methods = {name: _async_stream_namespace(AsyncStream)[name] for name in ("__anext__", "__aiter__")}
    else:
        methods = {name: _sync_stream_namespace(Stream)[name] for name in ("__next__", "__iter__")}

    def __init__(self: Any, call: _OpenAICall, iterator: Any) -> None:
        self._hilt_call, self._iterator = call, iterator

    return type("RecordingChunks", (), {"__slots__": ("_hilt_call", "_iterator"), "__init__": __init__, **methods})


def _stream_init(base: type, wrap: Callable[[_OpenAICall, Any], Any] | None = None) -> Any:
    """``__init__`` that links the stream to its call and watches it; ``wrap`` (for a caller's own subclass:
    :func:`_chunk_iterator_class`) replaces the stream's chunk iterator with a recording one."""
    base_init = base.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        base_init(self, *args, **kwargs)
        call = _call_of(self)
        if call is not None:
            try:
                if wrap is not None:
                    self._iterator = wrap(call, self._iterator)
                self._hilt_call = call
                call.watch(self)
            except Exception as exc:
                report_failure("openai: watching a stream", exc)

    return __init__


def _async_stream_namespace(base: type) -> dict[str, Any]:
    """``__anext__`` that sees each chunk (``__aiter__`` returns the stream, so ``async for`` uses it); a
    caller's subclass with its own ``__anext__`` or ``__aiter__`` has its iterator wrapped, as in the sync twin."""
    from openai import AsyncStream

    base_anext = base.__anext__  # type: ignore[attr-defined]
    if base_anext is not AsyncStream.__anext__ or base.__aiter__ is not AsyncStream.__aiter__:  # type: ignore[attr-defined]
        return {"__init__": _stream_init(base, _chunk_iterator_class(asynchronous=True)), "_hilt_call": None}

    async def __anext__(self: Any) -> Any:
        call = self._hilt_call
        if call is None:
            return await base_anext(self)
        call.in_next = True
        try:
            item = await self._iterator.__anext__()  # the SDK's own __anext__, inline, as in the sync twin
        except StopAsyncIteration:
            call.in_next = False
            call.stream_ended(completed=True)
            raise
        except BaseException as exc:
            call.in_next = False
            call.failed(exc)
            raise
        call.in_next = False
        state = call.state  # per chunk: an append, a length check; until the first token, a look at the chunk
        if state is not None:
            chunks = state.chunks
            chunks.append(item)
            if len(chunks) >= state.compact_at:
                _compacting(state.compact_recent)
            if state.first_token_at is None:
                _look_for_first_token(state, item)
        return item

    def __aiter__(self: Any) -> Any:
        return self

    return {"__anext__": __anext__, "__aiter__": __aiter__, "__init__": _stream_init(base), "_hilt_call": None}


# --- the patches -----------------------------------------------------------------------------


def _start(client: Any, options: Any, stream: bool, stream_cls: Any) -> tuple[_OpenAICall, Any, Any] | None:
    """For a call to record: its call, the options and stream class to send; ``None`` to pass it straight through.

    Runs on the caller's thread, so it only takes references and the time; reading the request and
    writing the prompt event is the recorder's first task for the call.
    """
    if not _enabled or _active.get() is not None:
        return None  # uninstrumented, or a request made inside a recorded one: never recorded twice
    try:
        call = _OpenAICall(client, options, stream)
        call.run(call.begin)
        if stream_cls is not None:
            stream_cls = _stream_classes.get(stream_cls) or _safe_stream_class(stream_cls)
        if settings.stream_usage:
            options = _options_to_send(options, call)
        return call, options, stream_cls
    except Exception as exc:
        report_failure("openai: reading a request", exc)
        return None


def _wrap_sync_request(original: Any) -> Any:
    @functools.wraps(original)
    def request(self: Any, cast_to: Any, options: Any, *, stream: bool = False, stream_cls: Any = None) -> Any:
        started = _start(self, options, stream, stream_cls)
        if started is None:
            return original(self, cast_to, options, stream=stream, stream_cls=stream_cls)
        call, sent_options, sent_stream_cls = started
        token = _active.set(call)
        try:
            result = original(self, cast_to, sent_options, stream=stream, stream_cls=sent_stream_cls)
        except BaseException as exc:
            call.failed(exc)
            raise
        finally:
            _active.reset(token)
        _safe_returned(call, result)
        return result

    return request


def _wrap_async_request(original: Any) -> Any:
    @functools.wraps(original)
    async def request(self: Any, cast_to: Any, options: Any, *, stream: bool = False, stream_cls: Any = None) -> Any:
        started = _start(self, options, stream, stream_cls)
        if started is None:
            return await original(self, cast_to, options, stream=stream, stream_cls=stream_cls)
        call, sent_options, sent_stream_cls = started
        token = _active.set(call)
        try:
            result = await original(self, cast_to, sent_options, stream=stream, stream_cls=sent_stream_cls)
        except BaseException as exc:
            call.failed(exc)
            raise
        finally:
            _active.reset(token)
        _safe_returned(call, result)
        return result

    return request


def _see_response(kwargs: dict[str, Any]) -> None:
    call = _active.get()
    if call is not None:
        try:
            call.on_http_response(kwargs["response"], kwargs.get("retries_taken"))
        except Exception as exc:
            report_failure("openai: _process_response", exc)


def _wrap_process_response(original: Any) -> Any:
    """Sees the HTTP response of the final attempt (status, headers, retries) before the SDK parses it."""
    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def async_process_response(self: Any, *args: Any, **kwargs: Any) -> Any:
            _see_response(kwargs)
            return await original(self, *args, **kwargs)

        return async_process_response

    @functools.wraps(original)
    def process_response(self: Any, *args: Any, **kwargs: Any) -> Any:
        _see_response(kwargs)
        return original(self, *args, **kwargs)

    return process_response


def _safe_stream_class(stream_cls: Any) -> Any:
    try:
        return _recording_stream_class(stream_cls)
    except Exception as exc:
        report_failure("openai: wrapping a stream class", exc)
        return stream_cls


def _safe_returned(call: _OpenAICall, result: Any) -> None:
    try:
        call.returned(result)
    except Exception as exc:
        report_failure("openai: recording a completion", exc)


# --- instrument / uninstrument -----------------------------------------------------------------


def _targets() -> list[tuple[type, str, Any]]:
    from openai._base_client import AsyncAPIClient, SyncAPIClient

    return [
        (SyncAPIClient, "request", _wrap_sync_request),
        (SyncAPIClient, "_process_response", _wrap_process_response),
        (AsyncAPIClient, "request", _wrap_async_request),
        (AsyncAPIClient, "_process_response", _wrap_process_response),
    ]


def instrument() -> None:
    """Patch the OpenAI SDK (idempotent: a second call changes nothing)."""
    global _enabled
    with _lock:
        targets = _targets()
        missing = [f"{cls.__name__}.{name}" for cls, name, _wrap in targets if name not in cls.__dict__]
        if missing:  # all or nothing: a half-patched SDK would record nothing and might not come undone
            raise RuntimeError(f"this openai SDK has no {', '.join(missing)} to patch; nothing was patched")
        for cls, name, wrap in targets:
            if (cls, name) in _patches:
                continue  # still in place (perhaps under another library's wrapper): just enable it again
            original = cls.__dict__[name]
            wrapper = wrap(original)
            setattr(cls, name, wrapper)
            _patches[(cls, name)] = (original, wrapper)
        _enabled = True


def uninstrument() -> None:
    """Put the SDK's own methods back, exactly as they were.

    If another library has wrapped hilt's wrapper since, removing ours would remove theirs too;
    hilt's wrapper then stays underneath as a plain pass-through that records nothing.
    """
    global _enabled
    with _lock:
        _enabled = False
        for (cls, name), (original, wrapper) in list(_patches.items()):
            if cls.__dict__.get(name) is wrapper:
                setattr(cls, name, original)
                del _patches[(cls, name)]


def is_instrumented() -> bool:
    return _enabled

"""Reading OpenAI wire payloads: request bodies into `RequestFacts`, responses and stream chunks into `ResponseFacts`.

Works on plain dicts (JSON bodies) and on the SDK's models alike (:func:`_get`), and never
raises on an odd shape: a missing part is recorded as ``None``.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from ._calls import RequestFacts, ResponseFacts

__all__ = [
    "ChatStreamState",
    "CompletionsStreamState",
    "ResponsesStreamState",
    "operation_for",
    "read_request",
    "read_response",
    "stream_state_for",
]

_OPERATIONS = (
    ("/chat/completions", "chat"),
    ("/responses", "responses"),
    ("/embeddings", "embeddings"),
    ("/completions", "completions"),
    ("/images/generations", "images"),
    ("/images/edits", "images"),
    ("/moderations", "moderations"),
    ("/audio/transcriptions", "audio.transcriptions"),
    ("/audio/translations", "audio.translations"),
    ("/audio/speech", "audio.speech"),
)
#: Operations whose bodies hilt understands; any other endpoint gets a generic event.
KNOWN_OPERATIONS = frozenset({"chat", "responses", "embeddings", "completions"})

#: Sampling and format parameters recorded under ``extensions.request`` (never headers or unknown keys).
REQUEST_PARAMETERS = (
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "max_output_tokens", "seed", "n", "stop",
    "frequency_penalty", "presence_penalty", "logprobs", "top_logprobs", "response_format", "tool_choice",
    "parallel_tool_calls", "reasoning_effort", "reasoning", "service_tier", "stream_options", "text",
    "truncation", "store", "dimensions", "encoding_format", "top_k", "min_p", "repetition_penalty",
    "modalities", "verbosity", "size", "quality", "background",
)


_MISSING = object()


def _get(obj: Any, key: str) -> Any:
    """``obj[key]`` for dicts, ``obj.key`` for SDK models, ``None`` when absent (fast: runs per stream chunk)."""
    if obj is None:
        return None
    if obj.__class__ is dict:
        return obj.get(key)
    value = getattr(obj, key, _MISSING)
    if value is not _MISSING:
        return value
    return obj.get(key) if isinstance(obj, Mapping) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@functools.lru_cache(maxsize=256)
def operation_for(url: str) -> str:
    """The operation name for a request path (``/chat/completions`` → ``chat``); unknown paths keep their path."""
    path = url.split("?", 1)[0].rstrip("/")
    for suffix, operation in _OPERATIONS:
        if path.endswith(suffix):
            return operation
    segments = [segment for segment in path.split("/") if segment and segment not in ("v1", "openai")]
    return segments[0] if segments else "unknown"


def _text_of(content: Any) -> str | None:
    """The text of a message ``content``: the string itself, or its text parts joined with newlines."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            part.get("text") for part in content
            if isinstance(part, Mapping) and part.get("type") in ("text", "input_text", "output_text")
            and isinstance(part.get("text"), str)
        ]
        return "\n".join(texts) if texts else None
    return None


def _last_user_text(messages: list[Any]) -> str | None:
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return None


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return "\n".join(value)
    return None


def _responses_messages(body: Mapping[str, Any]) -> list[Any]:
    messages: list[Any] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        messages.append({"role": "system", "content": instructions})
    given = body.get("input")
    if isinstance(given, str):
        messages.append({"role": "user", "content": given})
    elif isinstance(given, list):
        messages.extend(given)
    return messages


def read_request(provider: str, operation: str, body: Mapping[str, Any] | None, stream: bool) -> RequestFacts:
    """The facts of a request body; ``body`` may be ``None`` (multipart uploads, GETs)."""
    body = body if isinstance(body, Mapping) else {}
    model = body.get("model")
    facts = RequestFacts(
        provider=provider,
        operation=operation,
        model=model if isinstance(model, str) else None,
        stream=bool(stream),
        request={key: body[key] for key in REQUEST_PARAMETERS if key in body},
    )
    if operation == "chat":
        messages = body.get("messages")
        if isinstance(messages, list):
            facts.messages = messages
            facts.text = _last_user_text(messages)
            facts.conversation_key = messages
        tools = body.get("tools") or body.get("functions")
        if tools:
            facts.tools = tools
    elif operation == "responses":
        messages = _responses_messages(body)
        facts.messages = messages
        given = body.get("input")
        facts.text = given if isinstance(given, str) else _last_user_text(messages)
        facts.conversation_key = messages
        if body.get("tools"):
            facts.tools = body["tools"]
        conversation = body.get("conversation")
        conversation_id = conversation if isinstance(conversation, str) else _get(conversation, "id")
        if isinstance(conversation_id, str):
            facts.session_id = conversation_id
        previous = body.get("previous_response_id")
        if isinstance(previous, str):
            facts.extra["previous_response_id"] = previous
    elif operation == "embeddings":
        facts.text = _as_text(body.get("input"))
        facts.conversation_key = [{"role": "user", "content": body.get("input")}]
    elif operation == "completions":
        facts.text = _as_text(body.get("prompt"))
        facts.conversation_key = [{"role": "user", "content": body.get("prompt")}]
    elif operation == "images":
        facts.text = _as_text(body.get("prompt"))
        facts.conversation_key = [{"role": "user", "content": body.get("prompt")}]
    return facts


def _chat_usage(usage: Any) -> dict[str, int | None]:
    prompt = _int(_get(usage, "prompt_tokens"))
    completion = _int(_get(usage, "completion_tokens"))
    total = _int(_get(usage, "total_tokens"))
    return {
        "prompt": prompt,
        "completion": completion,
        "total": total,
        "cached": _int(_get(_get(usage, "prompt_tokens_details"), "cached_tokens")),
        "reasoning": _int(_get(_get(usage, "completion_tokens_details"), "reasoning_tokens")),
    }


def _responses_usage(usage: Any) -> dict[str, int | None]:
    return {
        "prompt": _int(_get(usage, "input_tokens")),
        "completion": _int(_get(usage, "output_tokens")),
        "total": _int(_get(usage, "total_tokens")),
        "cached": _int(_get(_get(usage, "input_tokens_details"), "cached_tokens")),
        "reasoning": _int(_get(_get(usage, "output_tokens_details"), "reasoning_tokens")),
    }


def _tool_call(call: Any) -> dict[str, Any]:
    function = _get(call, "function")
    return {"id": _get(call, "id"), "name": _get(function, "name"), "arguments": _get(function, "arguments")}


def _apply_usage(facts: ResponseFacts, usage: Any, responses_api: bool) -> None:
    if usage is None:
        return
    facts.tokens = _responses_usage(usage) if responses_api else _chat_usage(usage)
    facts.usage_reported = True


def _read_chat(body: Any, facts: ResponseFacts) -> None:
    choices = _get(body, "choices") or []
    choice = choices[0] if choices else None
    message = _get(choice, "message")
    facts.text = _text_of(_get(message, "content"))
    calls = [_tool_call(call) for call in _get(message, "tool_calls") or []]
    legacy = _get(message, "function_call")
    if legacy is not None:
        calls.append({"id": None, "name": _get(legacy, "name"), "arguments": _get(legacy, "arguments")})
    facts.tool_calls = calls or None
    facts.refusal = _get(message, "refusal")
    facts.finish_reason = _get(choice, "finish_reason")
    _apply_usage(facts, _get(body, "usage"), responses_api=False)


def _read_responses(body: Any, facts: ResponseFacts) -> None:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    refusals: list[str] = []
    for item in _get(body, "output") or []:
        kind = _get(item, "type")
        if kind == "message":
            for part in _get(item, "content") or []:
                part_type = _get(part, "type")
                if part_type == "output_text" and isinstance(_get(part, "text"), str):
                    texts.append(_get(part, "text"))
                elif part_type == "refusal" and isinstance(_get(part, "refusal"), str):
                    refusals.append(_get(part, "refusal"))
        elif kind == "function_call":
            calls.append({"id": _get(item, "call_id"), "name": _get(item, "name"), "arguments": _get(item, "arguments")})
    facts.text = "".join(texts) if texts else None
    facts.tool_calls = calls or None
    facts.refusal = "".join(refusals) if refusals else None
    status = _get(body, "status")
    reason = _get(_get(body, "incomplete_details"), "reason")
    facts.finish_reason = reason if isinstance(reason, str) else status
    _apply_usage(facts, _get(body, "usage"), responses_api=True)


def _read_completions(body: Any, facts: ResponseFacts) -> None:
    choices = _get(body, "choices") or []
    choice = choices[0] if choices else None
    facts.text = _get(choice, "text")
    facts.finish_reason = _get(choice, "finish_reason")
    _apply_usage(facts, _get(body, "usage"), responses_api=False)


def read_response(operation: str, body: Any) -> ResponseFacts:
    """The facts of a response body (a dict or an SDK model) for ``operation``."""
    facts = ResponseFacts()
    if body is None:
        return facts
    model = _get(body, "model")
    facts.response_model = model if isinstance(model, str) else None
    response_id = _get(body, "id")
    facts.response_id = response_id if isinstance(response_id, str) else None
    if operation == "chat":
        _read_chat(body, facts)
    elif operation == "responses":
        _read_responses(body, facts)
    elif operation == "embeddings":
        _apply_usage(facts, _get(body, "usage"), responses_api=False)
        facts.tokens["completion"] = None  # embeddings produce no completion tokens
        data = _get(body, "data")
        if isinstance(data, list):
            facts.extra["embeddings"] = len(data)
    elif operation == "completions":
        _read_completions(body, facts)
    else:
        _apply_usage(facts, _get(body, "usage"), responses_api=False)
    return facts


# --- streams --------------------------------------------------------------------------------


class _StreamState:
    """Keeps a stream's chunks (per chunk on the caller's thread: an append, a length check and, until the
    first token, a look at the chunk). Chat streams are compacted as they go: see :meth:`compact_recent`."""

    #: The length of :attr:`chunks` at which :meth:`compact_recent` is due (never, unless a subclass compacts).
    compact_at: int = sys.maxsize

    def __init__(self, started: float) -> None:
        self.started = started
        self.chunks: list[Any] = []
        self.first_token_at: float | None = None

    def add(self, chunk: Any) -> None:
        self.chunks.append(chunk)
        if self.first_token_at is None:
            self.look_for_first_token(chunk)

    def compact_recent(self) -> None:
        """Compact the chunks kept whole since the last compaction (nothing to do unless a subclass compacts).

        The caller's thread calls it when ``len(chunks) >= compact_at`` and when the stream ends, while those
        chunks are still in its CPU cache: the chunk objects the caller drops are then freed on its thread
        at once, as without hilt, not later by the recorder after the caller has allocated fresh memory."""
        self._compact_since_last(ending=False)

    def end(self) -> None:
        """The stream has ended: compact what is left, once. From now on the recorder reads the chunks, so
        nothing compacts them again (a chunk the caller still pulls after a close is only appended)."""
        self._compact_since_last(ending=True)

    def _compact_since_last(self, ending: bool) -> None:
        if self.compact_at == sys.maxsize:
            return  # a state that does not compact, or a stream that has ended
        with _compaction_lock:  # after a compaction in progress on another thread (a close there)
            if self.compact_at != sys.maxsize:
                self.compact(self.compact_at - COMPACT_EVERY, len(self.chunks))
                self.compact_at = sys.maxsize if ending else len(self.chunks) + COMPACT_EVERY

    def compact(self, start: int, end: int) -> None:
        """Compact ``chunks[start:end]`` (a subclass that keeps less than whole chunks says how)."""

    def look_for_first_token(self, chunk: Any) -> None:
        """Note the time if ``chunk`` is the first to carry output (text, a tool call, a refusal)."""
        if self._carries_output(chunk):
            self.first_token_at = time.perf_counter()

    def _carries_output(self, chunk: Any) -> bool:
        raise NotImplementedError

    def facts(self, completed: bool) -> ResponseFacts:
        facts = self._read()
        facts.stream_completed = completed
        if self.first_token_at is not None:
            facts.ttft_ms = round((self.first_token_at - self.started) * 1000.0, 3)
        return facts

    def _read(self) -> ResponseFacts:
        raise NotImplementedError


def _first_choices(chunk: Any, facts: ResponseFacts) -> list[Any]:
    """Take a chunk's model, id and usage into ``facts``; return its choices for index 0 (hilt records n=1)."""
    facts.response_model = _get(chunk, "model") or facts.response_model
    facts.response_id = _get(chunk, "id") or facts.response_id
    usage = _get(chunk, "usage")
    if usage is not None:
        _apply_usage(facts, usage, responses_api=False)
    return [choice for choice in _get(chunk, "choices") or [] if (_get(choice, "index") or 0) == 0]


def _merge_tool_calls(delta: Any, calls: dict[int, dict[str, Any]]) -> None:
    """Merge one delta's tool-call fragments into ``calls`` by index (a legacy function_call is index -1)."""
    for call in _get(delta, "tool_calls") or []:
        index = _get(call, "index") or 0
        merged = calls.setdefault(index, {"id": None, "name": None, "arguments": ""})
        merged["id"] = _get(call, "id") or merged["id"]
        function = _get(call, "function")
        merged["name"] = _get(function, "name") or merged["name"]
        merged["arguments"] += _get(function, "arguments") or ""
    legacy = _get(delta, "function_call")
    if legacy is not None:
        merged = calls.setdefault(-1, {"id": None, "name": None, "arguments": ""})
        merged["name"] = _get(legacy, "name") or merged["name"]
        merged["arguments"] += _get(legacy, "arguments") or ""


#: Chat stream chunks kept whole between two compactions (see :meth:`_StreamState.compact_recent`).
COMPACT_EVERY = 64
#: Held while a stream's chunks are compacted: a stream closed on another thread while its caller's thread
#: compacts waits for that compaction (every 64 chunks and at the end: no contention to speak of).
_compaction_lock = threading.Lock()


def _text_only(chunk: Any) -> str | None:
    """The text of a chat chunk that carries nothing else (one choice, index 0, no finish reason, usage,
    tool call, refusal or function call), else ``None``: such a chunk can be kept as its text.

    Reads the models' ``__dict__`` (where pydantic keeps their fields): an attribute of a pydantic model
    goes through its ``__getattr__`` hook, about three times a plain attribute, and this runs for every
    chunk on the caller's thread. A shape without those fields (a dict, another SDK version) is kept whole."""
    try:
        fields = chunk.__dict__
        choices = fields["choices"]
        if fields["usage"] is not None or len(choices) != 1:
            return None
        choice = choices[0].__dict__
        delta = choice["delta"].__dict__
        content = delta["content"]
        if (content.__class__ is str and choice["index"] == 0 and choice["finish_reason"] is None
                and delta["tool_calls"] is None and delta["refusal"] is None and delta["function_call"] is None):
            return content
    except Exception:
        pass  # a dict or an odd shape: kept whole, for the careful reader
    return None


def _first_content(chunks: list[Any]) -> str | None:
    """``""`` when the stream sent only empty content deltas (as the slow reader reports), else ``None``."""
    for chunk in chunks:
        if chunk.__class__ is str:
            return ""
        for choice in chunk.choices:
            if choice.index == 0 and choice.delta.content is not None:
                return ""
    return None


class ChatStreamState(_StreamState):
    """Merges ``chat.completion.chunk`` deltas: text, tool calls by index, refusal, finish reason, usage."""

    def _carries_output(self, chunk: Any) -> bool:
        choices = _get(chunk, "choices")
        if not choices:
            return False
        delta = _get(choices[0], "delta")
        return bool(_get(delta, "content") or _get(delta, "tool_calls") or _get(delta, "refusal"))

    compact_at = 1 + COMPACT_EVERY  # the first chunk stays whole: it carries the model and id

    def compact(self, start: int, end: int) -> None:
        """Replace each run of chunks in ``chunks[start:end]`` that only carry text by one string, their text
        joined, so the chunks are freed while the stream goes on (a parsed chunk holds about 2.4 KB; its text
        about 65 bytes, less once joined, and its own small string goes with the chunk)."""
        chunks = self.chunks
        kept: list[Any] = []
        texts: list[str] = []
        for chunk in chunks[start:end]:
            text = _text_only(chunk)
            if text is not None:
                texts.append(text)
                continue
            if texts:
                kept.append("".join(texts))
                texts = []
            kept.append(chunk)
        if texts:
            kept.append("".join(texts))
        chunks[start:end] = kept

    def _read(self) -> ResponseFacts:
        chunks = self.chunks
        if chunks and chunks[0].__class__ is not dict:
            try:
                return self._read_models(chunks)
            except AttributeError:
                pass  # an odd chunk shape: the careful reader below copes with anything
        return self._read_any(chunks)

    @staticmethod
    def _read_models(chunks: list[Any]) -> ResponseFacts:
        """The fast path for the SDK's chunk models: plain attribute access, text parts joined once."""
        facts = ResponseFacts()
        texts: list[str] = []
        refusals: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        usage = None
        for chunk in chunks:
            if chunk.__class__ is str:
                if chunk:
                    texts.append(chunk)
                continue
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.index != 0:
                    continue
                delta = choice.delta
                if delta.content:
                    texts.append(delta.content)
                if delta.refusal:
                    refusals.append(delta.refusal)
                if delta.tool_calls or delta.function_call is not None:
                    _merge_tool_calls(delta, calls)
                if choice.finish_reason is not None:
                    facts.finish_reason = choice.finish_reason
        first = chunks[0]
        facts.response_model = first.model
        facts.response_id = first.id
        if usage is not None:
            _apply_usage(facts, usage, responses_api=False)
        facts.text = "".join(texts) if texts else (None if not chunks else _first_content(chunks))
        facts.refusal = "".join(refusals) if refusals else None
        facts.tool_calls = [calls[index] for index in sorted(calls)] or None
        return facts

    def _read_any(self, chunks: list[Any]) -> ResponseFacts:
        facts = ResponseFacts()
        texts: list[str] = []
        refusals: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        for chunk in chunks:
            if isinstance(chunk, str):
                texts.append(chunk)
                continue
            for choice in _first_choices(chunk, facts):
                delta = _get(choice, "delta")
                content = _get(delta, "content")
                if isinstance(content, str):
                    texts.append(content)
                refusal = _get(delta, "refusal")
                if isinstance(refusal, str):
                    refusals.append(refusal)
                _merge_tool_calls(delta, calls)
                reason = _get(choice, "finish_reason")
                if reason is not None:
                    facts.finish_reason = reason
        facts.text = "".join(texts) if texts else None
        facts.refusal = "".join(refusals) if refusals else None
        facts.tool_calls = [calls[index] for index in sorted(calls)] or None
        return facts


class CompletionsStreamState(_StreamState):
    """Merges legacy ``text_completion`` chunks."""

    def _carries_output(self, chunk: Any) -> bool:
        choices = _get(chunk, "choices")
        return bool(choices and _get(choices[0], "text"))

    def _read(self) -> ResponseFacts:
        facts = ResponseFacts()
        texts: list[str] = []
        for chunk in self.chunks:
            for choice in _first_choices(chunk, facts):
                if isinstance(_get(choice, "text"), str):
                    texts.append(_get(choice, "text"))
                if _get(choice, "finish_reason") is not None:
                    facts.finish_reason = _get(choice, "finish_reason")
        facts.text = "".join(texts) if texts else None
        return facts


_FINAL_RESPONSE_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponsesStreamState(_StreamState):
    """Reads Responses API stream events: the final response when it arrived, else the text deltas so far."""

    def _carries_output(self, chunk: Any) -> bool:
        return _get(chunk, "type") in ("response.output_text.delta", "response.function_call_arguments.delta")

    def _read(self) -> ResponseFacts:
        final = None
        latest = None
        texts: list[str] = []
        for event in self.chunks:
            kind = _get(event, "type")
            if kind == "response.output_text.delta" and isinstance(_get(event, "delta"), str):
                texts.append(_get(event, "delta"))
            elif kind in _FINAL_RESPONSE_EVENTS:
                final = _get(event, "response")
            elif kind in ("response.created", "response.in_progress"):
                latest = _get(event, "response")
        if final is not None:
            return read_response("responses", final)
        facts = read_response("responses", latest) if latest is not None else ResponseFacts()
        facts.text = "".join(texts) if texts else None
        return facts


def stream_state_for(operation: str, started: float) -> _StreamState | None:
    """The chunk accumulator for a streamed ``operation``, or ``None`` when hilt does not read its chunks."""
    if operation == "chat":
        return ChatStreamState(started)
    if operation == "responses":
        return ResponsesStreamState(started)
    if operation == "completions":
        return CompletionsStreamState(started)
    return None

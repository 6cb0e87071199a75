"""Streams: the four ways a stream ends, chunks untouched, usage, ttft and tool-call deltas."""

from __future__ import annotations

import asyncio
import copy
import gc
import sys
import threading
import weakref
from typing import Any, TypeVar

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

import hilt
from hilt import _recorder
from hilt.pricing import cost_usd
from hilt.testing import ScriptedReply
from test_openai_support import (  # noqa: F401 - fixtures
    STREAM_CUT_ERROR,
    NULL_TOKENS,
    aclient,
    client,
    fresh_server,
    one_call,
    read_events,
    server,
    without,
)

_Chunk = TypeVar("_Chunk")
MESSAGES = [{"role": "user", "content": "one two three four five"}]
ANSWER = "Echo: one two three four five"
# the server streams: a role chunk (content ""), then "Echo: ", "one ", "two ", ... then a finish chunk
AFTER_TWO_CHUNKS = "Echo: "
AFTER_THREE_CHUNKS = "Echo: one "


def _stream(client: openai.OpenAI, **extra: Any) -> Any:
    return client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, **extra)


async def _astream(aclient: openai.AsyncOpenAI, **extra: Any) -> Any:
    return await aclient.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, **extra)


def _text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def _assert_not_completed(tmp_log: Any, text: str | None) -> dict[str, Any]:
    prompt, end = one_call(tmp_log)
    assert end["action"] == "completion"
    assert end["extensions"]["stream_completed"] is False
    assert end["extensions"]["status_code"] == 200
    assert "error" not in end["extensions"]
    assert end["content"]["text"] == text
    return end


# --- the four endings (sync) ---------------------------------------------------------------------


def test_exhausted_stream_is_completed(client, tmp_log):
    """A stream read to its end writes one completion with stream_completed true and the full text."""
    hilt.instrument(filepath=tmp_log)
    stream = _stream(client)
    assert isinstance(stream, openai.Stream)
    chunks = list(stream)
    assert _text(chunks) == ANSWER
    gc.collect()
    prompt, end = one_call(tmp_log)
    assert prompt["extensions"]["stream"] is True
    assert end["action"] == "completion"
    assert end["extensions"]["stream"] is True
    assert end["extensions"]["stream_completed"] is True
    assert end["extensions"]["finish_reason"] == "stop"
    assert end["content"]["text"] == ANSWER
    assert end["actor"] == {"type": "agent", "id": "gpt-4o-2024-08-06"}


def test_close_early_is_one_not_completed_completion(client, tmp_log):
    """close() after two chunks writes one completion, stream_completed false, with the text read so far."""
    hilt.instrument(filepath=tmp_log)
    stream = _stream(client)
    next(stream)
    next(stream)
    stream.close()
    _assert_not_completed(tmp_log, AFTER_TWO_CHUNKS)
    del stream
    gc.collect()
    assert len(read_events(tmp_log)) == 2


def test_break_inside_with_is_one_not_completed_completion(client, tmp_log):
    """Leaving a `with` block by `break` after three chunks is a normal, not-completed completion."""
    hilt.instrument(filepath=tmp_log)
    with _stream(client) as stream:
        for index, _chunk in enumerate(stream):
            if index == 2:
                break
    _assert_not_completed(tmp_log, AFTER_THREE_CHUNKS)
    del stream
    gc.collect()
    assert len(read_events(tmp_log)) == 2


def test_error_mid_stream_is_one_system_event_with_partial_text(client, server, tmp_log):
    """A connection cut after three chunks: one system event, status 200, the error and the text so far."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.cut_stream(3))
    received = []
    with pytest.raises(STREAM_CUT_ERROR):
        for chunk in _stream(client):
            received.append(chunk)
    assert _text(received) == AFTER_THREE_CHUNKS
    gc.collect()
    prompt, end = one_call(tmp_log)
    assert end["action"] == "system"
    assert end["actor"] == {"type": "system", "id": "openai"}
    ext = end["extensions"]
    assert ext["status_code"] == 200
    assert ext["error"]["type"] == STREAM_CUT_ERROR.__name__
    assert ext["error"]["code"] is None
    assert ext["stream_completed"] is False
    assert ext["request_id"] == "req_1"
    assert ext["response_id"] == "chatcmpl-1"
    assert end["content"]["text"] == AFTER_THREE_CHUNKS


def test_abandoned_stream_is_closed_when_collected(client, tmp_log):
    """A stream dropped after two chunks is closed as not completed when garbage-collected, once."""
    hilt.instrument(filepath=tmp_log)
    stream = _stream(client)
    next(stream)
    next(stream)
    assert len(read_events(tmp_log)) == 1
    del stream
    gc.collect()
    _assert_not_completed(tmp_log, AFTER_TWO_CHUNKS)
    gc.collect()
    assert len(read_events(tmp_log)) == 2


def test_abandoned_unread_stream_is_closed_when_collected(client, tmp_log):
    """A stream never iterated is closed as not completed, with no text, when garbage-collected."""
    hilt.instrument(filepath=tmp_log)
    stream = _stream(client)
    del stream
    gc.collect()
    end = _assert_not_completed(tmp_log, None)
    assert end["metrics"]["tokens"] == NULL_TOKENS
    assert "ttft_ms" not in end["metrics"]


def test_for_break_without_with_is_closed_when_collected(client, tmp_log):
    """`for chunk in create(stream=True): break` without `with` still ends with one not-completed completion."""
    hilt.instrument(filepath=tmp_log)
    for _chunk in _stream(client):
        break
    gc.collect()
    _assert_not_completed(tmp_log, "")


# --- the four endings (async) --------------------------------------------------------------------


async def test_async_exhausted_stream_is_completed(aclient, tmp_log):
    """An async stream read to its end writes one completion with stream_completed true."""
    hilt.instrument(filepath=tmp_log)
    stream = await _astream(aclient)
    assert isinstance(stream, openai.AsyncStream)
    chunks = [chunk async for chunk in stream]
    assert _text(chunks) == ANSWER
    prompt, end = one_call(tmp_log)
    assert end["action"] == "completion"
    assert end["extensions"]["stream_completed"] is True
    assert end["content"]["text"] == ANSWER


async def test_async_close_early(aclient, tmp_log):
    """`await stream.close()` after two chunks writes one not-completed completion with the text so far."""
    hilt.instrument(filepath=tmp_log)
    stream = await _astream(aclient)
    await stream.__anext__()
    await stream.__anext__()
    await stream.close()
    _assert_not_completed(tmp_log, AFTER_TWO_CHUNKS)
    del stream
    gc.collect()
    await asyncio.sleep(0.01)
    assert len(read_events(tmp_log)) == 2


async def test_async_break_inside_async_with(aclient, tmp_log):
    """Leaving an `async with` block by `break` after three chunks is one not-completed completion."""
    hilt.instrument(filepath=tmp_log)
    async with await _astream(aclient) as stream:
        index = 0
        async for _chunk in stream:
            if index == 2:
                break
            index += 1
    _assert_not_completed(tmp_log, AFTER_THREE_CHUNKS)


async def test_async_error_mid_stream(aclient, server, tmp_log):
    """An async stream cut after three chunks: one system event, status 200, the text so far."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.cut_stream(3))
    with pytest.raises(STREAM_CUT_ERROR):
        async for _chunk in await _astream(aclient):
            pass
    prompt, end = one_call(tmp_log)
    assert end["action"] == "system"
    assert end["extensions"]["status_code"] == 200
    assert end["extensions"]["error"]["type"] == STREAM_CUT_ERROR.__name__
    assert end["extensions"]["stream_completed"] is False
    assert end["content"]["text"] == AFTER_THREE_CHUNKS


async def test_async_abandoned_stream_is_closed_when_collected(aclient, tmp_log):
    """An async stream dropped after two chunks is closed as not completed when garbage-collected."""
    hilt.instrument(filepath=tmp_log)
    stream = await _astream(aclient)
    await stream.__anext__()
    await stream.__anext__()
    del stream
    gc.collect()
    await asyncio.sleep(0.01)
    gc.collect()
    _assert_not_completed(tmp_log, AFTER_TWO_CHUNKS)


async def test_async_abandoned_stream_makes_asyncio_report_nothing(aclient, tmp_log):
    """Abandoning an async stream under hilt makes asyncio report no errors (as without hilt)."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    hilt.instrument(filepath=tmp_log)
    try:
        stream = await _astream(aclient)
        await stream.__anext__()
        await stream.__anext__()
        del stream
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0.01)
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert len(read_events(tmp_log)) == 2
    assert [str(c.get("exception") or c.get("message")) for c in reported] == []


# --- the SDK's objects and chunks are untouched -------------------------------------------------


def test_stream_keeps_sdk_class_and_chunks(client, server, tmp_log):
    """Under hilt the stream is still an openai.Stream named Stream and yields the same chunks as without."""
    baseline = [without(c.model_dump(), "created") for c in _stream(client)]
    server.reset()
    hilt.instrument(filepath=tmp_log)
    stream = _stream(client)
    assert isinstance(stream, openai.Stream)
    assert type(stream).__name__ == "Stream"
    recorded = [without(c.model_dump(), "created") for c in stream]
    assert recorded == baseline
    assert len(recorded) == 8


async def test_async_stream_keeps_sdk_class_and_chunks(aclient, server, tmp_log):
    """Under hilt the async stream is still an openai.AsyncStream and yields the same chunks as without."""
    baseline = [without(c.model_dump(), "created") async for c in await _astream(aclient)]
    server.reset()
    hilt.instrument(filepath=tmp_log)
    stream = await _astream(aclient)
    assert isinstance(stream, openai.AsyncStream)
    recorded = [without(c.model_dump(), "created") async for c in stream]
    assert recorded == baseline


class _CountingStream(openai.Stream[_Chunk]):
    """A caller's own stream class (passed as ``stream_cls`` to ``client.post``) with its own ``__next__``."""

    pulled = 0

    def __next__(self) -> _Chunk:
        _CountingStream.pulled += 1  # not type(self): under hilt that is hilt's subclass
        return super().__next__()


class _CountingAsyncStream(openai.AsyncStream[_Chunk]):
    """The async twin: its own ``__anext__``."""

    pulled = 0

    async def __anext__(self) -> _Chunk:
        _CountingAsyncStream.pulled += 1
        return await super().__anext__()


def _own_stream(client: openai.OpenAI | openai.AsyncOpenAI, stream_cls: Any) -> Any:
    """A streamed chat call with the caller's own ``stream_cls`` (for the async client, a coroutine)."""
    return client.post("/chat/completions", cast_to=ChatCompletion, stream=True,
                       body={"model": "gpt-4o", "messages": MESSAGES, "stream": True},
                       stream_cls=stream_cls[ChatCompletionChunk])


def _pull_all(stream: Any) -> list[Any]:
    """Every chunk by explicit ``next()`` calls (the caller's own ``__next__`` runs; a ``for`` loop skips it)."""
    chunks = []
    while True:
        try:
            chunks.append(next(stream))
        except StopIteration:
            return chunks


def test_a_stream_class_with_its_own_next_is_called_as_without_hilt_and_recorded(client, server, tmp_log):
    """A caller's Stream subclass keeps its own methods: its __next__ runs exactly when it does without hilt
    (not in a ``for`` loop, which the SDK's __iter__ serves; once per next() call), the chunks are the same,
    and each stream is recorded as a built-in one is: full text, completed."""
    baseline = [without(c.model_dump(), "created") for c in _own_stream(client, _CountingStream)]
    server.reset()
    _CountingStream.pulled = 0
    pulled = _pull_all(_own_stream(client, _CountingStream))
    pulled_without = _CountingStream.pulled
    server.reset()
    hilt.instrument(filepath=tmp_log)
    _CountingStream.pulled = 0
    stream = _own_stream(client, _CountingStream)
    assert isinstance(stream, _CountingStream)
    assert [without(c.model_dump(), "created") for c in stream] == baseline
    assert _CountingStream.pulled == 0  # as without hilt: the SDK's __iter__ reads the chunk iterator itself
    prompt, end = one_call(tmp_log)
    assert prompt["extensions"]["stream"] is True
    assert end["extensions"]["stream_completed"] is True
    assert end["content"]["text"] == ANSWER
    assert len(baseline) == len(pulled) == 8 and pulled_without == len(pulled) + 1  # each chunk, then the end

    server.reset()
    assert [without(c.model_dump(), "created") for c in _pull_all(_own_stream(client, _CountingStream))] == baseline
    assert _CountingStream.pulled == pulled_without  # once per next() call, as without hilt
    events = read_events(tmp_log)
    assert [e["action"] for e in events] == ["prompt", "completion"] * 2
    assert events[3]["extensions"]["stream_completed"] is True
    assert events[3]["content"]["text"] == ANSWER


def test_a_stream_class_with_its_own_next_closed_early(client, tmp_log):
    """Closed after two chunks, a caller's own stream class is one not-completed completion with the text so far."""
    hilt.instrument(filepath=tmp_log)
    stream = _own_stream(client, _CountingStream)
    next(stream)
    next(stream)
    stream.close()
    _assert_not_completed(tmp_log, AFTER_TWO_CHUNKS)


def test_a_stream_class_with_its_own_next_cut_mid_stream(client, server, tmp_log):
    """A connection cut after three chunks of a caller's own stream class: the SDK's error reaches the caller
    and the file has one system event with the error and the text so far."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.cut_stream(3))
    with pytest.raises(STREAM_CUT_ERROR):
        _pull_all(_own_stream(client, _CountingStream))
    prompt, end = one_call(tmp_log)
    assert end["action"] == "system"
    assert end["extensions"]["error"]["type"] == STREAM_CUT_ERROR.__name__
    assert end["extensions"]["stream_completed"] is False
    assert end["content"]["text"] == AFTER_THREE_CHUNKS


async def test_an_async_stream_class_with_its_own_anext_is_called_and_recorded(aclient, server, tmp_log):
    """The async twin: the caller's own __anext__ runs for every chunk and the stream is recorded whole."""
    _CountingAsyncStream.pulled = 0
    hilt.instrument(filepath=tmp_log)
    stream = await _own_stream(aclient, _CountingAsyncStream)
    assert isinstance(stream, _CountingAsyncStream)
    chunks = [chunk async for chunk in stream]
    assert _text(chunks) == ANSWER
    assert _CountingAsyncStream.pulled == 0  # as without hilt: ``async for`` goes through the SDK's __aiter__
    prompt, end = one_call(tmp_log)
    assert end["extensions"]["stream_completed"] is True
    assert end["content"]["text"] == ANSWER

    server.reset()
    stream = await _own_stream(aclient, _CountingAsyncStream)
    pulled = []
    with pytest.raises(StopAsyncIteration):
        while True:
            pulled.append(await stream.__anext__())
    assert _text(pulled) == ANSWER
    assert _CountingAsyncStream.pulled == len(pulled) + 1  # its own __anext__, once per call
    events = read_events(tmp_log)
    assert [e["action"] for e in events] == ["prompt", "completion"] * 2
    assert events[3]["extensions"]["stream_completed"] is True


# --- usage ---------------------------------------------------------------------------------------


def test_include_usage_gives_api_tokens(client, server, tmp_log):
    """stream_options include_usage: tokens from the last chunk, usage_source "api" and a cost."""
    hilt.instrument(filepath=tmp_log)
    chunks = list(_stream(client, stream_options={"include_usage": True}))
    assert chunks[-1].usage.total_tokens == 11
    prompt, end = one_call(tmp_log)
    assert end["extensions"]["usage_source"] == "api"
    assert end["metrics"]["tokens"] == {"prompt": 5, "completion": 6, "total": 11, "cached": 0, "reasoning": 0}
    expected = cost_usd("openai", "gpt-4o-2024-08-06", end["metrics"]["tokens"])
    assert end["metrics"]["cost_usd"] == expected and expected > 0
    assert prompt["extensions"]["request"]["stream_options"] == {"include_usage": True}


def test_without_include_usage_tokens_are_null_and_hilt_adds_nothing(client, server, tmp_log):
    """Without include_usage: tokens all null, usage_source "missing", and hilt did not ask the API for usage."""
    hilt.instrument(filepath=tmp_log)
    list(_stream(client))
    assert "stream_options" not in server.last_request.body
    prompt, end = one_call(tmp_log)
    assert end["extensions"]["usage_source"] == "missing"
    assert end["metrics"]["tokens"] == NULL_TOKENS
    assert end["metrics"]["cost_usd"] is None


def test_stream_usage_option_asks_for_usage_without_mutating_caller(client, server, tmp_log):
    """instrument(stream_usage=True) sends include_usage, keeps other stream_options, and mutates nothing of the caller."""
    hilt.instrument(filepath=tmp_log, stream_usage=True)
    kwargs = {"model": "gpt-4o", "messages": MESSAGES, "stream": True, "stream_options": {"include_obfuscation": False}}
    before = copy.deepcopy(kwargs)
    chunks = list(client.chat.completions.create(**kwargs))
    assert kwargs == before
    assert server.last_request.body["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert chunks[-1].usage is not None
    prompt, end = one_call(tmp_log)
    assert end["extensions"]["usage_source"] == "api"
    assert end["metrics"]["tokens"]["total"] == 11


def test_stream_usage_option_without_stream_options(client, server, tmp_log):
    """instrument(stream_usage=True) adds stream_options.include_usage when the caller sent none."""
    hilt.instrument(filepath=tmp_log, stream_usage=True)
    list(_stream(client))
    assert server.last_request.body["stream_options"] == {"include_usage": True}
    assert one_call(tmp_log)[1]["metrics"]["tokens"]["prompt"] == 5


def test_stream_usage_option_leaves_plain_calls_alone(client, server, tmp_log):
    """instrument(stream_usage=True) sends no stream_options on a non-streamed call."""
    hilt.instrument(filepath=tmp_log, stream_usage=True)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert "stream_options" not in server.last_request.body


def test_ttft_only_on_streams(client, tmp_log, read_jsonl):
    """A stream's completion carries ttft_ms (a positive number, at most latency_ms); a plain call's does not."""
    hilt.instrument(filepath=tmp_log)
    list(_stream(client))
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    stream_end, plain_end = [e for e in read_jsonl(tmp_log) if e["action"] == "completion"]
    ttft = stream_end["metrics"]["ttft_ms"]
    assert isinstance(ttft, (int, float)) and 0 < ttft <= stream_end["metrics"]["latency_ms"]
    assert "ttft_ms" not in plain_end["metrics"]


# --- tool calls ------------------------------------------------------------------------------------

TOOL_CALLS = [
    {"id": "call_w", "name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}},
    {"id": "call_t", "name": "get_time", "arguments": {"tz": "Europe/Paris"}},
]
EXPECTED_TOOL_CALLS = [
    {"id": "call_w", "name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'},
    {"id": "call_t", "name": "get_time", "arguments": '{"tz": "Europe/Paris"}'},
]


def test_streamed_tool_call_deltas_are_merged_by_index(client, server, tmp_log):
    """Tool-call deltas streamed in pieces are merged per index into [{id, name, arguments}] with the full string."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.chat(tool_calls=TOOL_CALLS))
    chunks = list(_stream(client))
    argument_pieces = [
        tc.function.arguments for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []
        if tc.function and tc.function.arguments
    ]
    assert len(argument_pieces) > 2  # the arguments really arrived in pieces
    prompt, end = one_call(tmp_log)
    assert end["content"]["tool_calls"] == EXPECTED_TOOL_CALLS
    assert end["content"]["text"] is None
    assert end["extensions"]["finish_reason"] == "tool_calls"
    assert end["extensions"]["stream_completed"] is True


def test_plain_tool_calls_are_recorded(client, server, tmp_log):
    """A non-streamed tool-call answer is recorded as [{id, name, arguments}] with the arguments string."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.chat(tool_calls=TOOL_CALLS))
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert one_call(tmp_log)[1]["content"]["tool_calls"] == EXPECTED_TOOL_CALLS


def test_streamed_refusal_is_recorded(client, server, tmp_log):
    """A streamed refusal is recorded as content.refusal."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.chat(refusal="I can not help with that."))
    list(_stream(client))
    end = one_call(tmp_log)[1]
    assert end["content"]["refusal"] == "I can not help with that."
    assert end["content"]["text"] is None


# --- mixed chunks: text kept as text, everything else whole ------------------------------------------------


def _chunk(delta: dict[str, Any] | None = None, *, index: int = 0, finish: str | None = None,
           usage: dict[str, Any] | None = None, extra_choices: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": index, "delta": delta, "finish_reason": finish}, *extra_choices]
    chunk = {"id": "chatcmpl-mixed", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-2024-08-06",
             "choices": choices}
    if usage is not None:
        chunk["usage"] = usage
    return chunk


MIXED_STREAM = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "Let me "}),
    _chunk({"content": ""}),
    _chunk({"content": "check. "}, extra_choices=({"index": 1, "delta": {"content": "IGNORED"}, "finish_reason": None},)),
    _chunk({"content": "IGNORED too"}, index=1),
    _chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                            "function": {"name": "lookup", "arguments": '{"q": '}}]}),
    _chunk({"content": "Still "}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"x"}'}}]}),
    _chunk({"content": "here."}),
    _chunk({"refusal": "No more."}),
    _chunk({}, finish="tool_calls"),
    _chunk(None, usage={"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}),
]


def test_mixed_stream_merges_text_tool_calls_refusal_and_usage(client, server, tmp_log):
    """Text chunks between tool-call, refusal, second-choice, finish and usage chunks all land in one event."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.sse(MIXED_STREAM))
    chunks = list(_stream(client))
    assert len(chunks) == len(MIXED_STREAM)
    end = one_call(tmp_log)[1]
    assert end["content"]["text"] == "Let me check. Still here."
    assert end["content"]["refusal"] == "No more."
    assert end["content"]["tool_calls"] == [{"id": "call_1", "name": "lookup", "arguments": '{"q": "x"}'}]
    assert end["extensions"]["finish_reason"] == "tool_calls"
    assert end["extensions"]["response_model"] == "gpt-4o-2024-08-06"
    assert end["extensions"]["response_id"] == "chatcmpl-mixed"
    assert end["metrics"]["tokens"]["prompt"] == 5 and end["metrics"]["tokens"]["completion"] == 9


def test_stream_of_empty_deltas_is_empty_text(client, server, tmp_log):
    """Content deltas that are all "" record text "" (the server said something empty), not null."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.sse([_chunk({"role": "assistant", "content": ""}), _chunk({"content": ""}),
                                      _chunk({}, finish="stop")]))
    list(_stream(client))
    assert one_call(tmp_log)[1]["content"]["text"] == ""


def test_compaction_keeps_text_only_chunks_as_text_and_reads_the_same():
    """Compacting keeps each run of chunks that only carry text as one string, their text joined (the first
    chunk, tool-call, refusal, second-choice, finish and usage chunks stay whole), and the event read is the
    same as from every chunk."""
    from openai.types.chat import ChatCompletionChunk

    from hilt.providers._openai_payloads import ChatStreamState

    compacted, whole = ChatStreamState(0.0), ChatStreamState(0.0)
    for frame in MIXED_STREAM:
        compacted.add(ChatCompletionChunk.model_validate(frame))
        whole.add(ChatCompletionChunk.model_validate(frame))
    compacted.compact(1, len(compacted.chunks))
    assert [item for item in compacted.chunks if isinstance(item, str)] == ["Let me ", "Still ", "here."]
    assert len(compacted.chunks) == len(MIXED_STREAM) - 1  # "Let me " and "" are one string now
    assert not isinstance(compacted.chunks[0], str)  # the first chunk carries the model and id
    read, reference = vars(compacted.facts(True)), vars(whole.facts(True))
    read.pop("ttft_ms"), reference.pop("ttft_ms")  # each state took its own first-token time
    assert read == reference and read["text"] == "Let me check. Still here."
    plain_run = ChatStreamState(0.0)
    for frame in _long_stream(5):
        plain_run.add(ChatCompletionChunk.model_validate(frame))
    plain_run.compact(1, len(plain_run.chunks))
    assert plain_run.chunks[1:-1] == ["w0 w1 w2 w3 w4 "] and plain_run.chunks[-1].choices[0].finish_reason == "stop"
    plain_dicts = ChatStreamState(0.0)  # odd chunks (plain dicts) stay whole and are read by the careful reader
    for frame in MIXED_STREAM:
        plain_dicts.add(copy.deepcopy(frame))
    plain_dicts.compact(1, len(plain_dicts.chunks))
    assert not any(isinstance(item, str) for item in plain_dicts.chunks)
    assert plain_dicts.facts(True).text == "Let me check. Still here."


def _long_stream(words: int) -> list[dict[str, Any]]:
    return [_chunk({"role": "assistant", "content": ""}), *(_chunk({"content": f"w{i} "}) for i in range(words)),
            _chunk({}, finish="stop")]


def test_a_stream_state_compacts_what_is_left_once_when_the_stream_ends():
    """At the stream's end the chunks since the last compaction are compacted, and never again afterwards:
    from then on the recorder reads the list (a chunk still pulled after a close is only appended)."""
    from openai.types.chat import ChatCompletionChunk

    from hilt.providers._openai_payloads import COMPACT_EVERY, ChatStreamState

    state = ChatStreamState(0.0)
    for frame in _long_stream(3):
        state.add(ChatCompletionChunk.model_validate(frame))
    state.end()
    assert state.chunks[1:-1] == ["w0 w1 w2 "]
    late = ChatCompletionChunk.model_validate(_chunk({"content": "late"}))
    state.chunks.extend([late] * (2 * COMPACT_EVERY))
    assert len(state.chunks) < state.compact_at  # the caller's length check never compacts again
    state.end()
    assert state.chunks.count(late) == 2 * COMPACT_EVERY
    assert state.facts(True).text == "w0 w1 w2 " + "late" * (2 * COMPACT_EVERY)


def test_a_stream_closed_on_another_thread_waits_for_the_compaction_in_progress():
    """A close on another thread while the caller's thread compacts: the close's end-of-stream compaction waits
    for the one in progress (never two at once on one list), then compacts the rest, once; the text is whole."""
    from openai.types.chat import ChatCompletionChunk

    from hilt.providers._openai_payloads import COMPACT_EVERY, ChatStreamState

    inside, go_on = threading.Event(), threading.Event()

    class SlowState(ChatStreamState):
        running = 0
        overlapped = False

        def compact(self, start: int, end: int) -> None:
            SlowState.running += 1
            SlowState.overlapped |= SlowState.running > 1
            if not inside.is_set():
                inside.set()
                assert go_on.wait(10)
            super().compact(start, end)
            SlowState.running -= 1

    state = SlowState(0.0)
    words = COMPACT_EVERY + 10
    for frame in _long_stream(words)[:COMPACT_EVERY + 1]:
        state.chunks.append(ChatCompletionChunk.model_validate(frame))
    caller = threading.Thread(target=state.compact_recent)
    caller.start()
    assert inside.wait(10)  # the caller's thread is inside its compaction
    for frame in _long_stream(words)[COMPACT_EVERY + 1:]:
        state.chunks.append(ChatCompletionChunk.model_validate(frame))
    closer = threading.Thread(target=state.end)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # the close waits for the compaction in progress
    go_on.set()
    caller.join(10)
    closer.join(10)
    assert not SlowState.overlapped
    assert state.compact_at == sys.maxsize  # ended: nothing compacts the list again
    assert state.facts(True).text == "".join(f"w{i} " for i in range(words))


def test_long_stream_frees_its_text_chunks_while_it_goes_on(client, server, tmp_log):
    """Mid-stream, the chunks the caller has dropped are freed (hilt keeps their text, compacted every 64
    chunks as the stream goes on), and the event still has the whole text."""
    hilt.instrument(filepath=tmp_log)
    words = 400
    server.enqueue(ScriptedReply.sse(_long_stream(words)))
    stream = _stream(client)
    seen = []
    for index, chunk in enumerate(stream):
        if 0 < index <= 300:
            seen.append(weakref.ref(chunk))
        if index == 300:
            gc.collect()
            alive = sum(ref() is not None for ref in seen)
            assert alive <= 64 + 1, alive  # at most the chunks since the last compaction (and the current one)
        del chunk
    end = one_call(tmp_log)[1]
    assert end["content"]["text"] == "".join(f"w{i} " for i in range(words))
    assert end["extensions"]["stream_completed"] is True


def test_a_finished_stream_keeps_no_text_chunk_while_its_event_waits(client, server, tmp_log):
    """When a stream ends, hilt keeps the text of its text-only chunks, not the chunk objects: the chunks the
    caller lets go of are freed at once, on its thread, as without hilt, even while the completion event still
    waits for a busy recorder (kept until then, they would be freed later by the recorder)."""
    hilt.instrument(filepath=tmp_log)
    words = 30
    server.enqueue(ScriptedReply.sse(_long_stream(words)))
    release, busy = threading.Event(), threading.Event()
    _recorder.submit(lambda: (busy.set(), release.wait(30)))  # the recorder is held up ...
    try:
        assert busy.wait(10)
        stream = _stream(client)
        chunks = list(stream)
        assert stream._hilt_call._watchers == ()  # ended: no finalizer left to run when the stream is dropped
        del stream
        text_chunks = [weakref.ref(chunk) for chunk in chunks[1:1 + words]]
        del chunks
        assert _recorder.pending()  # ... so the completion still waits
        assert [ref() for ref in text_chunks] == [None] * words  # freed by reference counting, no collection
    finally:
        release.set()
    end = one_call(tmp_log)[1]
    assert end["content"]["text"] == "".join(f"w{i} " for i in range(words))
    assert end["extensions"]["finish_reason"] == "stop" and end["extensions"]["stream_completed"] is True


async def test_async_long_stream_frees_its_text_chunks(aclient, server, tmp_log):
    """The async stream compacts as the sync one does."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.sse(_long_stream(300)))
    stream = await _astream(aclient)
    seen = []
    index = 0
    async for chunk in stream:
        if 0 < index <= 250:
            seen.append(weakref.ref(chunk))
        if index == 250:
            gc.collect()
            assert sum(ref() is not None for ref in seen) <= 64 + 1
        index += 1
        del chunk
    assert one_call(tmp_log)[1]["content"]["text"] == "".join(f"w{i} " for i in range(300))


# --- the caller's own exception inside the loop ----------------------------------------------------------


def test_caller_exception_in_loop_is_not_an_api_error(client, tmp_log):
    """An exception raised by the caller's own loop body closes the call as a not-completed completion, not an error."""
    hilt.instrument(filepath=tmp_log)
    with pytest.raises(KeyError):
        with _stream(client) as stream:
            for index, _chunk in enumerate(stream):
                if index == 1:
                    raise KeyError("the app's own bug")
    del stream
    gc.collect()
    end = _assert_not_completed(tmp_log, AFTER_TWO_CHUNKS)
    assert end["actor"]["type"] == "agent"


async def test_async_caller_exception_in_loop_is_not_an_api_error(aclient, tmp_log):
    """The same for an async stream left by the caller's own exception."""
    hilt.instrument(filepath=tmp_log)
    with pytest.raises(KeyError):
        async with await _astream(aclient) as stream:
            index = 0
            async for _chunk in stream:
                if index == 1:
                    raise KeyError("the app's own bug")
                index += 1
    _assert_not_completed(tmp_log, AFTER_TWO_CHUNKS)


# --- with_streaming_response read as raw lines / bytes -----------------------------------------------------


def test_streaming_response_iter_lines_to_the_end(client, server, tmp_log):
    """A stream fully read as SSE lines (e.g. proxied to a browser) is recorded as completed, with text and usage."""
    hilt.instrument(filepath=tmp_log)
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ) as response:
        lines = list(response.iter_lines())
    assert "data: [DONE]" in lines  # read to its end
    end = one_call(tmp_log)[1]
    assert end["extensions"]["stream_completed"] is True
    assert end["content"]["text"] == ANSWER
    assert end["metrics"]["tokens"]["total"] == 11


def test_streaming_response_iter_bytes_plain(client, tmp_log):
    """A plain answer read as bytes through with_streaming_response is recorded with its text and tokens."""
    hilt.instrument(filepath=tmp_log)
    with client.chat.completions.with_streaming_response.create(model="gpt-4o", messages=MESSAGES) as response:
        body = b"".join(response.iter_bytes())
    assert b"Echo: one two three four five" in body
    end = one_call(tmp_log)[1]
    assert end["content"]["text"] == ANSWER
    assert end["metrics"]["tokens"]["total"] == 11

"""Tests for hilt.testing.server: the real openai SDK must parse everything the local server sends."""

from __future__ import annotations

import json
import time
from typing import Iterator

import openai
import pydantic
import pytest

from hilt.testing.server import OpenAIServer, ScriptedReply

MESSAGES = [{"role": "user", "content": "hello there world"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the web.",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        },
    }
]


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as srv:
        yield srv


@pytest.fixture
def client(server: OpenAIServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0) as c:
        yield c


@pytest.fixture
async def aclient(server: OpenAIServer):
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key="test-key", max_retries=0) as c:
        yield c


# --------------------------------------------------------------------------- lifecycle


def test_start_stop_is_fast_and_idempotent() -> None:
    """Starting and stopping takes well under 50 ms, twice is harmless, and the URLs are well formed."""
    t0 = time.perf_counter()
    srv = OpenAIServer().start()
    assert srv.start() is srv
    assert srv.base_url == f"http://127.0.0.1:{srv.port}/v1"
    assert srv.root_url == f"http://127.0.0.1:{srv.port}"
    srv.stop()
    srv.stop()
    assert time.perf_counter() - t0 < 0.05


def test_stop_closes_kept_alive_connections() -> None:
    """Stopping the server ends pooled keep-alive connections, so a later call fails instead of hanging."""
    srv = OpenAIServer().start()
    with openai.OpenAI(base_url=srv.base_url, api_key="k", max_retries=0, timeout=2) as c:
        c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        srv.stop()
        with pytest.raises(openai.APIConnectionError):
            c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


def test_chunk_delay_paces_the_stream() -> None:
    """``chunk_delay`` sleeps between streamed chunks, so streams take measurable time."""
    with OpenAIServer(chunk_delay=0.02) as srv, openai.OpenAI(base_url=srv.base_url, api_key="k") as c:
        t0 = time.perf_counter()
        chunks = list(c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
        assert time.perf_counter() - t0 >= 0.02 * (len(chunks) - 1)


# --------------------------------------------------------------------------- chat completions


def test_chat_plain_default_answer(server: OpenAIServer, client: openai.OpenAI) -> None:
    """The default chat answer echoes the last user text with exact ids, model suffix, usage and request id."""
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": "world"}]},
        ],
    )
    assert raw.headers["x-request-id"] == "req_1"
    assert raw.headers["content-type"] == "application/json"
    completion = raw.parse()
    assert completion.id == "chatcmpl-1"
    assert completion.model == "gpt-4o-mini-2024-08-06"
    assert completion.choices[0].message.content == "Echo: hello world"
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (4, 3, 7)
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details.reasoning_tokens == 0


def test_chat_dated_model_is_not_suffixed(client: openai.OpenAI) -> None:
    """A model name that already ends in a date is returned unchanged."""
    completion = client.chat.completions.create(model="gpt-4o-2024-05-13", messages=MESSAGES)
    assert completion.model == "gpt-4o-2024-05-13"


@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_stream_matches_plain(client: openai.OpenAI, include_usage: bool) -> None:
    """Joined stream deltas equal the plain answer; the usage chunk appears only when include_usage is set."""
    plain = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    kwargs = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, **kwargs))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 3
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    usage_chunks = [c for c in chunks if c.usage is not None]
    if include_usage:
        assert len(usage_chunks) == 1 and chunks[-1] is usage_chunks[0]
        assert chunks[-1].choices == []
        assert chunks[-1].usage.total_tokens == plain.usage.total_tokens
    else:
        assert usage_chunks == []


async def test_chat_async_plain_and_stream(aclient: openai.AsyncOpenAI) -> None:
    """The async client gets the same plain answer and a stream whose deltas and usage chunk match it."""
    plain = await aclient.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert plain.choices[0].message.content == "Echo: hello there world"
    stream = await aclient.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_chat_tools_plain(client: openai.OpenAI) -> None:
    """With tools and a user turn last, the answer is one tool call to the first tool carrying the user text."""
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, tools=TOOLS)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.id == "call_1" and call.type == "function" and call.function.name == "search"
    assert json.loads(call.function.arguments) == {"query": "hello there world"}


def test_chat_tools_answered_after_tool_result(client: openai.OpenAI) -> None:
    """Once the last message is a tool result, the server answers with text again (an agent loop ends)."""
    messages = [
        *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "search", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=TOOLS)
    assert completion.choices[0].message.content == "Echo: hello there world"


def test_chat_tools_stream_reassembles_arguments(client: openai.OpenAI) -> None:
    """Streamed tool calls carry index, id and name first, and arguments split over several deltas."""
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, tools=TOOLS, stream=True))
    deltas = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id == "call_1" and deltas[0].function.name == "search" and deltas[0].index == 0
    arg_deltas = [d.function.arguments for d in deltas if d.function and d.function.arguments]
    assert len(arg_deltas) >= 2
    assert json.loads("".join(arg_deltas)) == {"query": "hello there world"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


class Person(pydantic.BaseModel):
    name: str
    age: int
    verified: bool


def test_chat_parse_with_pydantic_model(client: openai.OpenAI) -> None:
    """``chat.completions.parse`` gets JSON that fits the schema: strings get the user text, ints 1, bools true."""
    completion = client.chat.completions.parse(model="gpt-4o-mini", messages=MESSAGES, response_format=Person)
    assert completion.choices[0].message.parsed == Person(name="hello there world", age=1, verified=True)


def test_chat_stream_helper(client: openai.OpenAI) -> None:
    """The ``chat.completions.stream()`` helper accumulates content and a final completion with usage."""
    with client.chat.completions.stream(
        model="gpt-4o-mini", messages=MESSAGES, stream_options={"include_usage": True}
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert "".join(deltas) == "Echo: hello there world"
    assert final.choices[0].message.content == "Echo: hello there world"
    assert final.usage.total_tokens == 7


def test_scripted_chat_overrides(server: OpenAIServer, client: openai.OpenAI) -> None:
    """ScriptedReply.chat overrides text, model and usage details, or omits usage, in queue order."""
    server.enqueue(
        ScriptedReply.chat(
            "Cached answer",
            model="gpt-4o-2024-11-20",
            usage={"prompt_tokens_details": {"cached_tokens": 3}, "completion_tokens_details": {"reasoning_tokens": 5}},
        ),
        ScriptedReply.chat("no usage", usage=False),
        ScriptedReply.chat(refusal="I can't help with that."),
    )
    first = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert first.choices[0].message.content == "Cached answer" and first.model == "gpt-4o-2024-11-20"
    assert first.usage.prompt_tokens_details.cached_tokens == 3
    assert first.usage.completion_tokens_details.reasoning_tokens == 5
    assert first.usage.prompt_tokens == 3 and first.usage.total_tokens == 5
    assert client.chat.completions.create(model="gpt-4o", messages=MESSAGES).usage is None
    refused = client.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices[0].message
    assert refused.content is None and refused.refusal == "I can't help with that."
    assert client.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices[0].message.content.startswith(
        "Echo:"
    )


def test_scripted_tool_calls_stream(server: OpenAIServer, client: openai.OpenAI) -> None:
    """Scripted tool calls stream as indexed deltas that the SDK's stream helper reassembles."""
    server.enqueue(ScriptedReply.chat(tool_calls=[
        {"name": "lookup", "arguments": {"city": "Paris"}},
        {"id": "call_x", "name": "lookup", "arguments": '{"city": "Rome"}'},
    ]))
    with client.chat.completions.stream(model="gpt-4o", messages=MESSAGES) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["lookup", "lookup"]
    assert [json.loads(c.function.arguments)["city"] for c in calls] == ["Paris", "Rome"]
    assert calls[1].id == "call_x"
    assert final.choices[0].finish_reason == "tool_calls"


def test_scripted_json_odd_shape(server: OpenAIServer, client: openai.OpenAI) -> None:
    """ScriptedReply.json sends any body as-is, e.g. an empty choices list without usage."""
    server.enqueue(ScriptedReply.json({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                                       "choices": [], "surprise": 1}))
    completion = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert completion.choices == [] and completion.usage is None


def test_scripted_sse_events(server: OpenAIServer, client: openai.OpenAI) -> None:
    """ScriptedReply.sse streams hand-written chunks followed by [DONE]."""
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
             "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
    server.enqueue(ScriptedReply.sse([chunk, chunk]))
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    assert [c.choices[0].delta.content for c in chunks] == ["hi", "hi"]


# --------------------------------------------------------------------------- responses API


def test_responses_plain(client: openai.OpenAI) -> None:
    """``responses.create`` returns a completed response echoing the input, with Responses-style usage."""
    response = client.responses.create(
        model="gpt-4o-mini",
        instructions="be brief",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "hi there"}]}],
    )
    assert response.id == "resp_1" and response.status == "completed"
    assert response.model == "gpt-4o-mini-2024-08-06"
    assert response.output_text == "Echo: hi there"
    assert response.output[0].type == "message" and response.output[0].role == "assistant"
    usage = response.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (4, 3, 7)
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0


def test_responses_stream_events(client: openai.OpenAI) -> None:
    """``responses.create(stream=True)`` yields the real event sequence with increasing sequence numbers."""
    events = list(client.responses.create(model="gpt-4o-mini", input="hi there", stream=True))
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) >= 2 and "".join(deltas) == "Echo: hi there"
    assert events[-1].response.usage.total_tokens == events[-1].response.usage.input_tokens + 3


def test_responses_stream_helper(client: openai.OpenAI) -> None:
    """The ``responses.stream()`` helper accepts the sequence and builds the final response."""
    with client.responses.stream(model="gpt-4o-mini", input="hi there") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "Echo: hi there"
    assert final.usage.output_tokens == 3


async def test_responses_async_stream(aclient: openai.AsyncOpenAI) -> None:
    """The async Responses stream ends with a completed response."""
    stream = await aclient.responses.create(model="gpt-4o-mini", input="hi", stream=True)
    events = [e async for e in stream]
    assert events[-1].type == "response.completed" and events[-1].response.output_text == "Echo: hi"


def test_responses_parse_and_scripted_function_call(server: OpenAIServer, client: openai.OpenAI) -> None:
    """``responses.parse`` fills the schema, and a scripted tool call streams as a function_call item."""
    parsed = client.responses.parse(model="gpt-4o", input="Ann", text_format=Person)
    assert parsed.output_parsed == Person(name="Ann", age=1, verified=True)
    server.enqueue(ScriptedReply.chat(tool_calls=[{"name": "lookup", "arguments": {"q": "x"}}]))
    with client.responses.stream(model="gpt-4o", input="hi") as stream:
        final = stream.get_final_response()
    (call,) = final.output
    assert call.type == "function_call" and call.name == "lookup" and json.loads(call.arguments) == {"q": "x"}


# --------------------------------------------------------------------------- embeddings & completions


def test_embeddings_default_and_float_encodings_agree(server: OpenAIServer, client: openai.OpenAI) -> None:
    """The SDK's default base64 request decodes to the same deterministic 8-dim vectors as encoding_format=float."""
    default = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta gamma"])
    assert server.requests[-1].body["encoding_format"] == "base64"
    floats = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta gamma"],
                                      encoding_format="float")
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert [d.index for d in floats.data] == [0, 1]
    assert all(len(d.embedding) == 8 for d in floats.data)
    assert floats.data[0].embedding != floats.data[1].embedding
    assert floats.usage.prompt_tokens == 3 and floats.model == "text-embedding-3-small"
    single = client.embeddings.create(model="text-embedding-3-small", input="alpha", encoding_format="float")
    assert single.data[0].embedding == floats.data[0].embedding


def test_legacy_completions_plain_and_stream(client: openai.OpenAI) -> None:
    """Legacy completions answer as text_completion objects, streamed chunks joining to the same text."""
    plain = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="say hi")
    assert plain.object == "text_completion" and plain.choices[0].text == "Echo: say hi"
    assert plain.usage.total_tokens == 5
    chunks = list(client.completions.create(model="gpt-3.5-turbo-instruct", prompt="say hi", stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Echo: say hi"
    assert chunks[-1].usage.total_tokens == 5


# --------------------------------------------------------------------------- failures


def test_error_429_raises_rate_limit_error(server: OpenAIServer, client: openai.OpenAI) -> None:
    """A scripted 429 becomes RateLimitError with the OpenAI error body and a retry-after header."""
    server.enqueue(ScriptedReply.error(429, message="slow down"))
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    err = info.value
    assert err.status_code == 429 and err.code == "rate_limit_exceeded" and "slow down" in err.message
    assert err.response.headers["retry-after"] == "1"
    assert err.request_id == "req_1"


def test_error_429_then_success_with_retries(server: OpenAIServer) -> None:
    """With SDK retries on, a 429 is retried quickly (retry-after-ms) and the second request succeeds."""
    server.enqueue(ScriptedReply.error(429))
    with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=1) as c:
        t0 = time.perf_counter()
        assert c.chat.completions.create(model="gpt-4o", messages=MESSAGES).id == "chatcmpl-2"
        assert time.perf_counter() - t0 < 1
    assert len(server.requests) == 2


def test_error_500_and_raw_body(server: OpenAIServer, client: openai.OpenAI) -> None:
    """500 JSON errors and non-JSON 502 bodies both raise InternalServerError."""
    server.enqueue(ScriptedReply.error(500), ScriptedReply.raw(502, b"<html>bad gateway</html>", "text/html"))
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert info.value.status_code == 500 and info.value.type == "server_error"
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert info.value.status_code == 502 and "bad gateway" in info.value.response.text


def test_drop_connection_raises_connection_error(server: OpenAIServer, client: openai.OpenAI) -> None:
    """A dropped connection surfaces as APIConnectionError (not a timeout)."""
    server.enqueue(ScriptedReply.drop_connection())
    with pytest.raises(openai.APIConnectionError) as info:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert not isinstance(info.value, openai.APITimeoutError)


def test_delay_raises_timeout(server: OpenAIServer) -> None:
    """A delayed reply longer than the client timeout raises APITimeoutError."""
    server.enqueue(ScriptedReply.delay(1.0))
    with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0, timeout=0.2) as c:
        with pytest.raises(openai.APITimeoutError):
            c.chat.completions.create(model="gpt-4o", messages=MESSAGES)


def test_delay_then_reply(server: OpenAIServer, client: openai.OpenAI) -> None:
    """A short delay followed by a scripted reply answers with that reply."""
    server.enqueue(ScriptedReply.delay(0.05, then=ScriptedReply.chat("late")))
    assert client.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices[0].message.content == "late"


def test_cut_stream_raises_during_iteration(server: OpenAIServer, client: openai.OpenAI) -> None:
    """A cut stream yields the first chunks, then raises APIConnectionError mid-iteration."""
    server.enqueue(ScriptedReply.cut_stream(after_chunks=2))
    received = []
    stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            received.append(chunk)
    assert len(received) == 2


async def test_cut_stream_async(server: OpenAIServer, aclient: openai.AsyncOpenAI) -> None:
    """The async client also sees a cut Responses stream as APIConnectionError."""
    server.enqueue(ScriptedReply.cut_stream(after_chunks=3))
    stream = await aclient.responses.create(model="gpt-4o", input="hi", stream=True)
    received = []
    with pytest.raises(openai.APIConnectionError):
        async for event in stream:
            received.append(event.type)
    assert received == ["response.created", "response.in_progress", "response.output_item.added"]


def test_unknown_path_is_404(client: openai.OpenAI) -> None:
    """Unknown endpoints answer 404 with an OpenAI-shaped error, raising NotFoundError."""
    with pytest.raises(openai.NotFoundError) as info:
        client.files.list()
    assert info.value.body["message"].startswith("Invalid URL")


# --------------------------------------------------------------------------- recording & azure


def test_requests_are_recorded(server: OpenAIServer, client: openai.OpenAI) -> None:
    """Every request is recorded with method, path, lower-case headers incl. Authorization, and JSON body."""
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0)
    (req,) = server.requests
    assert (req.method, req.path) == ("POST", "/v1/chat/completions")
    assert req.headers["authorization"] == "Bearer test-key"
    assert req.body == {"model": "gpt-4o-mini", "messages": MESSAGES, "temperature": 0}
    assert json.loads(req.raw) == req.body
    assert server.last_request == req
    server.enqueue(ScriptedReply.error(500))
    server.reset()
    assert server.requests == []
    assert client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).id == "chatcmpl-1"


def test_azure_client(server: OpenAIServer) -> None:
    """AzureOpenAI hits /openai/deployments/<name>/... with api-version and api-key, and gets normal answers."""
    with openai.AzureOpenAI(azure_endpoint=server.root_url, api_key="azkey", api_version="2024-06-01",
                            max_retries=0) as azure:
        completion = azure.chat.completions.create(model="my-deploy", messages=MESSAGES)
        chunks = list(azure.chat.completions.create(model="my-deploy", messages=MESSAGES, stream=True))
        vectors = azure.embeddings.create(model="emb-deploy", input="alpha")
    assert completion.choices[0].message.content == "Echo: hello there world"
    assert completion.model == "my-deploy-2024-08-06"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: hello there world"
    assert len(vectors.data[0].embedding) == 8
    req = server.requests[0]
    assert req.path == "/openai/deployments/my-deploy/chat/completions"
    assert req.query == {"api-version": "2024-06-01"}
    assert req.headers["api-key"] == "azkey"

"""Every SDK surface goes through the patched choke point: parse, stream helpers, Responses, embeddings,
legacy completions, raw/streaming responses, Azure and the async client."""

from __future__ import annotations

import gc

import openai
import pydantic
import pytest

import hilt
from hilt.testing import OpenAIServer, ScriptedReply
from test_openai_support import (  # noqa: F401 - fixtures
    STREAM_CUT_ERROR,
    API_KEY,
    NULL_TOKENS,
    aclient,
    client,
    fresh_server,
    one_call,
    read_events,
    server,
)

MESSAGES = [{"role": "user", "content": "hello surfaces"}]


class City(pydantic.BaseModel):
    name: str
    population: int


# --- chat helpers -----------------------------------------------------------------------------------


def test_chat_parse_with_pydantic_format(client, tmp_log):
    """chat.completions.parse(response_format=Model): one call, the JSON schema in extensions.request, the JSON text."""
    hilt.instrument(filepath=tmp_log)
    completion = client.chat.completions.parse(model="gpt-4o", messages=MESSAGES, response_format=City)
    parsed = completion.choices[0].message.parsed
    assert parsed == City(name="hello surfaces", population=1)
    prompt, end = one_call(tmp_log)
    assert prompt["extensions"]["operation"] == "chat"
    response_format = prompt["extensions"]["request"]["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "City"
    assert end["content"]["text"] == completion.choices[0].message.content
    assert City.model_validate_json(end["content"]["text"]) == parsed
    assert end["extensions"]["finish_reason"] == "stop"


async def test_async_chat_parse(aclient, tmp_log):
    """The async parse() is recorded as one call too."""
    hilt.instrument(filepath=tmp_log)
    completion = await aclient.chat.completions.parse(model="gpt-4o", messages=MESSAGES, response_format=City)
    end = one_call(tmp_log)[1]
    assert end["content"]["text"] == completion.choices[0].message.content


def test_chat_stream_helper(client, tmp_log):
    """chat.completions.stream(): one prompt and one completed completion with the final text."""
    hilt.instrument(filepath=tmp_log)
    with client.chat.completions.stream(model="gpt-4o", messages=MESSAGES) as stream:
        kinds = {event.type for event in stream}
        final = stream.get_final_completion()
    assert "content.delta" in kinds
    prompt, end = one_call(tmp_log)
    assert prompt["extensions"]["stream"] is True
    assert end["extensions"]["stream_completed"] is True
    assert end["content"]["text"] == final.choices[0].message.content == "Echo: hello surfaces"


def test_chat_stream_helper_left_early(client, tmp_log):
    """Leaving chat.completions.stream() after one event writes one not-completed completion."""
    hilt.instrument(filepath=tmp_log)
    with client.chat.completions.stream(model="gpt-4o", messages=MESSAGES) as stream:
        for _event in stream:
            break
    gc.collect()
    end = one_call(tmp_log)[1]
    assert end["action"] == "completion"
    assert end["extensions"]["stream_completed"] is False


async def test_async_chat_stream_helper(aclient, tmp_log):
    """The async chat.completions.stream() helper is one completed call."""
    hilt.instrument(filepath=tmp_log)
    async with aclient.chat.completions.stream(model="gpt-4o", messages=MESSAGES) as stream:
        async for _event in stream:
            pass
        final = await stream.get_final_completion()
    end = one_call(tmp_log)[1]
    assert end["extensions"]["stream_completed"] is True
    assert end["content"]["text"] == final.choices[0].message.content


# --- Responses API ----------------------------------------------------------------------------------


def test_responses_create(client, tmp_log):
    """responses.create: operation "responses", input as text, instructions as system, output text, usage, status."""
    hilt.instrument(filepath=tmp_log)
    response = client.responses.create(
        model="gpt-4o", input="hello responses", instructions="Be brief.", max_output_tokens=64
    )
    prompt, end = one_call(tmp_log)
    assert prompt["extensions"]["operation"] == "responses"
    assert prompt["content"]["text"] == "hello responses"
    assert prompt["content"]["messages"] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello responses"}
    ]
    assert prompt["extensions"]["request"] == {"max_output_tokens": 64}
    assert end["content"]["text"] == response.output_text == "Echo: hello responses"
    assert end["extensions"]["response_id"] == response.id == "resp_1"
    assert end["extensions"]["response_model"] == "gpt-4o-2024-08-06"
    assert end["extensions"]["finish_reason"] == "completed"
    assert end["metrics"]["tokens"] == {"prompt": 4, "completion": 3, "total": 7, "cached": 0, "reasoning": 0}
    assert end["metrics"]["cost_usd"] == pytest.approx((4 * 2.5 + 3 * 10.0) / 1_000_000, rel=1e-12)


def test_responses_incomplete_and_tool_call(client, server, tmp_log, read_jsonl):
    """An incomplete response records its reason; a function_call output item is a tool call."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.chat(finish_reason="length"))
    client.responses.create(model="gpt-4o", input="hello")
    server.enqueue(ScriptedReply.chat(tool_calls=[{"id": "call_r", "name": "lookup", "arguments": '{"q": "x"}'}]))
    client.responses.create(model="gpt-4o", input=[{"role": "user", "content": "look it up"}])
    incomplete, tool = [e for e in read_jsonl(tmp_log) if e["action"] == "completion"]
    assert incomplete["extensions"]["finish_reason"] == "max_output_tokens"
    assert tool["content"]["tool_calls"] == [{"id": "call_r", "name": "lookup", "arguments": '{"q": "x"}'}]
    assert tool["content"]["text"] is None


def test_responses_create_streamed(client, tmp_log):
    """responses.create(stream=True): the final response's text and usage, stream_completed, usage_source api."""
    hilt.instrument(filepath=tmp_log)
    events = list(client.responses.create(model="gpt-4o", input="hello responses", stream=True))
    assert events[-1].type == "response.completed"
    prompt, end = one_call(tmp_log)
    assert prompt["extensions"]["stream"] is True
    assert end["content"]["text"] == "Echo: hello responses"
    assert end["extensions"]["stream_completed"] is True
    assert end["extensions"]["usage_source"] == "api"
    assert end["extensions"]["response_id"] == "resp_1"
    assert end["metrics"]["tokens"]["total"] == 5
    assert end["metrics"]["ttft_ms"] > 0


def test_responses_stream_cut_keeps_deltas(client, server, tmp_log):
    """A Responses stream cut before its final event records the text deltas received so far."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.cut_stream(7))  # created, in_progress, item added, part added, 3 deltas
    with pytest.raises(STREAM_CUT_ERROR):
        for _event in client.responses.create(model="gpt-4o", input="one two three four", stream=True):
            pass
    end = one_call(tmp_log)[1]
    assert end["action"] == "system"
    assert end["extensions"]["status_code"] == 200
    assert end["content"]["text"] == "Echo: one two "


def test_responses_stream_helper(client, tmp_log):
    """responses.stream(): one completed call with the final text."""
    hilt.instrument(filepath=tmp_log)
    with client.responses.stream(model="gpt-4o", input="hello responses") as stream:
        for _event in stream:
            pass
        final = stream.get_final_response()
    end = one_call(tmp_log)[1]
    assert end["extensions"]["stream_completed"] is True
    assert end["content"]["text"] == final.output_text == "Echo: hello responses"


def test_responses_parse(client, tmp_log):
    """responses.parse(text_format=Model) is one call whose text is the JSON the model returned."""
    hilt.instrument(filepath=tmp_log)
    response = client.responses.parse(model="gpt-4o", input="hello responses", text_format=City)
    end = one_call(tmp_log)[1]
    assert City.model_validate_json(end["content"]["text"]) == response.output_parsed


async def test_async_responses_streamed(aclient, tmp_log):
    """The async Responses stream is one completed call."""
    hilt.instrument(filepath=tmp_log)
    async for _event in await aclient.responses.create(model="gpt-4o", input="hello", stream=True):
        pass
    end = one_call(tmp_log)[1]
    assert end["extensions"]["stream_completed"] is True
    assert end["content"]["text"] == "Echo: hello"


# --- embeddings and legacy completions ---------------------------------------------------------------


def test_embeddings(client, tmp_log):
    """embeddings.create: the input is the prompt text, the completion has no text and completion tokens null."""
    hilt.instrument(filepath=tmp_log)
    result = client.embeddings.create(model="text-embedding-3-small", input="embed these three")
    assert len(result.data) == 1
    prompt, end = one_call(tmp_log)
    assert prompt["extensions"]["operation"] == "embeddings"
    assert prompt["content"]["text"] == "embed these three"
    assert end["action"] == "completion"
    assert end["content"]["text"] is None
    assert end["metrics"]["tokens"]["prompt"] == 3
    assert end["metrics"]["tokens"]["completion"] is None
    assert end["metrics"]["tokens"]["total"] == 3
    assert end["extensions"]["response_model"] == "text-embedding-3-small"
    assert end["metrics"]["cost_usd"] == pytest.approx(3 * 0.02 / 1_000_000, rel=1e-12)


async def test_async_embeddings_of_a_list(aclient, tmp_log):
    """Async embeddings of a list of strings record every input string in the prompt text."""
    hilt.instrument(filepath=tmp_log)
    await aclient.embeddings.create(model="text-embedding-3-small", input=["first text", "second text"])
    prompt, end = one_call(tmp_log)
    assert "first text" in prompt["content"]["text"] and "second text" in prompt["content"]["text"]
    assert end["metrics"]["tokens"]["prompt"] == 4


def test_legacy_completions(client, tmp_log):
    """completions.create: operation "completions", the prompt string as text, the completion text."""
    hilt.instrument(filepath=tmp_log)
    result = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="complete this", max_tokens=5)
    prompt, end = one_call(tmp_log)
    assert prompt["extensions"]["operation"] == "completions"
    assert prompt["content"]["text"] == "complete this"
    assert prompt["extensions"]["request"] == {"max_tokens": 5}
    assert end["content"]["text"] == result.choices[0].text == "Echo: complete this"
    assert end["extensions"]["finish_reason"] == "stop"
    assert end["metrics"]["tokens"]["total"] == 5


def test_legacy_completions_streamed(client, tmp_log):
    """completions.create(stream=True) with include_usage: merged text, usage from the API, completed."""
    hilt.instrument(filepath=tmp_log)
    chunks = list(client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt="complete this", stream=True, stream_options={"include_usage": True}
    ))
    assert isinstance(chunks[0], openai.types.Completion)
    end = one_call(tmp_log)[1]
    assert end["content"]["text"] == "Echo: complete this"
    assert end["extensions"]["stream_completed"] is True
    assert end["extensions"]["usage_source"] == "api"
    assert end["metrics"]["tokens"]["total"] == 5


# --- raw and streaming responses ----------------------------------------------------------------------


def test_raw_response_headers_and_parse(client, tmp_log):
    """with_raw_response: the caller still gets headers and parse(); one call with the request id."""
    hilt.instrument(filepath=tmp_log)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    assert raw.headers["x-request-id"] == "req_1"
    assert raw.parse().choices[0].message.content == "Echo: hello surfaces"
    end = one_call(tmp_log)[1]
    assert end["extensions"]["request_id"] == "req_1"
    assert end["content"]["text"] == "Echo: hello surfaces"


def test_streaming_response_closed_unread(client, tmp_log):
    """with_streaming_response left without reading the body still ends with exactly one completion."""
    hilt.instrument(filepath=tmp_log)
    with client.chat.completions.with_streaming_response.create(model="gpt-4o", messages=MESSAGES) as response:
        assert response.status_code == 200
    gc.collect()
    prompt, end = one_call(tmp_log)
    assert end["action"] == "completion"
    assert end["extensions"]["status_code"] == 200


def test_raw_response_stream_parsed_in_one_expression(client, tmp_log):
    """`with_raw_response.create(stream=True).parse()` in one expression: the completion comes when the stream ends."""
    hilt.instrument(filepath=tmp_log)
    stream = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, stream=True).parse()
    assert len(read_events(tmp_log)) == 1, "the call was closed before its stream was read"
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Echo: hello surfaces"
    end = one_call(tmp_log)[1]
    assert end["extensions"]["stream_completed"] is True
    assert end["content"]["text"] == "Echo: hello surfaces"


async def test_async_raw_response_stream_parsed_in_one_expression(aclient, tmp_log):
    """Async `(await with_raw_response.create(stream=True)).parse()`: the completion comes when the stream ends."""
    hilt.instrument(filepath=tmp_log)
    stream = (await aclient.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    )).parse()
    assert len(read_events(tmp_log)) == 1, "the call was closed before its stream was read"
    async for _chunk in stream:
        pass
    end = one_call(tmp_log)[1]
    assert end["extensions"]["stream_completed"] is True
    assert end["content"]["text"] == "Echo: hello surfaces"


# --- Azure ----------------------------------------------------------------------------------------------


def _azure(server: OpenAIServer, cls: type = openai.AzureOpenAI) -> openai.AzureOpenAI:
    return cls(azure_endpoint=server.root_url, api_key=API_KEY, api_version="2024-06-01", max_retries=0)


def test_azure_provider(server, tmp_log):
    """AzureOpenAI calls are recorded with provider "azure" on the prompt and the completion."""
    hilt.instrument(filepath=tmp_log)
    with _azure(server) as azure:
        azure.chat.completions.create(model="my-deployment", messages=MESSAGES)
    assert server.last_request.path == "/openai/deployments/my-deployment/chat/completions"
    prompt, end = one_call(tmp_log)
    assert prompt["extensions"]["provider"] == "azure"
    assert end["extensions"]["provider"] == "azure"
    assert prompt["extensions"]["model"] == "my-deployment"
    assert end["content"]["text"] == "Echo: hello surfaces"


def test_azure_error_actor(server, tmp_log):
    """An Azure error event's actor is {"type": "system", "id": "azure"}."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.error(429))
    with _azure(server) as azure, pytest.raises(openai.RateLimitError):
        azure.chat.completions.create(model="my-deployment", messages=MESSAGES)
    end = one_call(tmp_log)[1]
    assert end["actor"] == {"type": "system", "id": "azure"}
    assert end["extensions"]["status_code"] == 429


async def test_async_azure_stream(server, tmp_log):
    """AsyncAzureOpenAI streams are recorded with provider "azure" and completed."""
    hilt.instrument(filepath=tmp_log)
    async with _azure(server, openai.AsyncAzureOpenAI) as azure:
        async for _chunk in await azure.chat.completions.create(model="my-deployment", messages=MESSAGES, stream=True):
            pass
    prompt, end = one_call(tmp_log)
    assert prompt["extensions"]["provider"] == end["extensions"]["provider"] == "azure"
    assert end["extensions"]["stream_completed"] is True


def test_models_list_is_recorded_once(client, tmp_log):
    """A GET endpoint hilt does not read (models.list) is still one call, never a broken one."""
    hilt.instrument(filepath=tmp_log)
    ids = [model.id for model in client.models.list()]
    assert "gpt-4o" in ids
    prompt, end = one_call(tmp_log)
    assert end["action"] == "completion"
    assert end["extensions"]["status_code"] == 200
    assert end["metrics"]["tokens"] == NULL_TOKENS

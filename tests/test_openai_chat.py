"""Chat completions: the request side of the prompt event and every field of the completion event."""

from __future__ import annotations

import copy
import logging

import openai
import pytest

import hilt
from hilt.pricing import cost_usd
from hilt.testing import ScriptedReply
from test_openai_support import (  # noqa: F401 - fixtures
    client,
    fresh_server,
    make_client,
    one_call,
    server,
)

MESSAGES = [{"role": "user", "content": "hello there"}]

SCRIPTED_USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 500,
    "prompt_tokens_details": {"cached_tokens": 200},
    "completion_tokens_details": {"reasoning_tokens": 100},
}
# gpt-4o's published prices per 1M tokens: $2.50 input, $1.25 cached input, $10.00 output (reasoning = output)
GPT_4O_COST = (800 * 2.50 + 200 * 1.25 + 500 * 10.00) / 1_000_000

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
    {"role": "assistant", "content": "18C and sunny."},
    {"role": "user", "content": "And in Lyon?"},
]


# --- completion fields ------------------------------------------------------------------------------


def test_completion_fields(client, tmp_log):
    """response_model, response_id, request_id (x-request-id), finish_reason, attempts, status and actor."""
    hilt.instrument(filepath=tmp_log)
    response = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    prompt, end = one_call(tmp_log)
    ext = end["extensions"]
    assert end["action"] == "completion"
    assert end["actor"] == {"type": "agent", "id": "gpt-4o-2024-08-06"}
    assert ext["model"] == "gpt-4o"
    assert ext["response_model"] == response.model == "gpt-4o-2024-08-06"
    assert ext["response_id"] == response.id == "chatcmpl-1"
    assert ext["request_id"] == "req_1"
    assert ext["finish_reason"] == "stop"
    assert ext["attempts"] == 1
    assert ext["status_code"] == 200
    assert ext["stream"] is False
    assert (ext["provider"], ext["operation"]) == ("openai", "chat")
    assert end["content"]["text"] == "Echo: hello there"
    assert "tool_calls" not in end["content"] and "refusal" not in end["content"]
    assert "ttft_ms" not in end["metrics"]
    assert prompt["actor"] == {"type": "human", "id": "user"}
    assert prompt["extensions"]["stream"] is False
    assert prompt["extensions"]["model"] == "gpt-4o"


def test_tokens_with_cached_and_reasoning(client, server, tmp_log):
    """tokens = {prompt, completion, total, cached, reasoning} straight from the API's usage details."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.chat(usage=SCRIPTED_USAGE))
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    tokens = one_call(tmp_log)[1]["metrics"]["tokens"]
    assert tokens == {"prompt": 1000, "completion": 500, "total": 1500, "cached": 200, "reasoning": 100}


def test_cost_of_a_dated_snapshot(client, server, tmp_log):
    """gpt-4o answered by gpt-4o-2024-08-06 is priced at gpt-4o's published rates (cached at $1.25/1M)."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.chat(usage=SCRIPTED_USAGE))
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    end = one_call(tmp_log)[1]
    cost = end["metrics"]["cost_usd"]
    assert isinstance(cost, float)
    assert cost == cost_usd("openai", "gpt-4o-2024-08-06", end["metrics"]["tokens"])
    assert cost == pytest.approx(GPT_4O_COST, rel=1e-12)
    assert cost == pytest.approx(0.00725, rel=1e-12)


def test_cost_is_null_for_an_unknown_model(client, tmp_log):
    """An unknown model gets cost_usd null, never another model's price; tokens are still recorded."""
    hilt.instrument(filepath=tmp_log)
    client.chat.completions.create(model="my-unknown-model", messages=MESSAGES)
    end = one_call(tmp_log)[1]
    assert end["extensions"]["response_model"] == "my-unknown-model-2024-08-06"
    assert end["metrics"]["cost_usd"] is None
    assert end["metrics"]["tokens"]["total"] == 5


def test_cost_is_null_without_usage(client, server, tmp_log):
    """No usage in the answer: tokens all null (never 0) and cost null."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.chat(usage=False))
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    metrics = one_call(tmp_log)[1]["metrics"]
    assert metrics["tokens"] == dict.fromkeys(("prompt", "completion", "total", "cached", "reasoning"))
    assert metrics["cost_usd"] is None


def test_pricing_override_for_a_custom_model(client, server, tmp_log):
    """instrument(pricing={"my-model": ...}) prices my-model (and its dated answer name) per 1M tokens."""
    hilt.instrument(filepath=tmp_log, pricing={"my-model": {"input": 1.0, "output": 2.0}})
    server.enqueue(ScriptedReply.chat(usage={"prompt_tokens": 1000, "completion_tokens": 2000}))
    client.chat.completions.create(model="my-model", messages=MESSAGES)
    end = one_call(tmp_log)[1]
    assert end["extensions"]["response_model"] == "my-model-2024-08-06"
    assert end["metrics"]["cost_usd"] == pytest.approx((1000 * 1.0 + 2000 * 2.0) / 1_000_000, rel=1e-12)


def test_pricing_override_replaces_a_known_price(client, server, tmp_log):
    """An override for gpt-4o replaces genai-prices' price for gpt-4o-2024-08-06 answers."""
    hilt.instrument(filepath=tmp_log, pricing={"gpt-4o": {"input": 1.0, "output": 2.0}})
    server.enqueue(ScriptedReply.chat(usage={"prompt_tokens": 1000, "completion_tokens": 2000}))
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert one_call(tmp_log)[1]["metrics"]["cost_usd"] == pytest.approx(0.005, rel=1e-12)


def test_actor_falls_back_to_requested_model(client, server, tmp_log):
    """An answer without a model field: the completion actor is the requested model, response_model null."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.json({
        "id": "chatcmpl-x", "object": "chat.completion", "created": 1,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    }))
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    end = one_call(tmp_log)[1]
    assert end["actor"] == {"type": "agent", "id": "gpt-4o"}
    assert end["extensions"]["response_model"] is None
    assert end["content"]["text"] == "hi"


def test_prompt_actor_is_conversation_user(client, tmp_log):
    """Inside conversation(user_id="u-42") the prompt actor is {"type": "human", "id": "u-42"}."""
    hilt.instrument(filepath=tmp_log)
    with hilt.conversation(user_id="u-42"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    prompt, end = one_call(tmp_log)
    assert prompt["actor"] == {"type": "human", "id": "u-42"}
    assert end["actor"] == {"type": "agent", "id": "gpt-4o-2024-08-06"}


def test_retried_call_is_one_call_with_attempts(server, tmp_log):
    """Two 429s retried by the SDK then a 200: one prompt, one completion, attempts 3, the last request id."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.error(429), ScriptedReply.error(429))
    with make_client(server, max_retries=2) as client:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(server.requests) == 3
    prompt, end = one_call(tmp_log)
    assert end["action"] == "completion"
    assert end["extensions"]["attempts"] == 3
    assert end["extensions"]["request_id"] == "req_3"
    assert end["extensions"]["status_code"] == 200


def test_refusal_and_legacy_function_call(client, server, tmp_log, read_jsonl):
    """content.refusal is written when present; a legacy function_call answer is one tool call."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.chat(refusal="I can not help with that."))
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    server.enqueue(ScriptedReply.json({
        "id": "chatcmpl-f", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "finish_reason": "function_call", "message": {
            "role": "assistant", "content": None,
            "function_call": {"name": "get_weather", "arguments": '{"city": "Lyon"}'}}}],
    }))
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    refusal, function_call = [e for e in read_jsonl(tmp_log) if e["action"] == "completion"]
    assert refusal["content"]["refusal"] == "I can not help with that."
    assert refusal["content"]["text"] is None
    assert function_call["content"]["tool_calls"] == [
        {"id": None, "name": "get_weather", "arguments": '{"city": "Lyon"}'}
    ]
    assert function_call["extensions"]["finish_reason"] == "function_call"


def test_event_levels(client, server, tmp_log, hilt_records):
    """Prompt and completion records are INFO, the error record WARNING."""
    hilt.instrument(filepath=tmp_log)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    server.enqueue(ScriptedReply.error(429))
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    hilt.flush()
    levels = [(r.hilt_event.action, r.levelno) for r in hilt_records]
    assert levels == [
        ("prompt", logging.INFO), ("completion", logging.INFO), ("prompt", logging.INFO), ("system", logging.WARNING)
    ]


# --- request side -----------------------------------------------------------------------------------


def test_prompt_records_full_request(client, server, tmp_log):
    """The prompt holds all messages (system, history, tool result), tools, sampling parameters, last user text."""
    hilt.instrument(filepath=tmp_log)
    messages = copy.deepcopy(CONVERSATION)
    client.chat.completions.create(
        model="gpt-4o",
        messages=messages,
        tools=[WEATHER_TOOL],
        temperature=0.2,
        max_tokens=50,
        top_p=0.9,
        seed=7,
        response_format={"type": "json_object"},
    )
    prompt, end = one_call(tmp_log)
    assert prompt["content"]["text"] == "And in Lyon?"
    assert prompt["content"]["messages"] == CONVERSATION
    assert prompt["content"]["tools"] == [WEATHER_TOOL]
    assert prompt["extensions"]["request"] == {
        "temperature": 0.2,
        "max_tokens": 50,
        "top_p": 0.9,
        "seed": 7,
        "response_format": {"type": "json_object"},
    }
    assert end["content"]["tool_calls"] == [
        {"id": "call_1", "name": "get_weather", "arguments": '{"query": "And in Lyon?"}'}
    ]
    assert end["extensions"]["finish_reason"] == "tool_calls"


def test_prompt_text_is_last_user_message_text_parts(client, tmp_log):
    """content.text is the last user message's text parts joined (image parts left out), not earlier turns."""
    hilt.instrument(filepath=tmp_log)
    client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "user", "content": "earlier question"},
            {"role": "assistant", "content": "earlier answer"},
            {"role": "user", "content": [
                {"type": "text", "text": "first part"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                {"type": "text", "text": "second part"},
            ]},
        ],
    )
    text = one_call(tmp_log)[0]["content"]["text"]
    assert "first part" in text and "second part" in text
    assert text.index("first part") < text.index("second part")
    assert "earlier" not in text and "example.com" not in text


def test_prompt_without_parameters_has_no_request(client, tmp_log):
    """A call with no sampling parameters records no extensions.request values that were not sent."""
    hilt.instrument(filepath=tmp_log)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    prompt = one_call(tmp_log)[0]
    assert prompt["extensions"].get("request") in (None, {})
    assert "tools" not in prompt["content"]

"""The call matrix: sync/async × plain/stream × (plain call, with_raw_response, with_streaming_response) × outcome.

Every cell makes one chat call through the real SDK, first without hilt (the baseline) and then with
hilt, and checks that the caller sees exactly the same result or exception and that the file holds
exactly one prompt and one completion-or-error event, linked and with the pinned fields.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

import hilt
from hilt.testing import OpenAIServer, ScriptedReply
from test_openai_support import (  # noqa: F401 - fixtures
    NULL_TOKENS,
    REFUSED_URL,
    SDK_CYCLES_ARE_STEADY,
    cycles_made,
    fresh_server,
    make_async_client,
    heavy,
    make_client,
    one_call,
    server,
)

MESSAGES = [{"role": "user", "content": "hello matrix"}]
ANSWER = "Echo: hello matrix"

# outcome -> (scripted reply, exception class, status, error.code)
OUTCOMES: dict[str, tuple[ScriptedReply | None, type[BaseException] | None, int, str | None]] = {
    "200": (None, None, 200, None),
    "400": (ScriptedReply.error(400, message="Bad thing in messages.", code="invalid_value"),
            openai.BadRequestError, 400, "invalid_value"),
    "429": (ScriptedReply.error(429), openai.RateLimitError, 429, "rate_limit_exceeded"),
    "500": (ScriptedReply.error(500, message="Boom.", code="server_boom"), openai.InternalServerError, 500,
            "server_boom"),
    "refused": (None, openai.APIConnectionError, 599, None),
}
MODES = ("plain", "with_raw_response", "with_streaming_response")


def _text_of(result: Any, stream: bool) -> str:
    if stream:
        assert isinstance(result, openai.Stream)
        return "".join(chunk.choices[0].delta.content or "" for chunk in result if chunk.choices)
    return result.choices[0].message.content


async def _atext_of(result: Any, stream: bool) -> str:
    if stream:
        assert isinstance(result, openai.AsyncStream)
        return "".join([chunk.choices[0].delta.content or "" async for chunk in result if chunk.choices])
    return result.choices[0].message.content


def _outcome(fn: Any) -> tuple[Any, ...]:
    try:
        return ("returned", fn())
    except Exception as exc:  # noqa: BLE001 - the exception is the outcome under test
        return ("raised", type(exc), getattr(exc, "status_code", None), str(exc), getattr(exc, "code", None))


async def _aoutcome(fn: Any) -> tuple[Any, ...]:
    try:
        return ("returned", await fn())
    except Exception as exc:  # noqa: BLE001
        return ("raised", type(exc), getattr(exc, "status_code", None), str(exc), getattr(exc, "code", None))


def _sync_call(client: openai.OpenAI, stream: bool, mode: str) -> str:
    kwargs: dict[str, Any] = {"model": "gpt-4o", "messages": MESSAGES}
    if stream:
        kwargs["stream"] = True
    chat = client.chat.completions
    if mode == "plain":
        return _text_of(chat.create(**kwargs), stream)
    if mode == "with_raw_response":
        raw = chat.with_raw_response.create(**kwargs)
        assert raw.headers["x-request-id"] == "req_1"
        return _text_of(raw.parse(), stream)
    with chat.with_streaming_response.create(**kwargs) as response:
        assert response.headers["x-request-id"] == "req_1"
        return _text_of(response.parse(), stream)


async def _async_call(client: openai.AsyncOpenAI, stream: bool, mode: str) -> str:
    kwargs: dict[str, Any] = {"model": "gpt-4o", "messages": MESSAGES}
    if stream:
        kwargs["stream"] = True
    chat = client.chat.completions
    if mode == "plain":
        return await _atext_of(await chat.create(**kwargs), stream)
    if mode == "with_raw_response":
        raw = await chat.with_raw_response.create(**kwargs)
        assert raw.headers["x-request-id"] == "req_1"
        return await _atext_of(raw.parse(), stream)
    async with chat.with_streaming_response.create(**kwargs) as response:
        assert response.headers["x-request-id"] == "req_1"
        return await _atext_of(await response.parse(), stream)


def _script(server: OpenAIServer, outcome: str) -> None:
    server.reset()
    reply = OUTCOMES[outcome][0]
    if reply is not None:
        server.enqueue(reply)


def _check_events(tmp_log: Any, outcome: str, stream: bool) -> None:
    reply, exc_type, status, code = OUTCOMES[outcome]
    prompt, end = one_call(tmp_log)
    assert prompt["actor"] == {"type": "human", "id": "user"}
    assert prompt["content"]["text"] == "hello matrix"
    assert prompt["content"]["messages"] == MESSAGES
    ext = prompt["extensions"]
    assert (ext["provider"], ext["operation"], ext["model"], ext["stream"]) == ("openai", "chat", "gpt-4o", stream)
    end_ext = end["extensions"]
    assert end_ext["status_code"] == status
    assert (end_ext["provider"], end_ext["operation"], end_ext["model"]) == ("openai", "chat", "gpt-4o")
    assert end_ext["stream"] is stream
    if exc_type is None:
        assert end["action"] == "completion"
        assert end["actor"] == {"type": "agent", "id": "gpt-4o-2024-08-06"}
        assert end["content"]["text"] == ANSWER
        assert "error" not in end_ext
        assert end_ext["response_model"] == "gpt-4o-2024-08-06"
        assert end_ext["response_id"] == "chatcmpl-1"
        assert end_ext["request_id"] == "req_1"
        assert end_ext["finish_reason"] == "stop"
        assert end_ext["attempts"] == 1
        if stream:
            assert end_ext["stream_completed"] is True
            assert end_ext["usage_source"] == "missing"
            assert end["metrics"]["tokens"] == NULL_TOKENS
            assert end["metrics"]["cost_usd"] is None
            assert isinstance(end["metrics"]["ttft_ms"], (int, float)) and end["metrics"]["ttft_ms"] > 0
        else:
            assert "stream_completed" not in end_ext and "usage_source" not in end_ext
            assert end["metrics"]["tokens"] == {"prompt": 2, "completion": 3, "total": 5, "cached": 0, "reasoning": 0}
            assert isinstance(end["metrics"]["cost_usd"], float) and end["metrics"]["cost_usd"] > 0
    else:
        assert end["action"] == "system"
        assert end["actor"] == {"type": "system", "id": "openai"}
        assert end_ext["error"]["type"] == exc_type.__name__
        assert end_ext["error"]["code"] == code
        assert isinstance(end_ext["error"]["message"], str) and end_ext["error"]["message"]
        assert end["content"]["text"] is None
        assert end["metrics"]["tokens"] == NULL_TOKENS
        assert end["metrics"]["cost_usd"] is None
        if outcome == "refused":
            assert end_ext["request_id"] is None
        else:
            assert end_ext["request_id"] == "req_1"
            assert reply.body["error"]["message"] in end_ext["error"]["message"]


def _check_outcome(baseline: tuple[Any, ...], recorded: tuple[Any, ...], outcome: str) -> None:
    assert recorded == baseline
    exc_type, status = OUTCOMES[outcome][1], OUTCOMES[outcome][2]
    if exc_type is None:
        assert recorded == ("returned", ANSWER)
    else:
        assert recorded[0] == "raised" and recorded[1] is exc_type
        assert recorded[2] == (None if outcome == "refused" else status)


@pytest.mark.parametrize("outcome", list(OUTCOMES))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_sync_matrix(server, tmp_log, outcome, mode, stream):
    """A sync call ends in one linked prompt + completion/error pair and the caller sees what it sees without hilt."""
    base_url = REFUSED_URL if outcome == "refused" else server.base_url
    with make_client(server, base_url=base_url) as client:
        _script(server, outcome)
        with cycles_made() as baseline_cycles:
            baseline = _outcome(lambda: _sync_call(client, stream, mode))
        _script(server, outcome)
        hilt.instrument(filepath=tmp_log)
        with cycles_made() as recorded_cycles:
            recorded = _outcome(lambda: _sync_call(client, stream, mode))
    _check_outcome(baseline, recorded, outcome)
    if SDK_CYCLES_ARE_STEADY:
        assert heavy(recorded_cycles) == heavy(baseline_cycles)
    _check_events(tmp_log, outcome, stream)


@pytest.mark.parametrize("outcome", list(OUTCOMES))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_async_matrix(server, tmp_log, outcome, mode, stream):
    """An async call ends in one linked prompt + completion/error pair and the caller sees what it sees without hilt."""
    base_url = REFUSED_URL if outcome == "refused" else server.base_url
    async with make_async_client(server, base_url=base_url) as client:
        _script(server, outcome)
        with cycles_made() as baseline_cycles:
            baseline = await _aoutcome(lambda: _async_call(client, stream, mode))
        _script(server, outcome)
        hilt.instrument(filepath=tmp_log)
        with cycles_made() as recorded_cycles:
            recorded = await _aoutcome(lambda: _async_call(client, stream, mode))
    _check_outcome(baseline, recorded, outcome)
    if SDK_CYCLES_ARE_STEADY:
        assert heavy(recorded_cycles) == heavy(baseline_cycles)
    _check_events(tmp_log, outcome, stream)

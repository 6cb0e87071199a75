"""Failures and odd answers: timeouts, dropped connections, errors inside streams, broken bodies, a raising
handler; hilt never changes what the caller sees and never mutates the caller's data."""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pydantic
import pytest

import hilt
from hilt import _recorder
from hilt.testing import ScriptedReply
from test_openai_support import (  # noqa: F401 - fixtures
    aclient,
    client,
    fresh_server,
    make_async_client,
    make_client,
    one_call,
    read_events,
    server,
    without,
)

MESSAGES = [{"role": "user", "content": "hello errors"}]


def _outcome(fn: Callable[[], Any]) -> tuple[Any, ...]:
    """What the caller sees: the returned value (dumped) or the exception's class, status and text."""
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - the exception is the outcome under test
        return ("raised", type(exc), getattr(exc, "status_code", None), str(exc))
    if hasattr(result, "model_dump"):
        return ("returned", type(result), without(result.model_dump(), "created"))
    return ("returned", type(result), result)


# --- no response: 599 -------------------------------------------------------------------------------


def test_timeout_is_599_api_timeout_error(server, tmp_log):
    """A client timeout: the caller gets APITimeoutError; one system event, status 599, error.type APITimeoutError."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.delay(1.0))
    with make_client(server, timeout=0.1) as client, pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    prompt, end = one_call(tmp_log)
    assert end["action"] == "system"
    assert end["actor"] == {"type": "system", "id": "openai"}
    assert end["extensions"]["status_code"] == 599
    assert end["extensions"]["error"]["type"] == "APITimeoutError"
    assert end["extensions"]["error"]["code"] is None
    assert end["extensions"]["request_id"] is None


async def test_async_timeout_is_599(server, tmp_log):
    """An async client timeout is recorded as status 599 with APITimeoutError."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.delay(1.0))
    async with make_async_client(server, timeout=0.1) as client:
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    end = one_call(tmp_log)[1]
    assert end["extensions"]["status_code"] == 599
    assert end["extensions"]["error"]["type"] == "APITimeoutError"


def test_dropped_connection_is_599(client, server, tmp_log):
    """The server closing the socket without answering: APIConnectionError, status 599."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.drop_connection())
    with pytest.raises(openai.APIConnectionError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert type(caught.value) is openai.APIConnectionError
    end = one_call(tmp_log)[1]
    assert end["extensions"]["status_code"] == 599
    assert end["extensions"]["error"]["type"] == "APIConnectionError"


# --- HTTP errors ------------------------------------------------------------------------------------


def test_error_code_falls_back_to_the_error_type(client, server, tmp_log):
    """A body error with code null records the API's error type as error.code, and its message."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.error(400, message="Unrecognized request argument supplied: foo"))
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    error = one_call(tmp_log)[1]["extensions"]["error"]
    assert error["type"] == "BadRequestError"
    assert error["code"] == "invalid_request_error"
    assert "Unrecognized request argument supplied: foo" in error["message"]


def test_html_error_page_has_null_code(client, server, tmp_log):
    """A 502 HTML page: InternalServerError, status 502, error.code null."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.raw(502, b"<html>Bad Gateway</html>", "text/html"))
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    end = one_call(tmp_log)[1]
    assert end["extensions"]["status_code"] == 502
    assert end["extensions"]["error"] == {"type": "InternalServerError", "code": None,
                                          "message": end["extensions"]["error"]["message"]}


def test_retries_exhausted_is_one_error(server, tmp_log):
    """Three 429s with max_retries=2: one prompt and one error event (status 429), not three."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(*[ScriptedReply.error(429)] * 3)
    with make_client(server, max_retries=2) as client, pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(server.requests) == 3
    end = one_call(tmp_log)[1]
    assert end["extensions"]["status_code"] == 429
    assert end["extensions"]["request_id"] == "req_3"


def test_error_event_inside_stream(client, server, tmp_log):
    """An SSE error event mid-stream: APIError reaches the caller; one system event, 200, the code, the text so far."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.sse([
        {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-2024-08-06",
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Partial "}, "finish_reason": None}]},
        {"error": {"message": "The server is overloaded.", "type": "server_error", "code": "overloaded"}},
    ]))
    with pytest.raises(openai.APIError) as caught:
        list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    assert type(caught.value) is openai.APIError
    end = one_call(tmp_log)[1]
    assert end["action"] == "system"
    assert end["extensions"]["status_code"] == 200
    assert end["extensions"]["error"]["type"] == "APIError"
    assert end["extensions"]["error"]["code"] == "overloaded"
    assert "overloaded" in end["extensions"]["error"]["message"]
    assert end["content"]["text"] == "Partial "
    assert end["extensions"]["response_id"] == "chatcmpl-s"


# --- odd answers: the caller sees what it sees without hilt -----------------------------------------------

ODD_REPLIES = {
    "empty_choices": ScriptedReply.json(
        {"id": "x1", "object": "chat.completion", "created": 1, "model": "m-1", "choices": []}),
    "missing_usage": ScriptedReply.chat(usage=False),
    "content_none": ScriptedReply.chat(content_none=True),
    "unknown_fields": ScriptedReply.json({
        "id": "x2", "object": "chat.completion", "created": 1, "model": "m-2", "surprise": {"a": [1, 2]},
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi", "mood": "odd"},
                     "finish_reason": "stop", "extra": True}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2, "new_kind_tokens": 9},
    }),
    "not_an_object": ScriptedReply.json({"a": 1}),
    "not_json": ScriptedReply.raw(200, b"not json", "application/json"),
    "empty_body": ScriptedReply.raw(200, b"", "application/json"),
    "text_plain": ScriptedReply.raw(200, b"just text", "text/plain"),
}
# name -> (action of the closing event, content.text, response_id, tokens.total)
ODD_RECORDED = {
    "empty_choices": ("completion", None, "x1", None),
    "missing_usage": ("completion", "Echo: hello errors", "chatcmpl-1", None),
    "content_none": ("completion", None, "chatcmpl-1", 2),
    "unknown_fields": ("completion", "hi", "x2", 2),
    "not_an_object": ("completion", None, None, None),
    "not_json": ("system", None, None, None),
    "empty_body": ("system", None, None, None),
    "text_plain": ("completion", None, None, None),
}


@pytest.mark.parametrize("name", list(ODD_REPLIES))
def test_odd_answer_is_passed_through_and_recorded(client, server, tmp_log, name):
    """An odd answer reaches the caller exactly as without hilt and is recorded as far as it goes."""
    server.enqueue(ODD_REPLIES[name])
    baseline = _outcome(lambda: client.chat.completions.create(model="gpt-4o", messages=MESSAGES))
    server.reset()
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ODD_REPLIES[name])
    recorded = _outcome(lambda: client.chat.completions.create(model="gpt-4o", messages=MESSAGES))
    assert recorded == baseline
    action, text, response_id, total = ODD_RECORDED[name]
    prompt, end = one_call(tmp_log)
    assert end["action"] == action
    assert end["extensions"]["status_code"] == 200
    assert end["content"]["text"] == text
    assert end["metrics"]["tokens"]["total"] == total
    if action == "completion":
        assert end["extensions"]["response_id"] == response_id
    else:
        assert end["extensions"]["error"]["type"] == recorded[1].__name__


@pytest.mark.parametrize("name", ["empty_choices", "not_json", "text_plain"])
async def test_async_odd_answer_is_passed_through(aclient, server, tmp_log, name):
    """The async client sees odd answers exactly as without hilt, and they are recorded once."""
    async def call() -> tuple[Any, ...]:
        try:
            result = await aclient.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        except Exception as exc:  # noqa: BLE001
            return ("raised", type(exc), str(exc))
        return ("returned", type(result), getattr(result, "model_dump", lambda: result)())

    server.enqueue(ODD_REPLIES[name])
    baseline = await call()
    server.reset()
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ODD_REPLIES[name])
    assert await call() == baseline
    assert one_call(tmp_log)[1]["action"] == ODD_RECORDED[name][0]


def test_odd_stream_chunks_are_passed_through(client, server, tmp_log):
    """A stream of odd chunks (no choices, unknown fields, no [DONE]) yields the same chunks as without hilt."""
    events = [
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": []},
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "weird": 1,
         "choices": [{"index": 0, "delta": {"content": "odd"}, "finish_reason": None}]},
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 3, "delta": {"content": "other choice"}, "finish_reason": "stop"}]},
    ]
    server.enqueue(ScriptedReply.sse(events, done=False))
    baseline = [c.model_dump() for c in client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)]
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.sse(events, done=False))
    recorded = [c.model_dump() for c in client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)]
    assert recorded == baseline
    end = one_call(tmp_log)[1]
    assert end["content"]["text"] == "odd"
    assert end["extensions"]["stream_completed"] is True


# --- hilt's own failures never reach the caller ----------------------------------------------------------


class ExplodingHandler(logging.Handler):
    """A handler whose emit raises (as a broken user handler might)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.calls += 1
        raise RuntimeError("handler exploded")


def test_raising_handler_never_reaches_the_caller(client, server, tmp_log, internal_reports):
    """A handler on the hilt logger whose emit raises: plain, streamed and failing calls behave as without it."""
    hilt.instrument(filepath=tmp_log)
    exploding = ExplodingHandler()
    logging.getLogger("hilt").addHandler(exploding)
    try:
        completion = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        chunks = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
        server.enqueue(ScriptedReply.error(429))
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    finally:
        hilt.flush()  # the handler runs on the recorder thread
        logging.getLogger("hilt").removeHandler(exploding)
    assert completion.choices[0].message.content == "Echo: hello errors"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: hello errors"
    assert exploding.calls == 6
    assert [e["action"] for e in read_events(tmp_log)] == ["prompt", "completion"] * 2 + ["prompt", "system"]
    reports = internal_reports()
    assert len(reports) == 1 and "handler exploded" in reports[0].getMessage()


async def test_raising_handler_never_reaches_the_async_caller(aclient, tmp_log):
    """A raising handler never reaches an async caller, plain or streamed."""
    hilt.instrument(filepath=tmp_log)
    exploding = ExplodingHandler()
    logging.getLogger("hilt").addHandler(exploding)
    try:
        completion = await aclient.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        chunks = [c async for c in await aclient.chat.completions.create(model="gpt-4o", messages=MESSAGES,
                                                                          stream=True)]
    finally:
        hilt.flush()
        logging.getLogger("hilt").removeHandler(exploding)
    assert completion.choices[0].message.content == "Echo: hello errors"
    assert len(chunks) == 5
    assert exploding.calls == 4


def test_raising_redact_never_reaches_the_caller(client, tmp_log, internal_reports):
    """A redact function that raises never reaches the caller, no unredacted text is written, and it is reported."""
    def broken(text: str) -> str:
        raise ValueError("redactor broke")

    hilt.instrument(filepath=tmp_log, redact=broken)
    completion = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    assert completion.choices[0].message.content == "Echo: hello errors"
    assert len(chunks) == 5
    hilt.flush()
    written = tmp_log.read_text() if tmp_log.exists() else ""
    assert "hello errors" not in written  # never written unredacted
    assert any("redactor broke" in r.getMessage() for r in internal_reports())


# --- the caller's data ------------------------------------------------------------------------------------


def test_caller_data_is_not_mutated(client, tmp_log):
    """The caller's messages, tools, extra_headers, extra_body and stream_options are unchanged after the calls."""
    hilt.instrument(filepath=tmp_log, stream_usage=True, redact=lambda s: s.upper(), max_content_chars=5)
    image = "data:image/png;base64," + "QUJD" * 100
    messages = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": [{"type": "text", "text": "look at this"},
                                     {"type": "image_url", "image_url": {"url": image}}]},
    ]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    extra_headers = {"X-Trace": "abc"}
    extra_body = {"metadata": {"k": "v"}}
    stream_options = {"include_obfuscation": False}
    before = copy.deepcopy((messages, tools, extra_headers, extra_body, stream_options))
    client.chat.completions.create(model="gpt-4o", messages=messages, tools=tools, extra_headers=extra_headers,
                                   extra_body=extra_body)
    list(client.chat.completions.create(model="gpt-4o", messages=messages, stream=True, extra_headers=extra_headers,
                                        stream_options=stream_options))
    assert (messages, tools, extra_headers, extra_body, stream_options) == before
    assert len(read_events(tmp_log)) == 4



@contextlib.contextmanager
def recorder_busy() -> Iterator[None]:
    """Keep hilt's recorder thread inside a task of ours for the ``with`` block, so the tasks of the calls made in
    it (reading the request, writing the events) run only after the block, when it has let go."""
    inside, gate = threading.Event(), threading.Event()
    _recorder.submit(lambda: (inside.set(), gate.wait(10)))
    assert inside.wait(10), "the recorder thread never ran the task"
    try:
        yield
    finally:
        gate.set()
    hilt.flush()


def test_record_holds_what_was_sent_when_the_caller_changes_its_data_after_the_call(client, server, tmp_log):
    """The request is read on the recorder thread, after the call has returned: a caller that reuses and changes its
    messages, response_format, stop list and extra_body at once still gets a record of what was sent. (hilt keeps
    the body the SDK built, a copy of the caller's data: this fails if an SDK release stops copying.)"""
    hilt.instrument(filepath=tmp_log)
    messages = [{"role": "system", "content": "be terse"}, {"role": "user", "content": "what was sent"}]
    response_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}}
    stop, extra_body = ["END"], {"top_k": 5}
    sent = copy.deepcopy((messages, response_format, stop))
    with recorder_busy():
        client.chat.completions.create(model="gpt-4o", messages=messages, response_format=response_format, stop=stop,
                                       extra_body=extra_body)
        messages[1]["content"] = "changed"
        messages.append({"role": "user", "content": "a later turn"})
        response_format["json_schema"]["schema"]["type"] = "changed"
        stop.append("changed")
        extra_body["top_k"] = 999
        assert not tmp_log.exists() or tmp_log.stat().st_size == 0  # the request is read only after the changes
    prompt, _ = one_call(tmp_log)
    assert prompt["content"]["text"] == "what was sent"
    assert prompt["content"]["messages"] == sent[0]
    request = prompt["extensions"]["request"]
    assert request == {"response_format": sent[1], "stop": sent[2], "top_k": 5}
    assert server.requests[-1].body["top_k"] == 5  # what hilt recorded is what the server got


def test_error_after_a_200_answer_keeps_what_the_api_reported(client, server, tmp_log):
    """parse() raising LengthFinishReasonError on a 200 answer: one system event that keeps the answer's usage and id."""

    class Answer(pydantic.BaseModel):
        city: str

    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.chat(finish_reason="length"))
    with pytest.raises(openai.LengthFinishReasonError):
        client.chat.completions.parse(model="gpt-4o", messages=MESSAGES, response_format=Answer)
    end = one_call(tmp_log)[1]
    assert end["action"] == "system"
    assert end["extensions"]["status_code"] == 200
    assert end["extensions"]["error"]["type"] == "LengthFinishReasonError"
    assert end["extensions"]["response_id"] == "chatcmpl-1"
    assert end["metrics"]["tokens"]["total"] == 5
    assert end["metrics"]["cost_usd"] is not None and end["metrics"]["cost_usd"] > 0

"""What content is recorded: base64 markers, capture_content=False, redact, max_content_chars, and secrets."""

from __future__ import annotations

import base64
import os

import openai
import pytest

import hilt
from hilt.testing import ScriptedReply
from test_openai_support import (  # noqa: F401 - fixtures
    STREAM_CUT_ERROR,
    API_KEY,
    aclient,
    client,
    fresh_server,
    log_text,
    one_call,
    read_events,
    server,
)

IMAGE_BYTES = bytes(range(256)) * 3 + b"\x89PNG"  # 772 bytes: base64 with "==" padding
AUDIO_BYTES = os.urandom(3001)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- multimodal markers -----------------------------------------------------------------------------


def test_image_data_url_becomes_size_marker(client, tmp_log):
    """An inline data-URL image is recorded as "<image/png base64, N bytes>" with N the decoded size."""
    hilt.instrument(filepath=tmp_log)
    encoded = _b64(IMAGE_BYTES)
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{encoded}", "detail": "low"}},
    ]}])
    raw = log_text(tmp_log)
    assert encoded not in raw and encoded[:64] not in raw
    prompt = one_call(tmp_log)[0]
    assert prompt["content"]["text"] == "what is this?"
    assert prompt["content"]["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": f"<image/png base64, {len(IMAGE_BYTES)} bytes>", "detail": "low"}},
    ]}]


def test_input_audio_becomes_size_marker(client, tmp_log):
    """input_audio base64 data is recorded as "<audio/wav base64, N bytes>", the format kept."""
    hilt.instrument(filepath=tmp_log)
    encoded = _b64(AUDIO_BYTES)
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": [
        {"type": "text", "text": "transcribe"},
        {"type": "input_audio", "input_audio": {"data": encoded, "format": "wav"}},
    ]}])
    assert encoded[:64] not in log_text(tmp_log)
    part = one_call(tmp_log)[0]["content"]["messages"][0]["content"][1]
    assert part == {"type": "input_audio", "input_audio": {"data": f"<audio/wav base64, {len(AUDIO_BYTES)} bytes>",
                                                           "format": "wav"}}


def test_responses_input_image_becomes_size_marker(client, tmp_log):
    """A Responses input_image data URL is replaced by its marker too."""
    hilt.instrument(filepath=tmp_log)
    encoded = _b64(IMAGE_BYTES)
    client.responses.create(model="gpt-4o", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "describe"},
        {"type": "input_image", "image_url": f"data:image/jpeg;base64,{encoded}"},
    ]}])
    assert encoded[:64] not in log_text(tmp_log)
    prompt = one_call(tmp_log)[0]
    assert prompt["content"]["text"] == "describe"
    assert prompt["content"]["messages"][0]["content"][1]["image_url"] == f"<image/jpeg base64, {len(IMAGE_BYTES)} bytes>"


# --- capture_content=False --------------------------------------------------------------------------

SECRET_PROMPT = "zebra-prompt-7731 about my diagnosis"
SECRET_SYSTEM = "zebra-system-5512"
SECRET_ANSWER = "zebra-answer-9904 is the answer"


def test_capture_content_false_records_no_text(client, server, tmp_log):
    """capture_content=False: no prompt, system, answer, tool or embedding text anywhere in the file."""
    hilt.instrument(filepath=tmp_log, capture_content=False)
    messages = [{"role": "system", "content": SECRET_SYSTEM}, {"role": "user", "content": SECRET_PROMPT}]
    server.enqueue(ScriptedReply.chat(text=SECRET_ANSWER))
    client.chat.completions.create(model="gpt-4o", messages=messages)
    server.enqueue(ScriptedReply.chat(text=SECRET_ANSWER))
    list(client.chat.completions.create(model="gpt-4o", messages=messages, stream=True))
    server.enqueue(ScriptedReply.chat(tool_calls=[{"name": "zebra_tool", "arguments": {"q": "zebra-args-3141"}}]))
    client.chat.completions.create(model="gpt-4o", messages=messages, tools=[{"type": "function", "function": {
        "name": "zebra_tool", "description": "zebra-tooldesc-2718", "parameters": {"type": "object"}}}])
    client.responses.create(model="gpt-4o", input=SECRET_PROMPT, instructions=SECRET_SYSTEM)
    client.embeddings.create(model="text-embedding-3-small", input=SECRET_PROMPT)
    server.enqueue(ScriptedReply.cut_stream(3))
    with pytest.raises(STREAM_CUT_ERROR):
        list(client.chat.completions.create(model="gpt-4o", messages=messages, stream=True))
    raw = log_text(tmp_log)
    for secret in ("zebra", "diagnosis", "Echo:"):
        assert secret not in raw
    events = read_events(tmp_log)
    assert len(events) == 12
    for event in events:
        assert event["content"].get("text") is None
        assert "messages" not in event["content"] and "tools" not in event["content"]
        assert "tool_calls" not in event["content"]
    completions = [e for e in events if e["action"] == "completion"]
    assert [e["metrics"]["tokens"]["prompt"] for e in completions][:1] == [5]  # metadata is still recorded


# --- redact -------------------------------------------------------------------------------------------


def _redact(text: str) -> str:
    return text.replace("secret", "[X]")


def test_redact_applies_to_every_text(client, server, tmp_log):
    """redact runs on prompt text, every message, completion text, tool arguments and streamed text."""
    hilt.instrument(filepath=tmp_log, redact=_redact)
    messages = [
        {"role": "system", "content": "the secret system"},
        {"role": "user", "content": [{"type": "text", "text": "my secret question"}]},
    ]
    server.enqueue(ScriptedReply.chat(text="a secret answer", tool_calls=[{"name": "f", "arguments": {"q": "secret"}}]))
    client.chat.completions.create(model="gpt-4o", messages=messages)
    server.enqueue(ScriptedReply.chat(text="streamed secret answer"))
    list(client.chat.completions.create(model="gpt-4o", messages=messages, stream=True))
    assert "secret" not in log_text(tmp_log)
    prompt, end, stream_prompt, stream_end = read_events(tmp_log)
    assert prompt["content"]["text"] == "my [X] question"
    assert prompt["content"]["messages"] == [
        {"role": "system", "content": "the [X] system"},
        {"role": "user", "content": [{"type": "text", "text": "my [X] question"}]},
    ]
    assert end["content"]["text"] == "a [X] answer"
    assert end["content"]["tool_calls"][0]["arguments"] == '{"q": "[X]"}'
    assert stream_end["content"]["text"] == "streamed [X] answer"


def test_redact_applies_to_partial_stream_text(client, server, tmp_log):
    """A broken stream's partial text is redacted too."""
    hilt.instrument(filepath=tmp_log, redact=_redact)
    server.enqueue(ScriptedReply.cut_stream(4))
    with pytest.raises(STREAM_CUT_ERROR):
        list(client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "secret secret x"}],
                                            stream=True))
    assert "secret" not in log_text(tmp_log)
    assert one_call(tmp_log)[1]["content"]["text"] == "Echo: [X] [X] "


def test_redact_applies_to_error_messages(client, server, tmp_log):
    """An API error message echoing the user's text is redacted like every other recorded text."""
    hilt.instrument(filepath=tmp_log, redact=_redact)
    server.enqueue(ScriptedReply.error(400, message="Invalid value for 'content': 'my secret'."))
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "my secret"}])
    end = one_call(tmp_log)[1]
    assert "[X]" in end["extensions"]["error"]["message"]
    assert "secret" not in log_text(tmp_log)


# --- max_content_chars ----------------------------------------------------------------------------------


def test_max_content_chars_caps_every_text(client, server, tmp_log):
    """max_content_chars cuts the prompt text, message contents and the completion text."""
    long_prompt = "p" * 50 + "Q" * 950
    long_answer = "a" * 50 + "Z" * 950
    hilt.instrument(filepath=tmp_log, max_content_chars=50)
    server.enqueue(ScriptedReply.chat(text=long_answer))
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": long_prompt}])
    raw = log_text(tmp_log)
    assert "QQQQQQQQQQ" not in raw and "ZZZZZZZZZZ" not in raw
    prompt, end = one_call(tmp_log)
    for text in (prompt["content"]["text"], prompt["content"]["messages"][0]["content"], end["content"]["text"]):
        assert text[:50] in ("p" * 50, "a" * 50)
        assert len(text) < 100
    assert end["metrics"]["tokens"]["completion"] == 1  # the numbers are not affected


# --- secrets ----------------------------------------------------------------------------------------------


def _assert_no_secrets(raw: str) -> None:
    assert API_KEY not in raw
    assert API_KEY[3:] not in raw
    assert "authorization" not in raw.lower()
    assert "bearer" not in raw.lower()


def test_api_key_and_auth_header_never_recorded(client, server, tmp_log):
    """The key set on the client, the Authorization header and "Bearer" never reach the file."""
    hilt.instrument(filepath=tmp_log)
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}],
                                   extra_headers={"X-Custom": "1"})
    list(client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True))
    server.enqueue(ScriptedReply.error(500))
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert server.requests[0].headers["authorization"] == f"Bearer {API_KEY}"  # it was sent
    assert len(read_events(tmp_log)) == 6
    _assert_no_secrets(log_text(tmp_log))


def test_api_key_echoed_in_401_is_not_recorded(client, server, tmp_log):
    """A 401 whose message echoes the key (as OpenAI's "Incorrect API key provided: ...") is recorded without it."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.error(
        401, message=f"Incorrect API key provided: {API_KEY}. You can find your API key at https://platform.openai.com."
    ))
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert API_KEY in str(caught.value)  # the caller's exception is untouched
    end = one_call(tmp_log)[1]
    assert end["extensions"]["status_code"] == 401
    assert end["extensions"]["error"]["type"] == "AuthenticationError"
    assert end["extensions"]["error"]["code"] == "invalid_api_key"
    assert "Incorrect API key provided" in end["extensions"]["error"]["message"]
    _assert_no_secrets(log_text(tmp_log))


def test_masked_and_bearer_keys_in_messages_are_not_recorded(server, tmp_log):
    """Key-like strings (masked sk-... and "Bearer <token>") in an error message are scrubbed; also non-sk keys."""
    hilt.instrument(filepath=tmp_log)
    other_key = "azure0123456789abcdef0123456789ab"
    server.enqueue(ScriptedReply.error(
        401, message=f"Bad key sk-proj-abc****wxyz; sent Bearer tok_9f8e7d6c5b; key {other_key}."
    ))
    with openai.OpenAI(base_url=server.base_url, api_key=other_key, max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    raw = log_text(tmp_log)
    for secret in ("sk-proj-abc", "wxyz", "tok_9f8e7d6c5b", other_key):
        assert secret not in raw
    assert "Bearer" not in raw
    assert "Bad key" in one_call(tmp_log)[1]["extensions"]["error"]["message"]


async def test_async_api_key_echoed_in_401_is_not_recorded(aclient, server, tmp_log):
    """The async client's key echoed in a 401 is not recorded either."""
    hilt.instrument(filepath=tmp_log)
    server.enqueue(ScriptedReply.error(401, message=f"Incorrect API key provided: {API_KEY}."))
    with pytest.raises(openai.AuthenticationError):
        await aclient.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert one_call(tmp_log)[1]["extensions"]["status_code"] == 401
    _assert_no_secrets(log_text(tmp_log))


def test_capture_content_false_covers_error_messages(client, server, tmp_log):
    """With capture_content=False an API error echoing the prompt text does not put that text in the file."""
    hilt.instrument(filepath=tmp_log, capture_content=False)
    server.enqueue(ScriptedReply.error(400, message=f"Invalid 'messages[0].content': '{SECRET_PROMPT}'."))
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": SECRET_PROMPT}])
    end = one_call(tmp_log)[1]
    assert end["extensions"]["error"]["type"] == "BadRequestError"
    assert "zebra" not in log_text(tmp_log)


@pytest.mark.parametrize("options", [{"capture_content": False}, {"redact": _redact}], ids=["capture_off", "redact"])
def test_prediction_content_follows_the_content_options(client, tmp_log, options):
    """The predicted-output text sent as `prediction` is content: hidden with capture_content=False, redacted by redact."""
    hilt.instrument(filepath=tmp_log, **options)
    client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "refactor this"}],
        prediction={"type": "content", "content": "def secret_function(): return zebra_private_data"},
    )
    assert len(read_events(tmp_log)) == 2
    raw = log_text(tmp_log)
    assert "zebra_private_data" not in raw if "capture_content" in options else "secret_function" not in raw

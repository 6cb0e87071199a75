"""Secrets never reach any output: log files, audit lines on stdout, stderr, callbacks, hilt's own logging.

A realistic run through the embedded OpenAI-compatible server with every sink on: chat (plain and
streamed), Responses, embeddings, a 401 whose message echoes the key, a 429, an Azure client (key in
the ``api-key`` header), and a private key sent as ``default_headers`` and ``extra_headers``. Then
every byte hilt could have written is scanned for each secret (and for any 12-character piece of one).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import stat
import string
from pathlib import Path
from typing import Any

import openai
import pytest

import hilt
import hilt.audit
from hilt.testing import OpenAIServer, ScriptedReply

ALPHABET = string.ascii_letters + string.digits


def _random(n: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(n))


@pytest.fixture
def keys() -> dict[str, str]:
    private_body = base64.b64encode(os.urandom(96)).decode("ascii")
    return {
        "openai": "sk-proj-" + _random(40),
        "azure": secrets.token_hex(16),
        # The body of a service account's "private_key" (PEM lines can't go in a header, the base64 can).
        "private_default": "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" + private_body,
        "private_extra": "-----BEGIN PRIVATE KEY-----" + base64.b64encode(os.urandom(96)).decode("ascii"),
    }


def _pieces(secret: str, size: int = 12) -> set[str]:
    return {secret[i:i + size] for i in range(0, len(secret) - size + 1)}


def _assert_clean(where: str, text: str, keys: dict[str, str]) -> None:
    for name, secret in keys.items():
        assert secret not in text, f"{name} key found in {where}"
        # Masked or cut copies ("sk-proj-abc...wxyz") would still leak a piece: no 12 characters of one.
        fixed = {"MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "-----BEGIN PRIVATE KEY-----"}
        leaked = [p for p in _pieces(secret) if p in text and not any(p in f for f in fixed)]
        assert not leaked, f"pieces of the {name} key found in {where}: {leaked[:3]}"
    lowered = text.lower()
    assert "authorization" not in lowered, where
    assert "bearer sk-" not in lowered, where
    assert "private key" not in lowered, where
    assert f"api-key: {keys['azure']}" not in lowered and f'"api-key": "{keys["azure"]}"' not in lowered, where


def _collector() -> tuple[list[str], Any]:
    payloads: list[str] = []

    def collect(event: hilt.audit.AuditEvent) -> None:
        payloads.append(json.dumps(
            {"timestamp": event.timestamp, "event_type": event.event_type, "details": event.details},
            default=str,
        ))

    return payloads, collect


def _all_files(root: Path) -> dict[str, str]:
    hilt.flush()  # every call made so far is written before the scan
    return {str(p): p.read_bytes().decode("utf-8", "backslashreplace") for p in root.rglob("*") if p.is_file()}


def test_no_secret_reaches_any_output(tmp_path, keys, capsys, caplog):
    caplog.set_level(logging.DEBUG, logger="hilt")
    path = tmp_path / "audit" / "deep" / "hilt.jsonl"
    payloads, collect = _collector()
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    with OpenAIServer() as server:
        hilt.instrument(filepath=path, audit=True, providers=["openai"])
        hilt.register_audit_callback(collect)
        client = openai.OpenAI(
            base_url=server.base_url, api_key=keys["openai"], max_retries=0,
            default_headers={"X-Service-Account-Key": keys["private_default"]},
        )
        with client:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=messages, extra_headers={"X-Private-Key": keys["private_extra"]}
            )
            list(client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True))
            client.responses.create(model="gpt-4o-mini", input="What is the capital of France?")
            client.embeddings.create(model="text-embedding-3-small", input="capital of France")
            server.enqueue(ScriptedReply.error(
                401, message=f"Incorrect API key provided: {keys['openai']}. You sent "
                f"Bearer {keys['openai']}.",
            ))
            with pytest.raises(openai.AuthenticationError):
                client.chat.completions.create(model="gpt-4o-mini", messages=messages)
            server.enqueue(ScriptedReply.error(429))
            with pytest.raises(openai.RateLimitError):
                client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        azure = openai.AzureOpenAI(
            azure_endpoint=server.root_url, api_key=keys["azure"], api_version="2024-06-01", max_retries=0,
            default_headers={"X-Service-Account-Key": keys["private_default"]},
        )
        with azure:
            azure.chat.completions.create(model="my-deployment", messages=messages)
            server.enqueue(ScriptedReply.error(401, message=f"Access denied: invalid api-key {keys['azure']}."))
            with pytest.raises(openai.AuthenticationError):
                azure.chat.completions.create(model="my-deployment", messages=messages)
        sent = server.requests
        hilt.audit.wait_for_callbacks()
        hilt.uninstrument()

    # The secrets were really sent, so their absence below means something.
    assert sent[0].headers["authorization"] == f"Bearer {keys['openai']}"
    assert sent[0].headers["x-private-key"] == keys["private_extra"]
    assert all(r.headers["x-service-account-key"] == keys["private_default"] for r in sent)
    assert sent[-1].headers["api-key"] == keys["azure"]

    events = list(hilt.Session(path, mode="r").read(strict=True))
    assert len(events) == 16  # 8 calls: a prompt and a completion or error event each
    assert sum(1 for e in events if (e.extensions.get("status_code") or 0) >= 400) == 3
    assert [e.extensions["provider"] for e in events[-4:]] == ["azure"] * 4
    out, err = capsys.readouterr()
    assert len([line for line in out.splitlines() if line.startswith("[HILT_AUDIT] ")]) == 16
    assert len(payloads) == 16

    files = _all_files(tmp_path)
    assert str(path) in files
    for name, text in files.items():
        _assert_clean(name, text, keys)
    _assert_clean("stdout", out, keys)
    _assert_clean("stderr", err, keys)
    for payload in payloads:
        _assert_clean("an audit callback payload", payload, keys)
    _assert_clean("caplog", caplog.text, keys)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700  # intermediate folders: tested below


def test_every_folder_the_handler_creates_is_private(tmp_path):
    """HiltJSONLHandler's docstring: 'parent folders created 0700'. _open() calls
    os.makedirs(dirname, mode=0o700), and since Python 3.7 makedirs applies mode to the last folder
    only; the ones above it get 0777 & ~umask (0755 here), so other users can list the log folders."""
    path = tmp_path / "a" / "b" / "hilt.jsonl"
    old = os.umask(0o022)  # the usual umask; with 077 the bug is hidden
    try:
        hilt.instrument(filepath=path, providers=[])
        hilt.emit(hilt.Event(session_id="s", action="prompt", content={"text": "x"}))
        hilt.uninstrument()
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700


def test_a_header_secret_echoed_in_an_error_message_is_not_recorded(tmp_path, keys):
    """_scrub() (hilt/providers/openai.py) removes only the client's api_key, 'sk-...' and 'Bearer ...'.
    A secret the client sent in another header (default_headers / extra_headers, e.g. a gateway or
    service-account key) that a proxy quotes in its error message is written verbatim to
    extensions.error.message (and so to the file, the audit line and the callbacks)."""
    path = tmp_path / "logs" / "hilt.jsonl"
    with OpenAIServer() as server:
        hilt.instrument(filepath=path, providers=["openai"])
        with openai.OpenAI(base_url=server.base_url, api_key=keys["openai"], max_retries=0,
                           default_headers={"X-Service-Account-Key": keys["private_default"]}) as client:
            server.enqueue(ScriptedReply.error(
                403, message=f"Gateway refused X-Service-Account-Key: {keys['private_default']}",
            ))
            with pytest.raises(openai.PermissionDeniedError):
                client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        hilt.uninstrument()
    assert keys["private_default"] not in path.read_text()


PROMPT = "zebra quartz lullaby marmalade"
ANSWER = "obsidian walrus cantata"


def test_capture_content_false_leaves_no_text_anywhere(tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG, logger="hilt")
    path = tmp_path / "logs" / "hilt.jsonl"
    payloads, collect = _collector()
    messages = [{"role": "system", "content": f"Be brief. {PROMPT}"}, {"role": "user", "content": PROMPT}]
    answers = []
    with OpenAIServer() as server:
        hilt.instrument(filepath=path, audit=True, providers=["openai"], capture_content=False)
        hilt.register_audit_callback(collect)
        with openai.OpenAI(base_url=server.base_url, api_key="sk-test-" + _random(20), max_retries=0) as client:
            server.enqueue(ScriptedReply.chat(ANSWER))
            answers.append(client.chat.completions.create(model="gpt-4o-mini", messages=messages)
                           .choices[0].message.content)
            server.enqueue(ScriptedReply.chat(ANSWER))
            chunks = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
            answers.append("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
            server.enqueue(ScriptedReply.chat(ANSWER))
            answers.append(client.responses.create(model="gpt-4o-mini", instructions=PROMPT, input=PROMPT).output_text)
            client.embeddings.create(model="text-embedding-3-small", input=PROMPT)
            server.enqueue(ScriptedReply.error(400, message=f"Invalid content: '{PROMPT}' (answer was {ANSWER})"))
            with pytest.raises(openai.BadRequestError):
                client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        hilt.audit.wait_for_callbacks()
        hilt.uninstrument()
    assert answers == [ANSWER] * 3  # the text really went through
    events = list(hilt.Session(path, mode="r").read(strict=True))
    assert len(events) == 10
    out, err = capsys.readouterr()
    assert len([line for line in out.splitlines() if line.startswith("[HILT_AUDIT] ")]) == 10
    assert len(payloads) == 10
    sinks = {**_all_files(tmp_path), "stdout": out, "stderr": err, "caplog": caplog.text}
    sinks.update({f"callback {i}": p for i, p in enumerate(payloads)})
    for where, text in sinks.items():
        for word in (*PROMPT.split(), *ANSWER.split()):
            assert word not in text, f"{word!r} found in {where}"

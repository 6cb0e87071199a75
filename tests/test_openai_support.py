"""Shared fixtures and helpers for the ``test_openai_*`` modules (this module holds no tests).

Every OpenAI test drives the real ``openai`` SDK over HTTP against :class:`hilt.testing.OpenAIServer`
and asserts on the JSON lines hilt wrote. Modules import what they need from here::

    from test_openai_support import API_KEY, aclient, client, fresh_server, server, ...
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

import hilt
from hilt.testing import OpenAIServer

#: Set on every client; it must never appear in a log file.
API_KEY = "sk-hilt-test-K3y0123456789abcdef"
#: Nothing listens on port 1: the SDK gets "connection refused" at once.
REFUSED_URL = "http://127.0.0.1:1/v1"
TOKEN_KEYS = {"prompt", "completion", "total", "cached", "reasoning"}
NULL_TOKENS = dict.fromkeys(TOKEN_KEYS)

#: The tests run on the current SDK and, in CI, on the oldest release hilt records (see ``make test-sdk``).
SDK_MAJOR = int(openai.__version__.split(".")[0])
#: What the SDK raises when a stream's connection is cut mid-body: from 3.x (on httpx2) APIConnectionError;
#: 1.x and 2.x (on httpx) let httpx's own RemoteProtocolError through. hilt records and re-raises either.
STREAM_CUT_ERROR: type[Exception] = (openai.APIConnectionError if SDK_MAJOR >= 3
                                     else importlib.import_module("httpx").RemoteProtocolError)
#: 1.x and 2.x leave a call's HTTP response in a reference cycle now and then, at random, with or without hilt
#: (and hilt's call object, which the response's hooks hold, with it): the checks on cycles need 3.x.
SDK_CYCLES_ARE_STEADY = SDK_MAJOR >= 3


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAIServer]:
    """One embedded OpenAI-compatible server per test module."""
    with OpenAIServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def fresh_server(server: OpenAIServer) -> Iterator[None]:
    """Every test starts with no queued replies, no recorded requests and ids counting from 1."""
    server.reset()
    yield
    server.reset()


def make_client(server: OpenAIServer, **options: Any) -> openai.OpenAI:
    options.setdefault("max_retries", 0)
    options.setdefault("base_url", server.base_url)
    return openai.OpenAI(api_key=API_KEY, **options)


def make_async_client(server: OpenAIServer, **options: Any) -> openai.AsyncOpenAI:
    options.setdefault("max_retries", 0)
    options.setdefault("base_url", server.base_url)
    return openai.AsyncOpenAI(api_key=API_KEY, **options)


@pytest.fixture
def client(server: OpenAIServer) -> Iterator[openai.OpenAI]:
    """A sync client of the test server, retries off, closed after the test."""
    with make_client(server) as c:
        yield c


@pytest.fixture
async def aclient(server: OpenAIServer) -> AsyncIterator[openai.AsyncOpenAI]:
    """An async client of the test server, retries off, closed after the test."""
    async with make_async_client(server) as c:
        yield c


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """The parsed lines of a hilt JSONL file (``[]`` when it does not exist yet)."""
    hilt.flush()  # calls are recorded in the background: finish them, as a reader in this process must
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    if not data:
        return []
    assert data.endswith(b"\n"), "last line is not terminated"
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


def log_text(path: str | Path) -> str:
    """The whole text of a hilt JSONL file once every call made so far is written (for "never in the file" checks)."""
    hilt.flush()
    return Path(path).read_text()


def check_pair(prompt: dict[str, Any], end: dict[str, Any]) -> None:
    """The pinned links between a prompt event and the event that closes its call."""
    assert prompt["action"] == "prompt"
    assert end["action"] in ("completion", "system")
    assert prompt["extensions"]["call_id"] == end["extensions"]["call_id"]
    assert end["extensions"]["reply_to"] == prompt["event_id"]
    assert end["session_id"] == prompt["session_id"]
    assert "status_code" not in prompt["extensions"]
    assert "metrics" not in prompt
    assert "reply_to" not in prompt["extensions"]
    latency = end["metrics"]["latency_ms"]
    assert isinstance(latency, (int, float)) and not isinstance(latency, bool) and latency > 0
    assert set(end["metrics"]["tokens"]) == TOKEN_KEYS


def one_call(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The file holds exactly one call: its prompt and closing event, checked for the pinned links."""
    events = read_events(path)
    assert [e["action"] for e in events][:1] == ["prompt"], events
    assert len(events) == 2, [(e["action"], e["extensions"].get("status_code")) for e in events]
    check_pair(events[0], events[1])
    return events[0], events[1]


def calls(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Events grouped by ``extensions.call_id`` (in file order)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        grouped.setdefault(event["extensions"]["call_id"], []).append(event)
    return grouped


def closing_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["action"] in ("completion", "system")]


def without(data: Any, *keys: str) -> Any:
    """``data`` (nested dicts/lists) without the given keys anywhere (e.g. ``created`` timestamps)."""
    if isinstance(data, dict):
        return {k: without(v, *keys) for k, v in data.items() if k not in keys}
    if isinstance(data, list):
        return [without(v, *keys) for v in data]
    return data


@contextlib.contextmanager
def cycles_made() -> Iterator[Counter[str]]:
    """Counts, by type name, the objects made in the block (and its recording, flushed at the end) that only
    the garbage collector can free: they sit in reference cycles, so letting go of them frees nothing."""
    found: Counter[str] = Counter()
    gc.collect()
    gc.disable()
    try:
        yield found
        hilt.flush()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found.update(type(thing).__name__ for thing in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


#: What a call leaves that holds its body and chunks: none may wait for the garbage collector because of hilt.
HEAVY_TYPES = ("_OpenAICall", "Response", "Stream", "AsyncStream", "ChatCompletion", "ChatCompletionChunk")


def heavy(found: Counter[str]) -> dict[str, int]:
    """The :data:`HEAVY_TYPES` among ``found`` (from :func:`cycles_made`), with their counts."""
    return {name: found[name] for name in HEAVY_TYPES if found[name]}

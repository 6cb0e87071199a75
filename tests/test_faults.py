"""Faults around the audit trail never reach the LLM caller.

Every case drives the real ``openai`` SDK (``max_retries=0``) against :class:`hilt.testing.OpenAIServer`
and checks that the call returns exactly what it returns without hilt, that no exception reaches the
caller, and that a failure of hilt's own is reported once on ``hilt.internal``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import threading
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import openai
import pytest
from openai._base_client import AsyncAPIClient, SyncAPIClient

import hilt
import hilt.instrumentation
import hilt.providers.openai as hilt_openai
from hilt import HiltJSONLHandler
from test_openai_support import (  # noqa: F401 - fixtures
    fresh_server,
    make_async_client,
    make_client,
    read_events,
    server,
)

PATCHED = [(SyncAPIClient, "request"), (SyncAPIClient, "_process_response"),
           (AsyncAPIClient, "request"), (AsyncAPIClient, "_process_response")]
CLOSING = ("completion", "system")
HILT_LOGGER = logging.getLogger("hilt")


def _methods() -> list[Any]:
    return [cls.__dict__[name] for cls, name in PATCHED]


def _essence(response: Any) -> dict[str, Any]:
    """What the caller got, minus the per-request id and timestamp the server generates."""
    data = response.model_dump()
    data.pop("id", None)
    data.pop("created", None)
    return data


def _chat(client: openai.OpenAI, text: str) -> Any:
    return client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": text}])


def _baseline(server: Any, texts: list[str]) -> list[dict[str, Any]]:
    """The answers without hilt."""
    assert not hilt_openai.is_instrumented()
    with make_client(server) as client:
        return [_essence(_chat(client, text)) for text in texts]


def _jsonl_reports(internal_reports: Any) -> list[str]:
    return [r.getMessage() for r in internal_reports() if "HiltJSONLHandler" in r.getMessage()
            and "happened" not in r.getMessage()]


def _prompts(events: list[dict[str, Any]]) -> list[str]:
    return [e["content"]["text"] for e in events if e["action"] == "prompt"]


def _by_call(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    calls: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        calls[event["extensions"]["call_id"]].append(event)
    return calls


def _assert_paired(events: list[dict[str, Any]]) -> None:
    """Each call has exactly one prompt and one closing event sharing its call_id."""
    for call_id, group in _by_call(events).items():
        actions = Counter(e["action"] for e in group)
        assert actions["prompt"] == 1, (call_id, actions)
        assert sum(actions[a] for a in CLOSING) == 1, (call_id, actions)


# --- the file goes away or can't be written ---------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_disk_never_reaches_the_caller(server, internal_reports):
    """Every write fails with ENOSPC (/dev/full): plain and streamed calls answer unchanged, one report, all counted."""
    texts = [f"full {i}" for i in range(3)]
    expected = _baseline(server, texts)
    hilt.instrument(filepath="/dev/full", providers=["openai"])
    with make_client(server) as client:
        got = [_essence(_chat(client, text)) for text in texts]
        chunks = [c.choices[0].delta.content for c in client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "full stream"}], stream=True) if c.choices]
    hilt.flush()
    assert got == expected
    assert "".join(c or "" for c in chunks) == "Echo: full stream"
    failures = _jsonl_reports(internal_reports)
    assert len(failures) == 1 and "No space left on device" in failures[0], failures
    counts = hilt._internal.log_repeat_counts()
    assert [n for (kind, place), n in counts.items() if place == "HiltJSONLHandler.emit"] == [8]  # 4 calls x 2


def _make_unwritable(folder: Path) -> Any:
    """Make ``folder`` refuse new files; returns the undo. Root ignores permissions, so for root the folder
    is made immutable (``chattr +i``), which root's writes respect too."""
    import subprocess

    if os.geteuid() != 0:
        os.chmod(folder, 0o500)
        return lambda: os.chmod(folder, 0o700)
    if shutil.which("chattr") is None:
        pytest.skip("running as root and chattr is not available to make a folder unwritable")
    done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"running as root and chattr +i failed here: {done.stderr.decode().strip()}")
    return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_read_only_folder_after_instrument(server, tmp_log, internal_reports):
    """The file is removed and its folder made unwritable: calls still answer, the failure is reported once."""
    texts = [f"ro {i}" for i in range(4)]
    expected = _baseline(server, texts)
    hilt.instrument(filepath=tmp_log, providers=["openai"])
    with make_client(server) as client:
        got = [_essence(_chat(client, texts[0]))]
        hilt.flush()
        os.remove(tmp_log)
        undo = _make_unwritable(tmp_log.parent)
        try:
            got += [_essence(_chat(client, text)) for text in texts[1:]]
            hilt.flush()  # the recorder writes while the folder is still unwritable
        finally:
            undo()
    assert got == expected
    failures = _jsonl_reports(internal_reports)
    assert len(failures) == 1, failures
    counts = hilt._internal.log_repeat_counts()
    assert [n for (kind, place), n in counts.items() if place == "HiltJSONLHandler.emit"] == [6]  # 3 calls x 2 events


def test_parent_folder_removed_while_open(server, tmp_log, read_jsonl, internal_reports):
    """The folder holding the log is removed: it is recreated and later calls are recorded; callers see nothing."""
    texts = [f"gone {i}" for i in range(4)]
    expected = _baseline(server, texts)
    hilt.instrument(filepath=tmp_log, providers=["openai"])
    with make_client(server) as client:
        got = [_essence(_chat(client, texts[0]))]
        hilt.flush()
        shutil.rmtree(tmp_log.parent)
        got += [_essence(_chat(client, text)) for text in texts[1:]]
    assert got == expected
    events = read_jsonl(tmp_log)
    assert _prompts(events) == texts[1:]
    _assert_paired(events)
    assert _jsonl_reports(internal_reports) == []


def test_file_deleted_then_rotated_while_open(server, tmp_log, read_jsonl, internal_reports):
    """Deleted, then renamed away, while open: later events land in a new file at the path, none lost."""
    texts = [f"rot {i}" for i in range(15)]
    expected = _baseline(server, texts)
    hilt.instrument(filepath=tmp_log, providers=["openai"])
    got = []
    with make_client(server) as client:
        got += [_essence(_chat(client, t)) for t in texts[:5]]
        hilt.flush()  # the deletion comes after these calls' lines, as it would for a log read by another process
        os.remove(tmp_log)
        got += [_essence(_chat(client, t)) for t in texts[5:10]]
        after_delete = read_jsonl(tmp_log)
        rotated = tmp_log.with_name("hilt.jsonl.1")
        hilt.flush()
        os.rename(tmp_log, rotated)
        got += [_essence(_chat(client, t)) for t in texts[10:]]
    hilt.uninstrument()
    assert got == expected
    assert _prompts(after_delete) == texts[5:10]
    old, new = read_jsonl(rotated), read_jsonl(tmp_log)
    assert _prompts(old) == texts[5:10]
    assert _prompts(new) == texts[10:]
    _assert_paired(old)
    _assert_paired(new)
    assert len(old) == len(new) == 10
    assert _jsonl_reports(internal_reports) == []


def test_handler_closed_under_a_running_stream(server, tmp_log, read_jsonl, internal_reports):
    """Closing the JSONL handler between chunks: the stream goes on unchanged; its completion still lands."""
    messages = [{"role": "user", "content": "stream through a closed handler please"}]

    def chunks(client: openai.OpenAI, between: Any = None) -> list[dict[str, Any]]:
        out = []
        with client.chat.completions.create(model="gpt-4o", messages=messages, stream=True) as stream:
            for n, chunk in enumerate(stream):
                data = chunk.model_dump()
                data.pop("id", None)
                data.pop("created", None)
                out.append(data)
                if n == 1 and between is not None:
                    between()
        return out

    with make_client(server) as client:
        expected = chunks(client)
    session = hilt.instrument(filepath=tmp_log, providers=["openai"])
    handler = session.handler
    assert isinstance(handler, HiltJSONLHandler)
    with make_client(server) as client:
        got = chunks(client, between=handler.close)
    assert len(expected) > 3
    assert got == expected
    events = read_jsonl(tmp_log)
    assert [e["action"] for e in events] == ["prompt", "completion"]
    assert events[1]["extensions"]["stream_completed"] is True
    reports = [r.getMessage() for r in internal_reports() if "closed handler" in r.getMessage()]
    assert len(reports) == 1


# --- instrument / uninstrument racing calls -------------------------------------------------------


def test_uninstrument_while_calls_in_flight(server, tmp_log, read_jsonl):
    """uninstrument() during 4 threads x 50 calls: no exception, every recorded call whole, originals restored."""
    originals = _methods()
    hilt.instrument(filepath=tmp_log, providers=["openai"])
    threads_n, per_thread = 4, 50
    started = threading.Barrier(threads_n + 1)
    halfway = threading.Event()
    failures: list[BaseException] = []
    answers: dict[tuple[int, int], str] = {}

    def work(n: int) -> None:
        try:
            with make_client(server) as client:
                started.wait()
                for i in range(per_thread):
                    text = f"t{n}-{i}"
                    answers[(n, i)] = _chat(client, text).choices[0].message.content
                    if i == 10:
                        halfway.set()
        except BaseException as exc:  # surfaced below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_n)]
    for thread in threads:
        thread.start()
    started.wait()
    assert halfway.wait(10)
    hilt.uninstrument()
    for thread in threads:
        thread.join(30)
    assert failures == []
    assert answers == {(n, i): f"Echo: t{n}-{i}" for n in range(threads_n) for i in range(per_thread)}
    assert all(now is original for now, original in zip(_methods(), originals))
    assert not hilt_openai.is_instrumented()
    events = read_jsonl(tmp_log)
    assert events, "nothing was recorded before uninstrument()"
    for call_id, group in _by_call(events).items():
        actions = Counter(e["action"] for e in group)
        assert actions["prompt"] == 1, (call_id, actions)
        assert sum(actions[a] for a in CLOSING) <= 1, (call_id, actions)
    assert len(_prompts(events)) < threads_n * per_thread


def test_instrument_from_two_threads_at_once(server, tmp_path, read_jsonl):
    """Two concurrent instrument() calls leave one active session and the SDK patched once."""
    originals = _methods()
    paths = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    barrier = threading.Barrier(2)
    sessions: list[Any] = [None, None]
    failures: list[BaseException] = []

    def go(n: int) -> None:
        try:
            barrier.wait()
            sessions[n] = hilt.instrument(filepath=paths[n], providers=["openai"])
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=go, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert failures == []
    active = hilt.instrumentation.active_session()
    assert active is not None and any(active is s for s in sessions)
    jsonl_handlers = [h for h in HILT_LOGGER.handlers if isinstance(h, HiltJSONLHandler)]
    assert len(jsonl_handlers) == 1
    assert jsonl_handlers[0] is active.handler
    patched = _methods()
    assert all(p is not o for p, o in zip(patched, originals))
    assert all(getattr(p, "__wrapped__", None) is o for p, o in zip(patched, originals))
    with make_client(server) as client:
        for i in range(3):
            assert _chat(client, f"once {i}").choices[0].message.content == f"Echo: once {i}"
    winner = paths[sessions.index(active)]
    loser = paths[1 - sessions.index(active)]
    events = read_jsonl(winner)
    assert _prompts(events) == [f"once {i}" for i in range(3)]
    _assert_paired(events)
    assert read_events(loser) == []
    hilt.uninstrument()
    assert all(now is original for now, original in zip(_methods(), originals))


# --- conversations under load ---------------------------------------------------------------------


def _check_conversations(events: list[dict[str, Any]], writers: int, per_writer: int, prefix: str) -> None:
    expected = {(n, i) for n in range(writers) for i in range(per_writer)}
    prompts: Counter[tuple[int, int]] = Counter()
    closings: Counter[tuple[int, int]] = Counter()
    prompt_of: dict[str, tuple[int, int]] = {}
    for event in events:
        if event["action"] == "prompt":
            n, i = (int(x) for x in event["content"]["text"][len(prefix):].split("-"))
            assert event["session_id"] == f"conv-{n}", event
            prompts[(n, i)] += 1
            prompt_of[event["extensions"]["call_id"]] = (n, i)
    for event in events:
        if event["action"] in CLOSING:
            n, i = prompt_of[event["extensions"]["call_id"]]
            assert event["session_id"] == f"conv-{n}", event
            assert event["content"]["text"] == f"Echo: {prefix}{n}-{i}"
            closings[(n, i)] += 1
    assert set(prompts) == expected and set(prompts.values()) == {1}
    assert set(closings) == expected and set(closings.values()) == {1}
    assert len(events) == 2 * len(expected)


def test_sixteen_threads_each_in_own_conversation(server, tmp_log, read_jsonl):
    """16 threads x 50 calls, each thread in conversation(id=conv-n): every event once, no id bleeding."""
    hilt.instrument(filepath=tmp_log, providers=["openai"])
    writers, per_writer = 16, 50
    barrier = threading.Barrier(writers)
    failures: list[BaseException] = []

    def work(n: int) -> None:
        try:
            with make_client(server) as client, hilt.conversation(id=f"conv-{n}"):
                barrier.wait()
                for i in range(per_writer):
                    text = f"thr{n}-{i}"
                    assert _chat(client, text).choices[0].message.content == f"Echo: {text}"
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    hilt.uninstrument()
    assert failures == []
    _check_conversations(read_jsonl(tmp_log), writers, per_writer, "thr")


async def test_thirty_two_tasks_each_in_own_conversation(server, tmp_log, read_jsonl):
    """32 asyncio tasks x 20 calls through AsyncOpenAI, each in conversation(id=conv-n): every event once, no bleeding."""
    hilt.instrument(filepath=tmp_log, providers=["openai"])
    writers, per_writer = 32, 20

    async with make_async_client(server) as client:
        async def work(n: int) -> None:
            with hilt.conversation(id=f"conv-{n}"):
                for i in range(per_writer):
                    text = f"task{n}-{i}"
                    response = await client.chat.completions.create(
                        model="gpt-4o", messages=[{"role": "user", "content": text}])
                    assert response.choices[0].message.content == f"Echo: {text}"

        await asyncio.gather(*(work(n) for n in range(writers)))
    hilt.uninstrument()
    _check_conversations(read_jsonl(tmp_log), writers, per_writer, "task")

"""Callbacks that block, crawl or pile up never hold up an LLM call, and nothing is lost from the log.

Real ``openai`` SDK calls against :class:`hilt.testing.OpenAIServer`; the bound is shown by order,
never by timing: each call returns while a callback is still blocked.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

import hilt
import hilt.audit
from test_openai_support import (  # noqa: F401 - fixtures
    client,
    fresh_server,
    make_client,
    read_events,
    server,
)

MESSAGES = [{"role": "user", "content": "hello callbacks"}]
request_tag: contextvars.ContextVar[str] = contextvars.ContextVar("request_tag", default="none")


def test_blocked_callback_never_stalls_calls(client, tmp_log):
    """A sync callback blocked on an event: every call returns and is written while the callback is still blocked."""
    entered, release = threading.Event(), threading.Event()
    seen: list[str] = []

    def blocking(audit_event: hilt.AuditEvent) -> None:
        entered.set()
        release.wait(30)
        seen.append(audit_event.event_type)

    hilt.register_audit_callback(blocking)
    hilt.instrument(filepath=tmp_log)
    try:
        replies = [client.chat.completions.create(model="gpt-4o", messages=MESSAGES) for _ in range(5)]
        assert entered.wait(10)  # the callback is running (blocked) ...
        assert not release.is_set()  # ... and every call above has already returned
        assert hilt.flush(timeout=0.2) is False  # flush says the callbacks are still busy ...
        events = read_events(tmp_log)  # ... but the log is complete
        assert [e["action"] for e in events] == ["prompt", "completion"] * 5
        assert all(r.choices[0].message.content.startswith("Echo:") for r in replies)
    finally:
        release.set()
    assert hilt.flush(timeout=10) is True
    assert seen == ["llm_call_started", "llm_call_completed"] * 5


def test_slow_callback_is_reported_once(client, tmp_log, internal_reports, monkeypatch):
    """A callback slower than SLOW_CALLBACK_SECONDS is reported once on hilt.internal, then counted."""
    monkeypatch.setattr(hilt.audit, "SLOW_CALLBACK_SECONDS", 0.0)

    def crawling(audit_event: hilt.AuditEvent) -> None:
        threading.Event().wait(0.01)

    hilt.register_audit_callback(crawling)
    hilt.instrument(filepath=tmp_log)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert hilt.flush(timeout=10) is True
    slow = [r.getMessage() for r in internal_reports() if "crawling" in r.getMessage()]
    assert len(slow) == 1 and "the LLM call did not wait for it" in slow[0]
    counts = hilt._internal.log_repeat_counts()
    assert [n for (kind, place), n in counts.items() if "crawling" in place] == [4]


def test_callback_backlog_is_bounded_and_reported(tmp_log, internal_reports, monkeypatch):
    """Past MAX_CALLBACK_BACKLOG waiting events, newer ones skip the callbacks (reported, counted); the log has all."""
    monkeypatch.setattr(hilt.audit, "MAX_CALLBACK_BACKLOG", 3)
    entered, release = threading.Event(), threading.Event()
    seen: list[int] = []

    def blocking(audit_event: hilt.AuditEvent) -> None:
        entered.set()
        release.wait(30)
        seen.append(audit_event.details["extensions"]["n"])

    hilt.register_audit_callback(blocking)
    session = hilt.instrument(filepath=tmp_log, providers=[])
    try:
        session.append(hilt.Event(action="feedback", extensions={"n": 0}))
        assert entered.wait(10)  # event 0 is in the callback; 1-3 fill the backlog; 4-9 skip the callbacks
        for n in range(1, 10):
            session.append(hilt.Event(action="feedback", extensions={"n": n}))
    finally:
        release.set()
    assert hilt.flush(timeout=10) is True
    assert seen == [0, 1, 2]
    assert [e["extensions"]["n"] for e in read_events(tmp_log)] == list(range(10))
    backlog = [r.getMessage() for r in internal_reports() if "wait for audit callbacks" in r.getMessage()]
    assert len(backlog) == 1
    counts = hilt._internal.log_repeat_counts()
    assert counts[("problem", "audit callbacks backlog")] == 7


def test_callbacks_run_in_the_callers_context(client, tmp_log):
    """A callback sees the contextvars of the code that made the call (e.g. a web request's id), per call."""
    tags: list[tuple[str, str]] = []
    hilt.register_audit_callback(lambda a: tags.append((a.event_type, request_tag.get())))
    hilt.instrument(filepath=tmp_log)
    for tag in ("req-1", "req-2"):
        token = request_tag.set(tag)
        try:
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        finally:
            request_tag.reset(token)
    hilt.flush()
    assert tags == [
        ("llm_call_started", "req-1"), ("llm_call_completed", "req-1"),
        ("llm_call_started", "req-2"), ("llm_call_completed", "req-2"),
    ]
    assert request_tag.get() == "none"


def test_async_callback_after_its_loop_closed_runs_on_background_loop(server, tmp_log):
    """An async call made in a loop that has closed by the time its callback runs: the background loop takes it."""
    entered, release = threading.Event(), threading.Event()
    ran_on: list[str] = []

    def gate(audit_event: hilt.AuditEvent) -> None:
        if audit_event.event_type == "llm_call_started":
            entered.set()
            release.wait(30)

    async def store(audit_event: hilt.AuditEvent) -> None:
        ran_on.append(threading.current_thread().name)

    hilt.register_audit_callback(gate)
    hilt.register_audit_callback(store)
    hilt.instrument(filepath=tmp_log)

    async def main() -> None:
        import openai

        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0) as aclient:
            await aclient.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    try:
        asyncio.run(main())  # the loop is closed when this returns; the callbacks are still held at the gate
        assert entered.wait(10)
    finally:
        release.set()
    assert hilt.flush(timeout=10) is True
    assert ran_on == ["hilt-callbacks-loop"] * 2


@pytest.mark.parametrize("kind", ["raising", "blocking"])
def test_callback_faults_leave_the_stream_unchanged(server, tmp_log, kind):
    """A raising or blocking callback: a streamed call yields the same chunks as without hilt."""
    with make_client(server) as plain:
        expected = [c.choices[0].delta.content for c in plain.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True) if c.choices]
    release = threading.Event()

    def callback(audit_event: hilt.AuditEvent) -> None:
        if kind == "raising":
            raise RuntimeError("callback bug")
        release.wait(30)

    hilt.register_audit_callback(callback)
    hilt.instrument(filepath=tmp_log)
    try:
        with make_client(server) as recorded:
            got = [c.choices[0].delta.content for c in recorded.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, stream=True) if c.choices]
        assert got == expected
        assert [e["action"] for e in read_events(tmp_log)] == ["prompt", "completion"]
    finally:
        release.set()

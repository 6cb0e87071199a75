"""Audit callbacks: sync and async delivery, event_types filters, failures isolated, private copies."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import pytest

import hilt
import hilt._internal
import hilt.audit
from hilt import AuditEvent, Event, HILTError


def sample_call() -> list[Event]:
    """A prompt, its completion, a failed call's error event and a manual event."""
    return [
        Event(action="prompt", content={"text": "q"}, extensions={"call_id": "a"}),
        Event(action="completion", content={"text": "a"}, metrics={"tokens": {"total": 3}, "cost_usd": 0.1},
              extensions={"call_id": "a", "status_code": 200}),
        Event(action="system", extensions={"call_id": "b", "status_code": 599, "error": {"type": "APITimeoutError"}}),
        Event(action="retrieval", content={"text": "3 documents"}),
    ]


def test_sync_callback_receives_every_event(tmp_log, read_jsonl):
    """A sync callback gets an AuditEvent for every event, on hilt's callback thread, details equal to the written line."""
    received: list[tuple[AuditEvent, threading.Thread]] = []
    hilt.register_audit_callback(lambda audit_event: received.append((audit_event, threading.current_thread())))
    hilt.instrument(filepath=tmp_log, providers=[])
    events = sample_call()
    for event in events:
        hilt.emit(event)
    audit_event = hilt.audit_log("data_export", {"rows": 3})
    lines = read_jsonl(tmp_log)
    assert [a.event_type for a, _ in received] == [
        "llm_call_started", "llm_call_completed", "llm_call_error", "event", "data_export",
    ]
    assert [a.details for a, _ in received] == lines
    assert [a.timestamp for a, _ in received] == [e.timestamp for e in events] + [audit_event.timestamp]
    assert {thread.name for _, thread in received} == {"hilt-callbacks"}  # never the caller's thread
    assert isinstance(received[0][0], AuditEvent)
    assert received[0][0].to_dict() == {
        "timestamp": events[0].timestamp, "event_type": "llm_call_started", "details": lines[0],
    }


def test_callbacks_fire_without_instrument(tmp_log):
    """Session.append() and emit() reach callbacks even when instrument() was never called."""
    received: list[str] = []
    hilt.register_audit_callback(lambda a: received.append(a.details["content"]["text"]))
    hilt.Session(tmp_log).append(Event(action="feedback", content={"text": "s"}))
    hilt.emit(Event(action="feedback", content={"text": "e"}))
    assert hilt.flush() is True
    assert received == ["s", "e"]


def test_event_types_filter():
    """event_types limits a callback to the named types (a list or a single string)."""
    errors: list[str] = []
    exports: list[str] = []
    everything: list[str] = []
    hilt.register_audit_callback(lambda a: errors.append(a.event_type), event_types=["llm_call_error"])
    hilt.register_audit_callback(lambda a: exports.append(a.event_type), event_types="data_export")
    hilt.register_audit_callback(lambda a: everything.append(a.event_type))
    for event in sample_call():
        hilt.emit(event)
    hilt.audit_log("data_export", rows=1)
    assert hilt.flush() is True
    assert errors == ["llm_call_error"]
    assert exports == ["data_export"]
    assert len(everything) == 5


def test_registering_again_replaces_filter():
    """Registering the same function twice keeps one registration with the newest filter."""
    seen: list[str] = []

    def callback(audit_event: AuditEvent) -> None:
        seen.append(audit_event.event_type)

    hilt.register_audit_callback(callback)
    hilt.register_audit_callback(callback, event_types=["llm_call_started"])
    assert hilt.audit.registered_callbacks() == (callback,)
    for event in sample_call():
        hilt.emit(event)
    hilt.flush()
    assert seen == ["llm_call_started"]


def test_unregister_stops_delivery():
    """After unregister_audit_callback(fn), fn gets nothing; unregistering an unknown function is harmless."""
    seen: list[str] = []

    def callback(audit_event: AuditEvent) -> None:
        seen.append(audit_event.event_type)

    hilt.register_audit_callback(callback)
    hilt.emit(Event(action="feedback"))
    hilt.flush()
    hilt.unregister_audit_callback(callback)
    hilt.unregister_audit_callback(callback)
    hilt.unregister_audit_callback(print)
    hilt.emit(Event(action="feedback"))
    hilt.flush()
    assert seen == ["event"]
    assert hilt.audit.registered_callbacks() == ()


def test_raising_callback_changes_nothing_for_caller(tmp_log, read_jsonl, internal_reports):
    """A raising callback: emit returns normally, the line is written, later callbacks still run, one report then counts."""
    later: list[str] = []

    def broken(audit_event: AuditEvent) -> None:
        raise RuntimeError("callback bug")

    hilt.register_audit_callback(broken)
    hilt.register_audit_callback(lambda a: later.append(a.details["event_id"]))
    session = hilt.instrument(filepath=tmp_log, providers=[])
    events = [Event(action="feedback", extensions={"seq": i}) for i in range(3)]
    for event in events:
        assert session.append(event) is event
    assert [line["event_id"] for line in read_jsonl(tmp_log)] == [e.event_id for e in events]
    assert later == [e.event_id for e in events]
    reports = internal_reports()
    assert len(reports) == 1
    assert "RuntimeError" in reports[0].getMessage() and "broken" in reports[0].getMessage()
    assert reports[0].exc_info is not None and str(reports[0].exc_info[1]) == "callback bug"
    counts = hilt._internal.log_repeat_counts()
    assert [n for (kind, place), n in counts.items() if kind == "RuntimeError" and "broken" in place] == [3]


def test_callbacks_cannot_mutate_what_is_written(tmp_log, read_jsonl):
    """A callback editing its AuditEvent.details changes neither the file, nor the Event, nor what other callbacks see."""
    seen_by_second: list[AuditEvent] = []

    def vandal(audit_event: AuditEvent) -> None:
        audit_event.details["content"]["text"] = "rewritten"
        audit_event.details["extensions"]["nested"]["list"].append("x")
        audit_event.details.pop("event_id")

    hilt.register_audit_callback(vandal)
    hilt.register_audit_callback(seen_by_second.append)
    hilt.instrument(filepath=tmp_log, providers=[])
    event = Event(action="prompt", content={"text": "original"}, extensions={"nested": {"list": [1]}})
    hilt.emit(event)
    hilt.emit(Event(action="prompt", content={"text": "second"}))
    (first_line, _) = read_jsonl(tmp_log)
    assert first_line == event.to_dict()
    assert first_line["content"]["text"] == "original"
    assert event.content.text == "original" and event.extensions == {"nested": {"list": [1]}}
    assert seen_by_second[0].details == first_line
    with pytest.raises(dataclasses.FrozenInstanceError):
        seen_by_second[0].event_type = "changed"  # type: ignore[misc]


def test_async_callback_without_running_loop_uses_background_loop():
    """An async callback fired where no loop runs completes on hilt's background loop; wait_for_callbacks() waits."""
    seen: list[tuple[str, str]] = []

    async def callback(audit_event: AuditEvent) -> None:
        await asyncio.sleep(0)
        seen.append((audit_event.event_type, threading.current_thread().name))

    hilt.register_audit_callback(callback)
    for event in sample_call():
        hilt.emit(event)
    assert hilt.audit.wait_for_callbacks(timeout=10) is True
    assert sorted(t for t, _ in seen) == sorted(["llm_call_started", "llm_call_completed", "llm_call_error", "event"])
    assert {name for _, name in seen} == {"hilt-callbacks-loop"}


async def test_async_callback_runs_on_callers_running_loop():
    """An async callback fired inside a running loop runs as a task on that same loop and thread."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    seen: list[tuple[str, asyncio.AbstractEventLoop, threading.Thread]] = []

    async def callback(audit_event: AuditEvent) -> None:
        await asyncio.sleep(0)
        seen.append((audit_event.details["content"]["text"], asyncio.get_running_loop(), threading.current_thread()))
        if len(seen) == 2:
            done.set()

    hilt.register_audit_callback(callback)
    hilt.emit(Event(action="feedback", content={"text": "one"}))
    hilt.emit(Event(action="feedback", content={"text": "two"}))
    assert seen == []  # scheduled, not run inline
    await asyncio.wait_for(done.wait(), timeout=10)
    assert [text for text, _, _ in seen] == ["one", "two"]
    assert all(l is loop and t is threading.current_thread() for _, l, t in seen)


async def test_raising_async_callback_reported_once(internal_reports):
    """An async callback that raises is reported once on hilt.internal; the caller is unaffected."""
    calls: list[int] = []
    finished = asyncio.Event()

    async def broken_async(audit_event: AuditEvent) -> None:
        calls.append(1)
        if len(calls) == 3:
            finished.set()
        raise ValueError("async callback bug")

    hilt.register_audit_callback(broken_async)
    for _ in range(3):
        assert hilt.emit(Event(action="feedback")) is None
    await asyncio.wait_for(finished.wait(), timeout=10)
    for _ in range(5):  # let the tasks' done callbacks run
        await asyncio.sleep(0)
    reports = internal_reports()
    assert len(reports) == 1 and "async callback bug" in reports[0].getMessage()
    counts = hilt._internal.log_repeat_counts()
    assert [n for (kind, place), n in counts.items() if kind == "ValueError" and "broken_async" in place] == [3]


def test_raising_async_callback_on_background_loop_reported():
    """An async callback raising on the background loop is reported on hilt.internal, never raised."""
    async def broken_background(audit_event: AuditEvent) -> None:
        raise KeyError("missing")

    hilt.register_audit_callback(broken_background)
    hilt.emit(Event(action="feedback"))
    hilt.emit(Event(action="feedback"))
    assert hilt.audit.wait_for_callbacks(timeout=10) is True
    counts = hilt._internal.log_repeat_counts()
    assert [n for (kind, place), n in counts.items() if kind == "KeyError" and "broken_background" in place] == [2]


def test_uninstrument_waits_for_background_callbacks(tmp_log):
    """uninstrument() waits for async callbacks still running on the background loop."""
    release = threading.Event()
    finished: list[str] = []

    async def slow(audit_event: AuditEvent) -> None:
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 10)
        finished.append(audit_event.event_type)

    hilt.register_audit_callback(slow)
    hilt.instrument(filepath=tmp_log, providers=[])
    hilt.emit(Event(action="feedback"))
    threading.Timer(0.05, release.set).start()
    hilt.uninstrument(timeout=10)
    assert finished == ["event"]


@pytest.mark.parametrize(("fn", "event_types", "argument"), [("not callable", None, "fn"), (print, [], "event_types"), (print, [""], "event_types"), (print, [3], "event_types")])
def test_register_bad_input_raises(fn, event_types, argument):
    """A non-callable fn or an empty/invalid event_types list raises HILTError naming the argument."""
    with pytest.raises(HILTError, match=rf"^{argument}:"):
        hilt.register_audit_callback(fn, event_types=event_types)
    assert hilt.audit.registered_callbacks() == ()

"""hilt.emit(): the one path from an Event to a record on 'hilt'; context tags, cost scopes, audit_log, capture."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from logging.handlers import QueueHandler, QueueListener

import pytest

import hilt
import hilt._internal
from hilt import Event, HILTError, HiltJSONLHandler
from hilt.testing import capture_events

HILT_LOGGER = logging.getLogger("hilt")


def call_events(call_id: str, *, prompt=10, completion=5, total=15, cost=0.25, error=False):
    """A manually built call: the prompt event, then its completion or error event."""
    start = Event(action="prompt", content={"text": "q"}, extensions={"call_id": call_id})
    if error:
        end = Event(
            action="system", actor={"type": "system", "id": "openai"},
            extensions={"call_id": call_id, "status_code": 429, "error": {"type": "RateLimitError", "message": "slow"}},
        )
    else:
        end = Event(
            action="completion",
            metrics={"tokens": {"prompt": prompt, "completion": completion, "total": total}, "cost_usd": cost},
            extensions={"call_id": call_id, "status_code": 200},
        )
    return start, end


def test_emit_logs_record_carrying_the_event(hilt_records):
    """emit() logs one record on 'hilt' whose hilt_event is the event itself, at INFO."""
    event = Event(action="prompt", content={"text": "hi"})
    assert hilt.emit(event) is None
    (record,) = hilt_records
    assert record.name == "hilt"
    assert record.hilt_event is event
    assert record.levelno == logging.INFO


def test_error_events_are_warning(hilt_records):
    """A system event carrying extensions.error is emitted at WARNING; a plain system event at INFO."""
    _, error = call_events("c", error=True)
    hilt.emit(error)
    hilt.emit(Event(action="system", content={"text": "note"}))
    assert [r.levelno for r in hilt_records] == [logging.WARNING, logging.INFO]


def test_emit_of_non_event_never_raises_and_is_reported(internal_reports):
    """emit() of a non-Event returns normally and is reported once on hilt.internal (repeats counted)."""
    assert hilt.emit({"action": "prompt"}) is None  # type: ignore[arg-type]
    assert hilt.emit("nope") is None  # type: ignore[arg-type]
    reports = internal_reports()
    assert len(reports) == 1 and "TypeError in emit" in reports[0].getMessage()
    assert hilt._internal.log_repeat_counts()[("TypeError", "emit")] == 2


def test_disabled_logger_reported_but_session_still_written(tmp_log, read_jsonl, internal_reports):
    """With the 'hilt' logger disabled (dictConfig's disable_existing_loggers) emit reports it and a Session still gets the event."""
    session = hilt.Session(tmp_log)
    HILT_LOGGER.disabled = True
    event = session.append(Event(action="feedback"))
    session.append(Event(action="feedback"))
    assert [line["event_id"] for line in read_jsonl(tmp_log)][0] == event.event_id
    assert len(read_jsonl(tmp_log)) == 2
    reports = internal_reports()
    assert len(reports) == 1 and "disabled" in reports[0].getMessage()


def test_records_stay_out_of_root_handlers(root_records, tmp_log):
    """By default hilt's event records never reach a handler on the root logger."""
    session = hilt.instrument(filepath=tmp_log, providers=[])
    session.append(Event(action="prompt"))
    hilt.emit(Event(action="prompt"))
    assert [r for r in root_records if r.name == "hilt"] == []


# --- conversation tags -------------------------------------------------------------------


def test_conversation_tags_written(tmp_log, read_jsonl):
    """conversation(user_id, tenant, metadata) writes extensions.user_id/tenant/metadata on events inside it only."""
    session = hilt.Session(tmp_log)
    with hilt.conversation(user_id="u1", tenant="acme", metadata={"plan": "pro"}):
        session.append(Event(action="prompt"))
    session.append(Event(action="prompt"))
    inside, outside = read_jsonl(tmp_log)
    assert inside["extensions"] == {"user_id": "u1", "tenant": "acme", "metadata": {"plan": "pro"}}
    assert outside["extensions"] == {}


def test_nested_conversation_inherits_and_overrides():
    """A nested conversation() inherits what it does not set and merges metadata; the outer tags return after it."""
    with capture_events() as events:
        with hilt.conversation(id="conv-1", user_id="u1", tenant="t1", metadata={"a": 1}):
            with hilt.conversation(user_id="u2", metadata={"b": 2}) as inner:
                hilt.emit(Event(action="prompt"))
                audit_event = hilt.audit_log("data_export", rows=1)
            hilt.emit(Event(action="prompt"))
    assert inner.id == "conv-1"
    assert events[0].extensions == {"user_id": "u2", "tenant": "t1", "metadata": {"a": 1, "b": 2}}
    assert audit_event.session_id == "conv-1"
    assert events[2].extensions == {"user_id": "u1", "tenant": "t1", "metadata": {"a": 1}}


def test_event_values_win_over_conversation_tags():
    """An event that already carries user_id keeps it; the conversation fills only what is missing."""
    with capture_events() as events, hilt.conversation(user_id="u1", tenant="t1"):
        hilt.emit(Event(action="prompt", extensions={"user_id": "explicit"}))
    assert events[0].extensions == {"user_id": "explicit", "tenant": "t1"}


def test_conversation_tags_isolated_per_thread(tmp_log, read_jsonl):
    """Threads each in their own conversation() tag only their own events, even when interleaved."""
    hilt.instrument(filepath=tmp_log, providers=[])
    barrier = threading.Barrier(4)

    def worker(n: int) -> None:
        with hilt.conversation(user_id=f"user-{n}", tenant=f"tenant-{n}"):
            barrier.wait()
            for i in range(200):
                hilt.emit(Event(action="prompt", content={"text": f"{n}"}, extensions={"seq": i}))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    with hilt.conversation(user_id="main"):
        hilt.emit(Event(action="prompt", content={"text": "main"}))
    for thread in threads:
        thread.join()
    lines = read_jsonl(tmp_log)
    assert len(lines) == 801
    for line in lines:
        n = line["content"]["text"]
        expected = "main" if n == "main" else f"user-{n}"
        assert line["extensions"]["user_id"] == expected
        assert line["extensions"].get("tenant") == (None if n == "main" else f"tenant-{n}")


async def test_conversation_tags_isolated_per_task():
    """asyncio tasks each in their own conversation() tag only their own events across awaits."""

    async def worker(n: int) -> None:
        with hilt.conversation(user_id=f"user-{n}", metadata={"n": n}):
            for i in range(20):
                hilt.emit(Event(action="prompt", content={"text": str(n)}, extensions={"seq": i}))
                await asyncio.sleep(0)

    with capture_events() as events:
        await asyncio.gather(*(worker(n) for n in range(5)))
    assert len(events) == 100
    assert len({e.content.text for e in events[:5]}) > 1  # the tasks really interleaved
    for event in events:
        n = int(event.content.text)
        assert event.extensions["user_id"] == f"user-{n}"
        assert event.extensions["metadata"] == {"n": n}


def test_queue_handler_hop_keeps_conversation_tags(tmp_log, read_jsonl):
    """Tags are fixed on the event at emit time, so a QueueHandler -> QueueListener thread hop keeps them."""
    events_queue: queue.Queue = queue.Queue()
    file_handler = HiltJSONLHandler(tmp_log)
    listener = QueueListener(events_queue, file_handler, respect_handler_level=True)
    HILT_LOGGER.addHandler(QueueHandler(events_queue))
    listener.start()
    try:
        with hilt.conversation(user_id="u1", tenant="t1"):
            for i in range(10):
                hilt.emit(Event(action="prompt", extensions={"seq": i}))
    finally:
        listener.stop()
        file_handler.close()
    lines = read_jsonl(tmp_log)
    assert [line["extensions"] for line in lines] == [{"seq": i, "user_id": "u1", "tenant": "t1"} for i in range(10)]


# --- track_costs -------------------------------------------------------------------------


def test_track_costs_counts_calls_tokens_cost_errors():
    """Prompt events count calls, completions add tokens and cost, error events count errors (failed calls are calls)."""
    with hilt.track_costs() as costs:
        for event in call_events("a", prompt=10, completion=5, total=15, cost=0.25):
            hilt.emit(event)
        for event in call_events("b", prompt=3, completion=4, total=None, cost=None):
            hilt.emit(event)
        for event in call_events("c", error=True):
            hilt.emit(event)
        hilt.emit(Event(action="completion", metrics={"tokens": {"total": 1000}, "cost_usd": 9.0}))  # no call_id
    assert costs.calls == 3
    assert costs.errors == 1
    assert costs.prompt_tokens == 13
    assert costs.completion_tokens == 9
    assert costs.total_tokens == 22  # the missing total of call b is prompt + completion
    assert costs.cost_usd == pytest.approx(0.25)


def test_track_costs_nested_scopes_each_count():
    """An inner scope counts only its calls; the outer scope counts its own and the inner ones."""
    with hilt.track_costs() as outer:
        for event in call_events("a", cost=1.0):
            hilt.emit(event)
        with hilt.track_costs() as inner:
            for event in call_events("b", cost=2.0):
                hilt.emit(event)
    for event in call_events("after", cost=4.0):
        hilt.emit(event)
    assert (inner.calls, inner.cost_usd, inner.total_tokens) == (1, pytest.approx(2.0), 15)
    assert (outer.calls, outer.cost_usd, outer.total_tokens) == (2, pytest.approx(3.0), 30)


def test_track_costs_isolated_per_thread():
    """Scopes opened in different threads never count each other's calls."""
    results: dict[int, tuple[int, int, float]] = {}
    barrier = threading.Barrier(3)

    def worker(n: int) -> None:
        with hilt.track_costs() as costs:
            barrier.wait()
            for i in range(50 * (n + 1)):
                for event in call_events(f"{n}-{i}", prompt=n + 1, completion=0, total=n + 1, cost=0.5):
                    hilt.emit(event)
        results[n] = (costs.calls, costs.total_tokens, costs.cost_usd)

    with hilt.track_costs() as main_costs:
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == {n: (50 * (n + 1), 50 * (n + 1) * (n + 1), pytest.approx(25.0 * (n + 1))) for n in range(3)}
    assert (main_costs.calls, main_costs.total_tokens) == (0, 0)


async def test_track_costs_counts_tasks_started_inside():
    """asyncio tasks started inside a scope count into it; a scope inside one task does not see the others."""

    async def call(call_id: str, own_scope: bool) -> int:
        if own_scope:
            with hilt.track_costs() as mine:
                await asyncio.sleep(0)
                for event in call_events(call_id):
                    hilt.emit(event)
            return mine.calls
        await asyncio.sleep(0)
        for event in call_events(call_id):
            hilt.emit(event)
        return -1

    with hilt.track_costs() as scope:
        own = await asyncio.gather(call("a", True), call("b", False), call("c", True))
    assert own == [1, -1, 1]
    assert scope.calls == 3


# --- audit_log and capture_events --------------------------------------------------------


def test_audit_log_dict_and_keyword_forms(tmp_log, read_jsonl):
    """audit_log('data_export', {'rows': 3}) and audit_log('data_export', rows=3) write the same facts."""
    hilt.instrument(filepath=tmp_log, providers=[])
    first = hilt.audit_log("data_export", {"rows": 3})
    second = hilt.audit_log("data_export", rows=3)
    third = hilt.audit_log("consent_given", {"user": "u1"}, scope="marketing")
    lines = read_jsonl(tmp_log)
    assert [line["event_id"] for line in lines] == [first.event_id, second.event_id, third.event_id]
    for line in lines:
        assert line["action"] == "audit"
        assert line["actor"] == {"type": "system", "id": "app"}
    assert lines[0]["extensions"] == {"audit_event_type": "data_export", "details": {"rows": 3}}
    assert lines[1]["extensions"] == {"audit_event_type": "data_export", "details": {"rows": 3}}
    assert lines[2]["extensions"] == {"audit_event_type": "consent_given", "details": {"user": "u1", "scope": "marketing"}}


@pytest.mark.parametrize(
    ("args", "argument"),
    [(("",), "event_type"), (("  ",), "event_type"), ((None,), "event_type"), (("x", ["rows"]), "details")],
)
def test_audit_log_bad_input_raises_naming_argument(args, argument):
    """audit_log with an empty event_type or a non-dict details raises HILTError naming the argument."""
    with pytest.raises(HILTError, match=rf"^{argument}:"):
        hilt.audit_log(*args)


def test_capture_events_collects_only_inside_block():
    """capture_events() yields the events emitted inside the block, in order, and restores the logger level."""
    HILT_LOGGER.setLevel(logging.ERROR)
    hilt.emit(Event(action="prompt", content={"text": "before"}))
    with capture_events() as events:
        first = Event(action="prompt", content={"text": "one"})
        hilt.emit(first)
        hilt.audit_log("data_export", rows=1)
    hilt.emit(Event(action="prompt", content={"text": "after"}))
    assert events[0] is first
    assert [e.action for e in events] == ["prompt", "audit"]
    assert HILT_LOGGER.level == logging.ERROR

"""The recorder: provider calls are written off the caller's thread, in order, and nothing is left behind.

Real ``openai`` SDK calls against :class:`hilt.testing.OpenAIServer`; threads are told apart by name,
never by timing.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
import weakref

import httpx2
import pytest
from openai._models import FinalRequestOptions

import hilt
from hilt import _recorder
from test_openai_support import (  # noqa: F401 - fixtures
    client,
    fresh_server,
    make_client,
    one_call,
    read_events,
    server,
)

MESSAGES = [{"role": "user", "content": "hello recorder"}]


class ThreadNames(logging.Handler):
    """Keeps, per record, the thread that ran the handler and the thread the record names."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.hilt_event.action, threading.current_thread().name, record.threadName))


@pytest.fixture
def thread_names():
    handler = ThreadNames()
    logging.getLogger("hilt").addHandler(handler)
    try:
        yield handler.seen
    finally:
        logging.getLogger("hilt").removeHandler(handler)


def _wait_until_the_recorder_sleeps(timeout: float = 10.0) -> None:
    """Wait for the recorder thread to finish lingering (a bounded wait), so a test starts from a known state."""
    _recorder.drain()
    deadline = time.monotonic() + timeout
    while not _recorder._sleeping and time.monotonic() < deadline:
        time.sleep(0.005)


def _wait_until_recorded(timeout: float = 10.0) -> None:
    """Wait for the recorder thread to do the pending tasks itself (not a timing assertion: a bounded wait)."""
    deadline = time.monotonic() + timeout
    while _recorder.pending() and time.monotonic() < deadline:
        time.sleep(0.001)


def test_calls_are_written_by_the_recorder_thread(client, tmp_log, thread_names):
    """Handlers run on hilt-recorder; the record still names the thread that made the call."""
    hilt.instrument(filepath=tmp_log)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    _wait_until_recorded()
    caller = threading.current_thread().name
    assert thread_names == [("prompt", "hilt-recorder", caller), ("completion", "hilt-recorder", caller)]
    assert [e["action"] for e in read_events(tmp_log)] == ["prompt", "completion"]


def test_fsync_records_before_the_call_returns(client, tmp_log, thread_names):
    """With fsync=True the call's events are written on the caller's thread before it returns."""
    hilt.instrument(filepath=tmp_log, fsync=True)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    caller = threading.current_thread().name
    assert thread_names == [("prompt", caller, caller), ("completion", caller, caller)]
    lines = tmp_log.read_bytes().splitlines()  # read directly: no flush needed
    assert len(lines) == 2


def test_a_durable_handler_from_dictconfig_also_records_inline(client, tmp_path, thread_names):
    """A HiltJSONLHandler(fsync=True) put on the logger by hand (dictConfig) gets the same guarantee."""
    hilt.instrument(providers=["openai"])
    durable = hilt.HiltJSONLHandler(tmp_path / "durable.jsonl", fsync=True)
    logging.getLogger("hilt").addHandler(durable)
    try:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert len((tmp_path / "durable.jsonl").read_bytes().splitlines()) == 2
    finally:
        logging.getLogger("hilt").removeHandler(durable)
        durable.close()
    caller = threading.current_thread().name
    assert [name for _, name, _ in thread_names] == [caller, caller]


def test_track_costs_is_complete_when_the_block_ends(client, tmp_log):
    """Inside track_costs() the totals are updated before the call returns (recorded inline)."""
    hilt.instrument(filepath=tmp_log)
    with hilt.track_costs() as costs:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert costs.calls == 1 and costs.total_tokens > 0
    assert costs.cost_usd > 0


def test_manual_events_keep_their_place_after_calls(client, tmp_log):
    """An audit_log() right after LLM calls is written after their events, never before."""
    hilt.instrument(filepath=tmp_log)
    for _ in range(3):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    hilt.audit_log("data_export", rows=1)
    actions = [e["action"] for e in read_events(tmp_log)]
    assert actions == ["prompt", "completion"] * 3 + ["audit"]


def test_session_read_sees_the_call_just_made(client, tmp_log):
    """Session.read() right after a call holds it (it finishes the recording first), as the README shows."""
    hilt.instrument(filepath=tmp_log)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert [e.action for e in hilt.Session(tmp_log, mode="r").read()] == ["prompt", "completion"]


def test_tasks_run_in_submission_order_across_threads():
    """Tasks from several threads run one at a time, each thread's in its own order, none lost."""
    done: list[tuple[int, int]] = []
    running = []

    def task(thread: int, n: int) -> None:
        running.append(1)
        assert len(running) == 1  # never two at once
        done.append((thread, n))
        running.pop()

    def submit_many(thread: int) -> None:
        for n in range(2000):
            _recorder.submit(lambda t=thread, i=n: task(t, i))

    threads = [threading.Thread(target=submit_many, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _recorder.drain()
    assert len(done) == 8000
    for t in range(4):
        assert [n for thread, n in done if thread == t] == list(range(2000))


def test_drain_ends_while_other_threads_keep_submitting():
    """drain() runs what was pending when it started, so a steady stream of new calls cannot keep it busy."""
    stop = threading.Event()
    count = [0]

    def producer() -> None:
        while not stop.is_set():
            _recorder.submit(lambda: count.__setitem__(0, count[0] + 1))

    thread = threading.Thread(target=producer)
    thread.start()
    try:
        for _ in range(20):
            _recorder.drain()  # returns although the producer never stops
    finally:
        stop.set()
        thread.join()
    _recorder.drain()
    assert count[0] > 0


def test_backlog_past_the_bound_is_done_by_the_caller(monkeypatch):
    """Past MAX_PENDING waiting tasks, submit() runs the oldest ones itself (after the task in progress): memory
    stays bounded, and a stuck handler slows callers instead of growing the queue without end."""
    monkeypatch.setattr(_recorder, "MAX_PENDING", 5)
    ran_on: list[str] = []
    gate = threading.Event()
    _recorder.submit(lambda: gate.wait(30))  # hold the recorder thread ...
    threading.Timer(0.2, gate.set).start()  # ... for a moment
    try:
        for _ in range(20):
            _recorder.submit(lambda: ran_on.append(threading.current_thread().name))
            assert len(_recorder._pending) <= 6
    finally:
        gate.set()
    _recorder.drain()
    assert len(ran_on) == 20
    assert threading.current_thread().name in ran_on


class CountingWake:
    """Stands in for the recorder's wake-up queue and counts the wake-ups (each one a system call)."""

    def __init__(self, real) -> None:
        self.real, self.puts = real, 0

    def put(self, item) -> None:
        self.puts += 1
        self.real.put(item)

    def get(self, *args, **kwargs):
        return self.real.get(*args, **kwargs)


def test_tasks_that_come_while_the_recorder_lingers_need_no_wake_up(monkeypatch):
    """After its last task the recorder keeps looking for new ones for a while: a call's tasks submitted
    then are run by the recorder thread without the caller waking it."""
    monkeypatch.setattr(_recorder, "LINGER_S", 30.0)  # linger for the whole test, however slow the machine
    ran_on: list[str] = []
    first, second = threading.Event(), threading.Event()
    _recorder.submit(lambda: (ran_on.append(threading.current_thread().name), first.set()))
    assert first.wait(10)
    wake = CountingWake(_recorder._wake)
    monkeypatch.setattr(_recorder, "_wake", wake)
    _recorder.submit(lambda: (ran_on.append(threading.current_thread().name), second.set()))
    assert second.wait(10)
    assert ran_on == ["hilt-recorder", "hilt-recorder"]
    assert wake.puts == 0


def test_backpressure_runs_only_the_excess_so_no_call_stalls_on_the_whole_queue(monkeypatch):
    """Over the bound, a submit runs the oldest tasks until the backlog is back at MAX_PENDING (its own
    share), not the whole queue: calls slow down evenly instead of one call doing thousands of tasks."""
    monkeypatch.setattr(_recorder, "MAX_PENDING", 5)
    started, gate = threading.Event(), threading.Event()
    _recorder.submit(lambda: (started.set(), gate.wait(30)))
    assert started.wait(10)  # the recorder thread is parked inside that task, holding the lock it took
    held_lock = _recorder._lock
    _recorder._lock = threading.Lock()  # so this thread can run tasks meanwhile
    ran: list[int] = []
    try:
        for n in range(8):
            _recorder.submit(lambda n=n: ran.append(n))
        assert ran == [0, 1, 2]  # submits 6, 7 and 8 each ran one task, the oldest
        assert len(_recorder._pending) == 5
    finally:
        _recorder._lock = held_lock  # back before the recorder resumes, so the two never run tasks at once
        gate.set()
    _recorder.drain()
    assert ran == list(range(8))


def test_a_failing_task_is_reported_and_the_next_runs(internal_reports):
    """A task that raises is reported once on hilt.internal; the tasks after it still run."""
    ran: list[int] = []

    def broken() -> None:
        raise ValueError("task bug")

    _recorder.submit(broken)
    _recorder.submit(lambda: ran.append(1))
    _recorder.drain()
    assert ran == [1]
    reports = [r.getMessage() for r in internal_reports() if "task bug" in r.getMessage()]
    assert len(reports) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Python 3.12+ warns about fork() with threads
def test_forked_child_starts_without_the_parents_tasks():
    """A child forked while tasks are pending does not run them (the parent does) and records its own."""
    gate = threading.Event()
    ran: list[str] = []
    _recorder.submit(lambda: gate.wait(30))
    _recorder.submit(lambda: ran.append(f"parent-task in {os.getpid()}"))
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            mine: list[int] = []
            _recorder.submit(lambda: mine.append(1))
            _recorder.drain()
            code = 0 if (not ran and mine == [1]) else 3
        finally:
            os.write(write_end, str(code).encode())
            os._exit(code)
    os.close(write_end)
    status = os.read(read_end, 8)
    os.close(read_end)
    os.waitpid(pid, 0)
    gate.set()
    _recorder.drain()
    assert status == b"0", status
    assert ran == [f"parent-task in {os.getpid()}"]
    assert sys.modules["hilt._recorder"] is _recorder


def _busy_caller(seconds: float, probe: os.PathLike[str], ran_on: list[str], submit: bool = True) -> int:
    """A caller that never waits for ``seconds``: Python work (the GIL held) and a short release of the GIL, as
    the SDK on a mock transport; with ``submit``, a task per round that gives the GIL up too, as writing a JSONL
    line does. Returns the number of tasks submitted."""
    submitted = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # however fast the machine
        total = 0
        for n in range(2000):
            total += n
        os.stat(probe)
        if submit:
            _recorder.submit(lambda: (os.stat(probe), ran_on.append(threading.current_thread().name)))
            submitted += 1
    return submitted


def test_a_busy_caller_runs_the_tasks_of_a_starved_recorder_in_batches(tmp_path, monkeypatch):
    """A caller that never waits but gives up the GIL for short system calls keeps the recorder from running:
    CPython only forces a switch after a whole switch interval, and each system call of a task hands the GIL
    back. Once the recorder finds itself starved, the caller does the tasks itself, a batch at a time, as it
    goes: they are not left for a flush, and not run one per call."""
    probe = tmp_path / "probe"
    probe.write_text("x")
    ran_on: list[str] = []
    runs_by_caller: list[int] = []
    run_pending = _recorder._run_pending

    def counted(*args, **kwargs):
        if threading.current_thread() is threading.main_thread():
            runs_by_caller.append(len(_recorder._pending))
        run_pending(*args, **kwargs)

    monkeypatch.setattr(_recorder, "_run_pending", counted)
    submitted = _busy_caller(1.0, probe, ran_on)
    left = len(_recorder._pending)
    _recorder.drain()
    assert len(ran_on) == submitted
    by_caller = ran_on.count(threading.current_thread().name)
    # The recorder starts the second, until it finds itself starved; the caller does most of the rest, in runs of
    # about INLINE_BATCH tasks or INLINE_AFTER_S worth of them; what is left for the drain is the last batch's worth.
    assert by_caller >= 0.6 * submitted, (by_caller, submitted)
    assert left <= _recorder.INLINE_BATCH, (left, submitted)
    batches = [size for size in runs_by_caller[:-1] if size]  # the last run is the drain
    assert batches and len(batches) <= by_caller / 8, (len(batches), by_caller)


def test_a_task_a_busy_caller_leaves_behind_is_run_by_the_recorder(tmp_path, monkeypatch):
    """A busy caller that stops calling (and goes on with other work) leaves its last tasks short of a batch:
    the starved recorder runs a task it finds waiting at two looks in a row, so none waits for ever."""
    monkeypatch.setattr(_recorder, "STARVED_POLL_S", 0.02)
    probe = tmp_path / "probe"
    probe.write_text("x")
    ran_on: list[str] = []
    for _ in range(20):  # until a busy spell ends with tasks left (the recorder may have just taken them)
        submitted = len(ran_on) + _busy_caller(0.3, probe, ran_on)
        if len(ran_on) < submitted:
            break
    assert len(ran_on) < submitted
    deadline = time.monotonic() + 10
    while len(ran_on) < submitted and time.monotonic() < deadline:
        _busy_caller(0.05, probe, ran_on, submit=False)  # still busy, no more calls (no drain)
    assert len(ran_on) == submitted
    assert ran_on[-1] == "hilt-recorder"


def test_a_callers_batch_that_blocks_gives_the_work_back_to_the_recorder(monkeypatch):
    """A caller's batch for a starved recorder that spends its time blocked (a handler waiting on I/O, the GIL
    given up) ends the starved mode, so the next tasks go to the recorder; a batch that only computes keeps it."""
    _wait_until_the_recorder_sleeps()  # tasks put straight in the queue below wake nobody
    monkeypatch.setattr(_recorder, "_starved", True)
    monkeypatch.setattr(_recorder, "_pending_since", time.monotonic() - 1.0)
    ran_on: list[str] = []
    _recorder._pending.append(lambda: ran_on.append(threading.current_thread().name))
    _recorder._run_for_starved_recorder()
    assert ran_on == [threading.current_thread().name]
    assert _recorder._starved  # a batch of work: still the caller's
    _recorder._pending.append(lambda: (time.sleep(0.02), ran_on.append(threading.current_thread().name)))
    _recorder._run_for_starved_recorder()
    assert ran_on == [threading.current_thread().name] * 2
    assert not _recorder._starved


def test_a_starved_recorders_caller_waits_for_a_few_tasks_before_a_batch(monkeypatch):
    """A batch's first tasks run with cold CPU caches after a long call, so a caller runs a batch once the oldest
    task has waited INLINE_AFTER_S only if INLINE_MIN wait; a task or two are run once the oldest has waited
    INLINE_LATEST_S (or INLINE_BATCH wait)."""
    _wait_until_the_recorder_sleeps()
    monkeypatch.setattr(_recorder, "_starved", True)
    ran: list[int] = []

    def batch_after(waiting: int, age: float) -> bool:
        ran.clear()
        _recorder._pending.extend(lambda n=n: ran.append(n) for n in range(waiting))
        monkeypatch.setattr(_recorder, "_pending_since", time.monotonic() - age)
        _recorder._run_for_starved_recorder()
        left = len(_recorder._pending)
        _recorder._pending.clear()
        return ran == list(range(waiting)) and left == 0

    middle = (_recorder.INLINE_AFTER_S + _recorder.INLINE_LATEST_S) / 2
    assert not batch_after(2, _recorder.INLINE_AFTER_S / 2) and ran == []
    assert not batch_after(2, middle) and ran == []
    assert batch_after(_recorder.INLINE_MIN, middle)
    assert batch_after(2, _recorder.INLINE_LATEST_S + 0.05)
    assert batch_after(_recorder.INLINE_BATCH, 0.0)


def test_a_callers_batch_leaves_the_recorders_heartbeat_alone(monkeypatch):
    """The heartbeat says when the recorder is due (its last step, or the end of its sleep): a caller's batch
    that renewed it made the next calls find it overdue 5 ms later and hand the GIL over, three pauses each,
    to a recorder still asleep in its starved look."""
    _wait_until_the_recorder_sleeps()
    due = time.monotonic() + 60.0
    monkeypatch.setattr(_recorder, "_heartbeat", due)
    monkeypatch.setattr(_recorder, "_starved", True)
    monkeypatch.setattr(_recorder, "_pending_since", time.monotonic() - 1.0)
    ran: list[int] = []
    _recorder._pending.extend([lambda: ran.append(1), lambda: ran.append(2)])
    _recorder._run_for_starved_recorder()
    assert ran == [1, 2]
    assert _recorder._heartbeat == due


def test_a_blocked_batch_wakes_the_starved_recorder_to_take_the_work_back(tmp_path, monkeypatch):
    """A recorder starved by a busy caller looks for work only every STARVED_POLL_S. When a caller's batch
    blocks (a handler on I/O) and gives the work back, the recorder is woken at once: the next task is its own
    at once, not after the rest of its starved look (a minute here)."""
    monkeypatch.setattr(_recorder, "STARVED_POLL_S", 60.0)
    probe = tmp_path / "probe"
    probe.write_text("x")
    ran_on: list[str] = []
    deadline = time.monotonic() + 10
    while not _recorder._starved and time.monotonic() < deadline:
        _busy_caller(0.1, probe, ran_on)
    assert _recorder._starved, "the busy caller never starved the recorder"
    _recorder.drain()
    monkeypatch.setattr(_recorder, "_pending_since", time.monotonic() - 1.0)  # a batch is due
    _recorder._pending.append(lambda: (time.sleep(0.02), ran_on.append("blocked")))
    _recorder._run_for_starved_recorder()  # as the next submit does
    assert ran_on[-1] == "blocked" and not _recorder._starved
    done = threading.Event()
    _recorder.submit(lambda: (ran_on.append(threading.current_thread().name), done.set()))
    assert done.wait(10), "the recorder slept through its starved look"
    assert ran_on[-1] == "hilt-recorder"


def test_a_blocked_recorder_is_left_alone(monkeypatch):
    """A recorder blocked in a slow handler has given the GIL up: it is not starved, and a hand-over cannot
    help. One hand-over sees no progress; callers then leave it alone (longer each time) instead of waiting
    on every call."""
    monkeypatch.setattr(_recorder, "HAND_OVER_WAIT_S", 0.2)
    monkeypatch.setattr(_recorder, "BACK_OFF_S", 60.0)
    monkeypatch.setattr(_recorder, "_no_hand_over_until", 0.0)  # restored afterwards, so later tests hand over
    monkeypatch.setattr(_recorder, "_stalls", 0)
    started, gate = threading.Event(), threading.Event()
    _wait_until_the_recorder_sleeps()
    _recorder.submit(lambda: (started.set(), gate.wait(30)))
    assert started.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (  # until the recorder's heartbeat is stale, with no back-off on
            time.monotonic() - (_recorder._heartbeat or 0.0) > 3 * _recorder.STARVED_S
            and time.monotonic() >= _recorder._no_hand_over_until):
        time.sleep(_recorder.STARVED_S)
    state = (_recorder._heartbeat, _recorder._no_hand_over_until, time.monotonic(), _recorder._lock.locked())
    waits = []
    try:
        for _ in range(30):
            start = time.monotonic()
            _recorder.submit(lambda: None)
            waits.append(time.monotonic() - start)
    finally:
        gate.set()
    _recorder.drain()
    assert sum(1 for wait in waits if wait >= 0.2) == 1, (waits, state)
    assert _recorder._stalls == 1


def test_the_recorder_thread_survives_a_failure_of_its_own(monkeypatch, internal_reports):
    """A bug in the recorder's own loop (not in a task) is reported, and the thread goes on serving tasks."""
    failed: list[int] = []

    def broken_next_poll() -> float:
        if not failed:
            failed.append(1)
            raise RuntimeError("recorder loop bug")
        return _recorder.POLL_S

    _wait_until_the_recorder_sleeps()  # so the next task wakes it, and its loop runs (and fails) again
    monkeypatch.setattr(_recorder, "_next_poll", broken_next_poll)
    ran_on: list[str] = []
    done = threading.Event()
    _recorder.submit(lambda: ran_on.append(threading.current_thread().name))
    _recorder.submit(lambda: (ran_on.append(threading.current_thread().name), done.set()))
    assert done.wait(10)  # no drain here: only the recorder thread can run them
    assert ran_on == ["hilt-recorder", "hilt-recorder"]
    assert failed == [1]
    assert any("recorder loop bug" in r.getMessage() for r in internal_reports())


def test_a_batch_lets_go_of_the_lock_after_its_time():
    """The recorder runs a batch under its lock, but past its time it stops after the task in progress, so a
    drain or a caller over the bound waits behind one slow task, not behind the whole batch."""
    started, gate = threading.Event(), threading.Event()
    _recorder.submit(lambda: (started.set(), gate.wait(30)))
    assert started.wait(10)  # the recorder thread is parked in that task (holding the lock), away from those below
    ran: list[int] = []
    for n in range(5):
        _recorder._pending.append(lambda n=n: (time.sleep(0.02), ran.append(n)))
    try:
        _recorder._run_pending(5, until=time.monotonic() + 0.01)
        assert ran == [0]  # the first task ran past the batch's time: the rest wait for the next batch
    finally:
        gate.set()
    _recorder.drain()
    assert ran == [0, 1, 2, 3, 4]


def test_a_waiting_recording_keeps_neither_the_http_response_nor_the_sdk_options(server, tmp_path):
    """While a plain call's tasks wait for a busy recorder, the call's HTTP response and the SDK's request
    options are already freed (kept alive, they make the caller's next call allocate cold memory); the
    events written afterwards are still complete."""
    responses = []

    def keep_weak_response(response: httpx2.Response) -> None:
        responses.append(weakref.ref(response))

    def live_options() -> int:
        gc.collect()
        return sum(1 for thing in gc.get_objects() if isinstance(thing, FinalRequestOptions))

    log = tmp_path / "freed.jsonl"
    hilt.instrument(filepath=str(log), providers=["openai"])
    release, busy = threading.Event(), threading.Event()
    http_client = httpx2.Client(event_hooks={"response": [keep_weak_response]})
    try:
        with make_client(server, http_client=http_client) as client:
            _wait_until_the_recorder_sleeps()
            options_before = live_options()
            _recorder.submit(lambda: (busy.set(), release.wait(30)))  # the recorder is held up ...
            assert busy.wait(10)
            reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            assert live_options() == options_before
            assert _recorder.pending()  # ... so this call's tasks still wait
            assert responses and [ref() for ref in responses] == [None] * len(responses)
            release.set()
            hilt.flush()
    finally:
        release.set()
        hilt.uninstrument()
    prompt, completion = one_call(log)
    assert completion["content"]["text"] == reply.choices[0].message.content
    assert completion["extensions"]["status_code"] == 200
    assert completion["metrics"]["tokens"]["prompt"] == reply.usage.prompt_tokens

"""The recorder: provider work taken off the caller's thread and done, in order, by one background thread.

A provider hands over small tasks (build the prompt event, read the response, emit the completion)
with :func:`submit`; the LLM call returns while the ``hilt-recorder`` thread does them. Tasks run
one at a time in submission order, so a call's prompt is always written before its completion.
:func:`drain` runs whatever is pending on the calling thread instead (``hilt.flush()``, readers in
the same process, ``uninstrument()``, exit); past :data:`MAX_PENDING` waiting tasks each caller runs
the oldest ones itself, so memory stays bounded however fast calls come.

Waking a sleeping thread is a system call on the caller's thread (and, on a VM, an interrupt to
another CPU), so after its last task the recorder lingers for :data:`LINGER_S`, looking for new
tasks every :data:`POLL_S`: while calls keep coming they are handed over with a plain append.

A caller that never waits (a fast local server, a mock transport) but gives up the GIL for short
system calls starves the recorder: CPython makes the GIL's holder give it up only after
``sys.getswitchinterval()`` without a release, and each short release makes the caller signal the
waiting recorder instead, which rarely wins the GIL. So the recorder keeps a heartbeat (its last
step, or when its next look for tasks is due); a submit that finds it more than :data:`STARVED_S`
old pauses the caller for :data:`HAND_OVER_S` and waits, at most :data:`HAND_OVER_WAIT_S`, while the
recorder does its batch. A recorder that makes no progress even then is blocked (a slow handler),
not starved: callers leave it alone for a while, longer each time, up to :data:`BACK_OFF_S`.

Handing the work to a starved recorder is dear, though: each system call in a task (a line's write)
gives the GIL up, the busy caller takes it back at once, and the recorder waits a whole switch
interval to win it again, with two wake-ups across CPUs each time (on the 2-core VM, about ten
context switches per 200-chunk stream, and several times hilt's own CPU work). So a recorder that
finds, when it gets the GIL, that it waited more than :data:`STARVED_S` for it marks itself starved
and leaves the tasks to the callers: a submit then runs the waiting ones on the caller's thread, a
batch at a time (:data:`INLINE_BATCH` tasks, or once the oldest has waited :data:`INLINE_AFTER_S` with a
few waiting, or :data:`INLINE_LATEST_S`),
where the caller's data is in the CPU cache and no thread waits for another. The starved recorder
looks every :data:`STARVED_POLL_S`: if it gets the GIL at once, the caller waits again (on the
network, as real calls do) and the recorder takes the work back; a task it finds waiting at two
looks in a row (a busy caller that stopped calling) it runs itself. A caller's batch that spent
:data:`BLOCKED_S` blocked (a handler on I/O, the GIL given up meanwhile) gives the work back and wakes
the recorder at once; a caller's batch never touches the recorder's heartbeat, which says when the
recorder is due (renewed by a caller, it made the next calls hand over to a recorder still asleep).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable

from ._internal import report_failure

__all__ = ["MAX_PENDING", "drain", "pending", "run_inline", "submit"]

#: Tasks allowed to wait for the recorder thread before callers start doing the backlog themselves.
MAX_PENDING = 10_000

#: How long the recorder keeps looking for new tasks after its last one before it sleeps, and how often
#: it looks (a task waits at most this long while the recorder lingers).
LINGER_S = 0.05
POLL_S = 0.005

#: A recorder whose heartbeat is older than the switch interval is starved by a busy caller's short releases
#: (without them CPython would have switched). The caller then hands the GIL over for :data:`HAND_OVER_S` and
#: waits up to :data:`HAND_OVER_WAIT_S` for the batch; no progress means a blocked recorder: no hand-over for
#: twice :data:`BUSY_POLL_S`, doubling with each such hand-over in a row up to :data:`BACK_OFF_S`.
STARVED_S = max(0.002, sys.getswitchinterval())
HAND_OVER_S = 0.0002
HAND_OVER_WAIT_S = 0.01
BACK_OFF_S = 1.0
BUSY_POLL_S = 0.05

#: While the recorder is starved, callers run the waiting tasks themselves, once :data:`INLINE_BATCH` of them
#: wait, or the oldest has waited :data:`INLINE_AFTER_S` and :data:`INLINE_MIN` wait, or the oldest has waited
#: :data:`INLINE_LATEST_S`; the starved recorder looks every :data:`STARVED_POLL_S` and runs a task it saw waiting
#: at its last look too (so none waits for ever on a caller that stopped calling). A batch's first tasks find
#: hilt's code and data gone from the CPU caches after a long call, so a batch of a few long calls' tasks costs
#: less per call than one of a single call's (`benchmarks/overhead.py`, "recorder's work per call ... by calls
#: per batch": after 200-chunk streams 400–460 µs alone, 235–240 µs five to a batch, in two runs).
INLINE_BATCH = 64
INLINE_AFTER_S = 0.05
INLINE_MIN = 8
INLINE_LATEST_S = 0.15
STARVED_POLL_S = 0.2
#: A caller's batch that spent this long off the CPU (blocked in a handler) gives the work back to the recorder.
BLOCKED_S = 0.005

Task = Callable[[], None]

_pending: deque[Task] = deque()
_lock = threading.Lock()  # held while tasks run: one at a time, in order
_wake: queue.SimpleQueue[None] = queue.SimpleQueue()  # a token wakes the recorder thread (C-level put)
_sleeping = True  # the recorder thread waits (or was never started): the next submit wakes it
_thread: threading.Thread | None = None
_runner = threading.local()  # .active is True on a thread inside a task (its own emits never drain)
_heartbeat: float | None = None  # the recorder's last step, or when its next look is due; None while it sleeps
_no_hand_over_until = 0.0
_stalls = 0  # hand-overs in a row that found the recorder blocked
_starved = False  # the recorder waited more than STARVED_S for the GIL at its last look: callers run the tasks
_pending_since = 0.0  # while starved: when the oldest waiting task was queued (set when the queue was empty)


def submit(task: Task) -> None:
    """Queue ``task`` for the recorder thread (a few hundred nanoseconds on the caller's thread)."""
    global _sleeping, _heartbeat, _pending_since
    starved = _starved
    if starved and not _pending:
        _pending_since = time.monotonic()  # only a starved recorder's callers read it (no clock read otherwise)
    _pending.append(task)
    if len(_pending) > MAX_PENDING:
        _help()
    elif starved:
        _run_for_starved_recorder()
    elif _sleeping:
        _sleeping = False
        _heartbeat = time.monotonic()
        if _thread is None:
            _start_thread()
        _wake.put(None)
    elif _heartbeat is not None and time.monotonic() - _heartbeat > STARVED_S:
        _hand_over()


def _hand_over() -> None:
    """The recorder is starved of the GIL: let it have it, and wait (at most :data:`HAND_OVER_WAIT_S`) until its
    batch is done; blocked on the lock it holds, this thread is no rival for the GIL meanwhile."""
    global _no_hand_over_until, _stalls
    now = time.monotonic()
    if now < _no_hand_over_until or getattr(_runner, "active", False):
        return
    _no_hand_over_until = now + STARVED_S  # one caller at a time
    before = _heartbeat
    for _ in range(3):  # a waiting thread takes a moment to wake up and take the GIL
        time.sleep(HAND_OVER_S)
        if _heartbeat != before:
            break
    busy = _lock.locked()  # in a batch: wait for it; between batches, what it got, it used
    if busy and _lock.acquire(timeout=HAND_OVER_WAIT_S):
        _lock.release()
    if busy and _heartbeat == before:  # in a batch, and no step taken while the GIL was free: blocked, not starved
        # (or one long step, such as a garbage collection): leave it alone for longer each time, up to BACK_OFF_S
        _stalls += 1
        _no_hand_over_until = time.monotonic() + min(BACK_OFF_S, BUSY_POLL_S * 2 ** _stalls)
    else:
        _stalls = 0


def _run_for_starved_recorder() -> None:
    """The recorder is starved of the GIL (a caller that never waits): run the waiting tasks on this thread, a
    batch at a time (:data:`INLINE_BATCH` of them, or once the oldest has waited :data:`INLINE_AFTER_S` with
    :data:`INLINE_MIN` waiting, or :data:`INLINE_LATEST_S`: a batch of one long call's tasks runs cold). Handing
    them over costs more: each system call in a task (a line's write) gives the GIL up, and the recorder then
    waits a whole switch interval to win it back, with two wake-ups across CPUs each time; here the tasks run
    where the caller's data is in the CPU cache. A batch that spent :data:`BLOCKED_S` or more blocked (a handler
    waiting on I/O, which gives the GIL up meanwhile) gives the work back: the recorder can run then."""
    global _starved
    if getattr(_runner, "active", False):
        return
    waiting, age = len(_pending), time.monotonic() - _pending_since
    if waiting < INLINE_BATCH and (age < INLINE_AFTER_S or (waiting < INLINE_MIN and age < INLINE_LATEST_S)):
        return
    if not _lock.acquire(blocking=False):
        return  # the recorder is in a batch: it goes on with it
    try:
        started, cpu_started = time.monotonic(), time.thread_time()
        _run_pending(len(_pending), until=started + HAND_OVER_WAIT_S)  # the recorder's heartbeat left as it is
        blocked = (time.monotonic() - started) - (time.thread_time() - cpu_started)
        if blocked >= BLOCKED_S:
            _starved = False  # a handler that blocks: back to the recorder, which runs while it waits;
            _wake.put(None)  # woken from its starved look now, not at its end (STARVED_POLL_S)
    finally:
        _lock.release()


def _help() -> None:
    """Backpressure: the recorder can't keep up, so the caller runs the oldest tasks until the backlog is
    back at :data:`MAX_PENDING`; each call then does about its own share, and none stalls on the whole queue."""
    if getattr(_runner, "active", False):
        return
    with _lock:
        _run_pending(len(_pending) - MAX_PENDING)


def pending() -> bool:
    """True while tasks wait or one is running (so an event emitted now would overtake them)."""
    return bool(_pending) or _lock.locked()


def drain() -> None:
    """Run the tasks pending now on this thread, after the one in progress; a no-op inside a task
    and when nothing is pending.

    Tasks submitted meanwhile by other threads are left to the recorder thread, so a drain ends
    even while other threads keep calling.
    """
    if getattr(_runner, "active", False) or not pending():
        return
    count = len(_pending)
    with _lock:
        _run_pending(count)


def run_inline(task: Task) -> None:
    """Run ``task`` now on this thread, after everything pending (for results the caller reads at once)."""
    if getattr(_runner, "active", False):
        _run_one(task)
        return
    with _lock:
        _run_pending(len(_pending), then=task)


def _run_pending(limit: int | None = None, then: Task | None = None, until: float | None = None,
                 beat: bool = False) -> None:
    """Run pending tasks in order (``limit`` of them, until none is left, or until the monotonic time ``until``
    has passed after a task), then ``then``. With ``beat`` (the recorder thread's batches) each task renews the
    recorder's heartbeat; a caller's batch leaves it alone, so it still says when the recorder is due."""
    global _heartbeat
    _runner.active = True
    try:
        done = 0
        while limit is None or done < limit:
            try:
                task = _pending.popleft()
            except IndexError:
                break
            _run_one(task)
            done += 1
            if until is not None:
                now = time.monotonic()
                if beat:
                    _heartbeat = now
                if now >= until:
                    break
        if then is not None:
            _run_one(then)
    finally:
        _runner.active = False


def _run_one(task: Task) -> None:
    try:
        task()
    except Exception as exc:
        report_failure("recording a call", exc)


def _loop() -> None:
    """The recorder thread: serve tasks for ever; a failure of its own is reported and it goes on (a dead
    recorder would leave every later call's events waiting for a flush)."""
    while True:
        try:
            _serve()
        except Exception as exc:
            report_failure("the recorder thread", exc)
            time.sleep(POLL_S)


def _serve() -> None:
    global _sleeping, _heartbeat
    while True:
        _heartbeat = None  # before _sleeping: a submit that sees it asleep sets the heartbeat for the wake-up
        _sleeping = True
        if not _pending:
            _wake.get()  # a spare token from a race only costs one empty turn
        _sleeping = False
        poll = _next_poll()
        seen: Task | None = None  # the first task waiting at the last look
        while poll:
            first = _pending[0] if _pending else None
            if not _starved or (first is not None and first is seen):  # starved, callers run the tasks
                _run_batches()
            seen = _pending[0] if _pending else None
            poll = _linger(poll)


def _run_batches() -> None:
    while _pending:
        with _lock:  # per batch (what is pending now, for at most HAND_OVER_WAIT_S and one task), so
            # a drain or a caller over MAX_PENDING on another thread gets its turn behind a slow handler
            _run_pending(len(_pending), until=time.monotonic() + HAND_OVER_WAIT_S, beat=True)


def _next_poll() -> float:
    """The recorder runs again: its poll interval from now on, :data:`STARVED_POLL_S` if it had to wait more than
    :data:`STARVED_S` for the GIL (starved: callers run the tasks meanwhile), else :data:`POLL_S`."""
    global _heartbeat, _starved
    now = time.monotonic()
    _starved = _heartbeat is not None and now - _heartbeat > STARVED_S
    _heartbeat = now
    return STARVED_POLL_S if _starved else POLL_S


def _linger(poll: float) -> float:
    """After the last task, look for new ones every ``poll`` seconds for :data:`LINGER_S` (at least two looks)
    before sleeping: while the recorder lingers, a call's tasks need no wake-up (no system call on the
    caller's thread). Returns the poll interval to go on with when a task came (:data:`STARVED_POLL_S` while
    the recorder is starved), 0.0 when none did (a starved recorder goes on looking)."""
    global _heartbeat
    deadline = time.monotonic() + max(LINGER_S, 2 * poll)
    while time.monotonic() < deadline:
        _heartbeat = time.monotonic() + poll  # not due before then: no hand-over while it sleeps
        try:
            _wake.get(timeout=poll)  # a caller's batch that blocked gives the work back with a token
        except queue.Empty:
            pass
        poll = _next_poll()
        if _pending:
            return poll
        if not _starved:  # no longer starved (a starved look lasts longer): linger LINGER_S from here at most
            deadline = min(deadline, time.monotonic() + LINGER_S)
    return STARVED_POLL_S if _starved else 0.0  # a starved recorder keeps looking: callers may stop calling


def _start_thread() -> None:
    global _thread
    with _start_lock:
        if _thread is None:
            thread = threading.Thread(target=_loop, name="hilt-recorder", daemon=True)
            thread.start()
            _thread = thread


_start_lock = threading.Lock()


def _after_fork_in_child() -> None:
    """A forked child starts with no recorder thread and none of the parent's tasks (the parent does those)."""
    global _lock, _wake, _thread, _start_lock, _sleeping, _heartbeat, _no_hand_over_until, _stalls, _starved
    _pending.clear()
    _lock, _wake, _start_lock = threading.Lock(), queue.SimpleQueue(), threading.Lock()
    _thread, _sleeping, _heartbeat, _no_hand_over_until, _stalls = None, True, None, 0.0, 0
    _starved = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

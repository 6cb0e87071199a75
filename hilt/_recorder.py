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
"""

from __future__ import annotations

import os
import queue
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

Task = Callable[[], None]

_pending: deque[Task] = deque()
_lock = threading.Lock()  # held while tasks run: one at a time, in order
_wake: queue.SimpleQueue[None] = queue.SimpleQueue()  # a token wakes the recorder thread (C-level put)
_sleeping = True  # the recorder thread waits (or was never started): the next submit wakes it
_thread: threading.Thread | None = None
_runner = threading.local()  # .active is True on a thread inside a task (its own emits never drain)


def submit(task: Task) -> None:
    """Queue ``task`` for the recorder thread (a few hundred nanoseconds on the caller's thread)."""
    global _sleeping
    _pending.append(task)
    if len(_pending) > MAX_PENDING:
        _help()
    elif _sleeping:
        _sleeping = False
        if _thread is None:
            _start_thread()
        _wake.put(None)


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


def _run_pending(limit: int | None = None, then: Task | None = None) -> None:
    """Run pending tasks in order (``limit`` of them, or until none is left), then ``then``."""
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
    global _sleeping
    while True:
        _sleeping = True
        if not _pending:
            _wake.get()  # a spare token from a race only costs one empty turn
        _sleeping = False
        while True:
            while _pending:
                with _lock:  # taken per task, so a drain on another thread gets its turn under a steady stream of calls
                    _run_pending(1)
            if not _linger():
                break


def _linger() -> bool:
    """After the last task, look for new ones for :data:`LINGER_S` before sleeping: while the recorder
    lingers, a call's tasks need no wake-up (no system call on the caller's thread). True if one came."""
    deadline = time.monotonic() + LINGER_S
    while time.monotonic() < deadline:
        time.sleep(POLL_S)
        if _pending:
            return True
    return False


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
    global _lock, _wake, _thread, _start_lock, _sleeping
    _pending.clear()
    _lock, _wake, _start_lock = threading.Lock(), queue.SimpleQueue(), threading.Lock()
    _thread, _sleeping = None, True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

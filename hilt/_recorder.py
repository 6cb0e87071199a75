"""The recorder: provider work taken off the caller's thread and done, in order, by one background thread.

A provider hands over small tasks (build the prompt event, read the response, emit the completion)
with :func:`submit`; the LLM call returns while the ``hilt-recorder`` thread does them. Tasks run
one at a time in submission order, so a call's prompt is always written before its completion.
:func:`drain` runs whatever is pending on the calling thread instead (``hilt.flush()``, readers in
the same process, ``uninstrument()``, exit); past :data:`MAX_PENDING` waiting tasks the caller does
the backlog itself, so memory stays bounded however fast calls come.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable

from ._internal import report_failure

__all__ = ["MAX_PENDING", "drain", "pending", "run_inline", "submit"]

#: Tasks allowed to wait for the recorder thread before callers start doing the backlog themselves.
MAX_PENDING = 10_000

Task = Callable[[], None]

_pending: deque[Task] = deque()
_lock = threading.Lock()  # held while tasks run: one at a time, in order
_wake = threading.Event()
_thread: threading.Thread | None = None
_runner = threading.local()  # .active is True on a thread inside a task (its own emits never drain)


def submit(task: Task) -> None:
    """Queue ``task`` for the recorder thread (a few hundred nanoseconds on the caller's thread)."""
    _pending.append(task)
    if len(_pending) > MAX_PENDING:
        drain()  # backpressure: the recorder can't keep up, so the caller helps
        return
    if not _wake.is_set():
        if _thread is None:
            _start_thread()
        _wake.set()


def pending() -> bool:
    """True while tasks wait or one is running (so an event emitted now would overtake them)."""
    return bool(_pending) or (_lock.locked() and not getattr(_runner, "active", False))


def drain() -> None:
    """Run the tasks pending now on this thread, after the one in progress; a no-op inside a task.

    Tasks submitted meanwhile by other threads are left to the recorder thread, so a drain ends
    even while other threads keep calling.
    """
    if getattr(_runner, "active", False):
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
        _run_pending(len(_pending))
        _runner.active = True
        try:
            _run_one(task)
        finally:
            _runner.active = False


def _run_pending(limit: int | None = None) -> None:
    """Run pending tasks in order: ``limit`` of them, or until none is left."""
    _runner.active = True
    try:
        done = 0
        while limit is None or done < limit:
            try:
                task = _pending.popleft()
            except IndexError:
                return
            _run_one(task)
            done += 1
    finally:
        _runner.active = False


def _run_one(task: Task) -> None:
    try:
        task()
    except Exception as exc:
        report_failure("recording a call", exc)


def _loop() -> None:
    while True:
        _wake.wait()
        _wake.clear()
        while _pending:
            with _lock:  # taken per task, so a drain on another thread gets its turn under a steady stream of calls
                _run_pending(1)


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
    global _lock, _wake, _thread, _start_lock
    _pending.clear()
    _lock, _wake, _start_lock = threading.Lock(), threading.Event(), threading.Lock()
    _thread = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

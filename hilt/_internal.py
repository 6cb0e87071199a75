"""Reporting of hilt's own failures on the ``hilt.internal`` logger: the first of each kind, then a count."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["guard", "internal_logger", "log_repeat_counts", "report_failure", "report_problem"]

internal_logger = logging.getLogger("hilt.internal")


class _ForwardToRoot(logging.Handler):
    """Sends ``hilt.internal`` records to the application's root handlers, skipping the ``hilt`` event logger.

    The ``hilt`` logger does not propagate (events must not spill into the app's logs), so its child
    would otherwise be silent; with no root handlers the stdlib's last-resort handler shows warnings on stderr.
    """

    def emit(self, record: logging.LogRecord) -> None:
        root = logging.getLogger()
        if root.handlers:
            if record.levelno >= root.getEffectiveLevel():
                root.handle(record)
        elif logging.lastResort is not None and record.levelno >= logging.lastResort.level:
            logging.lastResort.handle(record)


def _ensure_route() -> None:
    """Keep diagnostics visible: ``dictConfig`` naming ``hilt`` strips its children's handlers; put ours back.

    A ``hilt.internal`` the user configured with handlers of their own is left as it is.
    """
    if not internal_logger.handlers:
        internal_logger.addHandler(_ForwardToRoot())
        internal_logger.propagate = False


_ensure_route()

_lock = threading.Lock()
_counts: dict[tuple[str, str], int] = {}


def report_failure(place: str, exc: BaseException) -> None:
    """Report an exception caught inside hilt: with its traceback the first time for (class, place), counted after."""
    key = (type(exc).__name__, place)
    with _lock:
        seen = _counts.get(key, 0)
        _counts[key] = seen + 1
    if seen == 0:
        try:
            _ensure_route()
            internal_logger.warning(
                "hilt: %s in %s: %s (further %s here are counted, not logged)",
                type(exc).__name__, place, exc, type(exc).__name__,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        except Exception:  # the user's logging set-up itself failed; nothing more we can do safely
            pass


def report_problem(place: str, message: str, *args: object) -> None:
    """Report a problem that is not an exception (a skipped log line, a disabled logger), counted like failures."""
    key = ("problem", place)
    with _lock:
        seen = _counts.get(key, 0)
        _counts[key] = seen + 1
    if seen == 0:
        _ensure_route()
        internal_logger.warning("hilt: " + message, *args)


def log_repeat_counts() -> dict[tuple[str, str], int]:
    """Log, once, how often each reported kind repeated since the last call; returns and resets the counts."""
    with _lock:
        counts = dict(_counts)
        _counts.clear()
    repeats = {key: n for key, n in counts.items() if n > 1}
    if repeats:
        _ensure_route()
    for (kind, place), n in sorted(repeats.items()):
        internal_logger.warning("hilt: %s in %s happened %d times in all", kind, place, n)
    return counts


@contextmanager
def guard(place: str) -> Iterator[None]:
    """Run a step of hilt's own work so that a failure is reported, never raised into the application."""
    try:
        yield
    except Exception as exc:
        report_failure(place, exc)

"""``HiltQueueHandler``: hand events to a background thread that runs the real handlers.

The stdlib's ``QueueHandler`` needs its ``QueueListener`` started by hand, and ``dictConfig`` on
Python < 3.12 cannot wire one up. This handler owns its listener: configure it with the handlers
to feed (``cfg://handlers.NAME`` in a YAML file) and file writes leave the caller's thread.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
from collections.abc import Sequence
from typing import Any

from .._internal import report_failure

__all__ = ["HiltQueueHandler"]


class _DrainingListener(logging.handlers.QueueListener):
    """A ``QueueListener`` whose stop waits for room in a bounded queue instead of failing with ``queue.Full``."""

    def enqueue_sentinel(self) -> None:
        self.queue.put(self._sentinel)  # type: ignore[attr-defined]


class HiltQueueHandler(logging.handlers.QueueHandler):
    """Queue each record for a listener thread that passes it to ``handlers``; ``close()`` drains the queue.

    Args:
        handlers: the handlers the listener thread feeds (from ``dictConfig``: ``["cfg://handlers.hilt_jsonl"]``).
        maxsize: bound the queue (0: unbounded). A record that finds the queue full is reported on
            ``hilt.internal``, never raised into the caller.
        respect_handler_level: let each target handler's level filter records, as ``QueueListener`` does.
    """

    def __init__(self, handlers: Sequence[logging.Handler] = (), maxsize: int = 0, respect_handler_level: bool = True) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 0:
            raise ValueError(f"maxsize: expected a number of records >= 0 (0: unbounded), got {maxsize!r}")
        # Index, don't iterate: dictConfig's ConvertingList resolves cfg:// references on item access.
        targets = [handlers[index] for index in range(len(handlers))]
        for target in targets:
            if isinstance(target, dict):  # a cfg:// reference to a handler dictConfig has not built yet
                raise ValueError(
                    "handlers: a target handler is not built yet; dictConfig builds handlers in name order, "
                    "so give the queue handler a name that sorts after its targets (e.g. 'hilt_queue')"
                )
            if not isinstance(target, logging.Handler):
                raise ValueError(
                    f"handlers: {target!r} is not a logging.Handler; in dictConfig write cfg://handlers.NAME"
                )
        events: queue.Queue[Any] = queue.Queue(maxsize)
        super().__init__(events)
        self.handlers = targets
        self.listener = _DrainingListener(events, *targets, respect_handler_level=respect_handler_level)
        self.listener.start()
        self._stopped = False

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        if exc is not None:
            report_failure(f"{type(self).__name__}.emit", exc)

    def _listening(self) -> bool:
        return getattr(self.listener, "_thread", None) is not None

    def flush(self) -> None:
        """Wait until the listener has handed on every record queued so far, then flush the targets."""
        if self._listening():
            self.queue.join()  # type: ignore[union-attr]
        for target in self.handlers:
            target.flush()

    def close(self) -> None:
        """Stop the listener after it has handed on every queued record; idempotent."""
        try:
            if not self._stopped:
                self._stopped = True
                if self._listening():
                    self.listener.stop()
        finally:
            super().close()

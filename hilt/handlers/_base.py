"""What every hilt handler shares: event-only records and failure reports instead of stderr tracebacks."""

from __future__ import annotations

import logging
import sys

from .._internal import log_repeat_counts, report_failure

__all__ = ["HiltHandler"]


class HiltHandler(logging.Handler):
    """Base for hilt's handlers: only records carrying an event pass, and ``handleError`` reports to ``hilt.internal``.

    The stdlib default would print a traceback to stderr for every failed emit; hilt reports the
    first failure of a kind with its traceback and counts the rest.
    """

    def filter(self, record: logging.LogRecord) -> bool | logging.LogRecord:
        if getattr(record, "hilt_event", None) is None:
            return False
        return super().filter(record)

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        if exc is not None:
            report_failure(f"{type(self).__name__}.emit", exc)

    def close(self) -> None:
        """Close, then log once how often reported failures repeated (DESIGN: counts logged at handler close)."""
        super().close()
        try:
            log_repeat_counts()
        except Exception:  # the user's logging set-up itself failed (e.g. at interpreter exit)
            pass

"""``HiltAuditHandler``: each event as one ``[HILT_AUDIT] {...}`` line on stdout, for log aggregators."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from ..formatting import HiltAuditFormatter
from ._base import HiltHandler

__all__ = ["HiltAuditHandler"]


class HiltAuditHandler(HiltHandler):
    """Writes ``[HILT_AUDIT] {"timestamp", "event_type", "details"}`` lines; ``stream`` defaults to the current stdout.

    The stream is looked up at each write (not at construction), so redirected or captured stdout
    gets the lines. Usable from ``dictConfig`` as ``class: hilt.HiltAuditHandler``.
    """

    def __init__(self, stream: TextIO | None = None, level: int | str = logging.NOTSET) -> None:
        super().__init__(level)
        self._stream = stream
        self.setFormatter(HiltAuditFormatter())

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            stream = self.stream
            stream.write(line)
            stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

"""``capture_events()``: collect the events hilt emits, for assertions in tests of instrumented code."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from .._emit import logger
from ..events import Event

__all__ = ["EventCapture", "capture_events"]


class EventCapture(logging.Handler):
    """A handler that keeps every event it sees, in order, in ``events``."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[Event] = []

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "hilt_event", None)
        if event is not None:
            self.events.append(event)

    def of_action(self, action: str) -> list[Event]:
        """The captured events with this ``action`` (``prompt``, ``completion``, ``system``...)."""
        return [event for event in self.events if event.action == action]


@contextmanager
def capture_events() -> Iterator[list[Event]]:
    """Collect the events emitted inside the block (alongside any other handlers) into the yielded list.

        with capture_events() as events:
            client.chat.completions.create(...)
        assert events[-1].metrics.tokens["total"] == 12
    """
    handler = EventCapture()
    level = logger.level
    logger.addHandler(handler)
    if level == logging.NOTSET or level > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield handler.events
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)

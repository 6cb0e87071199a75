"""``capture_events()``: collect the events hilt emits, for assertions in tests of instrumented code."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .. import _recorder
from .._emit import logger
from ..events import Event

__all__ = ["EventCapture", "capture_events"]


class CapturedEvents(list):  # type: ignore[type-arg]
    """The events captured so far; reading it first finishes recording the calls already made."""

    def _caught_up(self) -> None:
        _recorder.drain()

    def __len__(self) -> int:
        self._caught_up()
        return super().__len__()

    def __iter__(self) -> Iterator[Event]:
        self._caught_up()
        return super().__iter__()

    def __getitem__(self, index: Any) -> Any:
        self._caught_up()
        return super().__getitem__(index)

    def __bool__(self) -> bool:
        return len(self) > 0

    def __eq__(self, other: object) -> bool:
        self._caught_up()
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        self._caught_up()
        return super().__repr__()


class EventCapture(logging.Handler):
    """A handler that keeps every event it sees, in order, in ``events``."""

    def __init__(self) -> None:
        super().__init__()
        self.events: CapturedEvents = CapturedEvents()

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

    Reading the list first finishes recording the calls already made (hilt records in the background).

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
        _recorder.drain()
        logger.removeHandler(handler)
        logger.setLevel(level)

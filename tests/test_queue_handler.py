"""HiltQueueHandler: events written by a listener thread, drained on flush/close, wired by dictConfig on 3.11."""

from __future__ import annotations

import logging
import logging.config
import threading

import pytest

import hilt
from hilt import Event, HiltJSONLHandler, HiltQueueHandler

HILT_LOGGER = logging.getLogger("hilt")


class ThreadNames(logging.Handler):
    """Remembers which thread handled each event."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.threads.append(threading.current_thread().name)


class Blocking(logging.Handler):
    """Holds the listener thread until released, so the queue fills up."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.go.wait(10)


def test_events_are_written_by_the_listener_thread_and_flush_waits(tmp_log, read_jsonl):
    """Every event reaches the file, written off the caller's thread, once flush() returns."""
    writer = HiltJSONLHandler(tmp_log)
    names = ThreadNames()
    queued = HiltQueueHandler(handlers=[writer, names])
    HILT_LOGGER.addHandler(queued)
    events = [Event(action="retrieval", extensions={"seq": i}) for i in range(200)]
    with hilt.conversation(user_id="u1"):
        for event in events:
            hilt.emit(event)
    queued.flush()
    lines = read_jsonl(tmp_log)
    assert [line["extensions"]["seq"] for line in lines] == list(range(200))
    assert all(line["extensions"]["user_id"] == "u1" for line in lines)
    assert set(names.threads) != {threading.current_thread().name}
    HILT_LOGGER.removeHandler(queued)
    queued.close()
    queued.close()  # idempotent
    writer.close()


def test_close_drains_what_is_queued(tmp_log, read_jsonl):
    """close() writes every record still queued before stopping the listener."""
    writer = HiltJSONLHandler(tmp_log)
    queued = HiltQueueHandler(handlers=[writer])
    HILT_LOGGER.addHandler(queued)
    for i in range(500):
        hilt.emit(Event(action="retrieval", extensions={"seq": i}))
    HILT_LOGGER.removeHandler(queued)
    queued.close()
    assert len(read_jsonl(tmp_log)) == 500
    writer.close()


def test_full_queue_reports_once_and_never_raises(internal_reports):
    """With maxsize, a full queue is reported on hilt.internal, counted, and never raised into the caller."""
    blocker = Blocking()
    queued = HiltQueueHandler(handlers=[blocker], maxsize=1)
    HILT_LOGGER.addHandler(queued)
    try:
        for i in range(10):
            hilt.emit(Event(action="retrieval", extensions={"seq": i}))
        reports = [r for r in internal_reports() if "Full" in r.getMessage()]
        assert len(reports) == 1
        assert hilt._internal.log_repeat_counts()[("Full", "HiltQueueHandler.emit")] >= 7
    finally:
        blocker.go.set()
        HILT_LOGGER.removeHandler(queued)
        queued.close()


def test_dictconfig_wires_targets_by_reference(tmp_log, read_jsonl):
    """A dictConfig on this Python builds the queue in front of named handlers with cfg://handlers.NAME."""
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "hilt_jsonl": {"class": "hilt.HiltJSONLHandler", "filename": str(tmp_log)},
            "hilt_queue": {"class": "hilt.HiltQueueHandler", "handlers": ["cfg://handlers.hilt_jsonl"]},
        },
        "loggers": {"hilt": {"level": "INFO", "handlers": ["hilt_queue"], "propagate": False}},
    })
    (queued,) = HILT_LOGGER.handlers
    assert isinstance(queued, HiltQueueHandler)
    hilt.audit_log("report_viewed", report="q3")
    queued.flush()
    assert [line["extensions"]["audit_event_type"] for line in read_jsonl(tmp_log)] == ["report_viewed"]
    queued.close()
    queued.handlers[0].close()


def test_dictconfig_names_the_fix_when_the_queue_sorts_first(tmp_log):
    """A queue handler named before its targets fails with a message saying how to name it."""
    with pytest.raises(ValueError) as caught:
        logging.config.dictConfig({
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "a_queue": {"class": "hilt.HiltQueueHandler", "handlers": ["cfg://handlers.hilt_jsonl"]},
                "hilt_jsonl": {"class": "hilt.HiltJSONLHandler", "filename": str(tmp_log), "delay": True},
            },
        })
    assert "sorts after its targets" in str(caught.value.__cause__)


def test_bad_arguments_raise():
    """A target that is not a handler, or a negative maxsize, raises naming the argument."""
    with pytest.raises(ValueError, match="handlers:"):
        HiltQueueHandler(handlers=["not a handler"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="maxsize:"):
        HiltQueueHandler(maxsize=-1)

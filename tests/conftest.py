"""Shared fixtures: every test starts from, and leaves behind, an un-instrumented hilt.

The autouse fixture undoes whatever a test did to hilt's process-wide state: it calls
``hilt.uninstrument()``, unregisters audit callbacks, removes (and closes) handlers a test left on the
``hilt`` logger, restores that logger's level/propagate/disabled (and ``hilt.internal``'s), resets
``hilt.config.settings``, the context variables and the ``hilt.internal`` repeat counts.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import hilt
import hilt._internal
import hilt.audit
import hilt.context
from hilt import _recorder
from hilt.config import settings

REPO_ROOT = Path(hilt.__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    # pyproject.toml sets `timeout` for pytest-timeout; where that plugin is not installed the unknown
    # option would be a config warning, which `filterwarnings = error` turns into a failed run.
    if importlib.util.find_spec("pytest_timeout") is None:
        parser.addini("timeout", "per-test timeout in seconds (read by pytest-timeout when installed)", default="0")


def _clear_internal_counts() -> None:
    with hilt._internal._lock:
        hilt._internal._counts.clear()


def _snapshot(logger: logging.Logger) -> tuple[list[logging.Handler], int, bool, bool]:
    return list(logger.handlers), logger.level, logger.propagate, logger.disabled


def _restore(logger: logging.Logger, saved: tuple[list[logging.Handler], int, bool, bool]) -> None:
    handlers, level, propagate, disabled = saved
    for handler in list(logger.handlers):
        # pytest (>= 8.4) attaches its own capture handlers to non-propagating loggers per test phase.
        if handler not in handlers and not type(handler).__module__.startswith("_pytest"):
            logger.removeHandler(handler)
            try:
                handler.flush()
                handler.close()
            except Exception:  # a test's broken handler must not fail the next test
                pass
    for handler in handlers:
        if handler not in logger.handlers:
            logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = propagate
    logger.disabled = disabled


@pytest.fixture(autouse=True)
def _hilt_clean_state() -> Iterator[None]:
    """Reset hilt's process-wide state before and after every test."""
    hilt_logger = logging.getLogger("hilt")
    internal_logger = logging.getLogger("hilt.internal")
    saved_hilt = _snapshot(hilt_logger)
    saved_internal = _snapshot(internal_logger)
    _clear_internal_counts()
    _recorder._starved = False  # a busy test before must not leave its tasks to this test's caller
    yield
    hilt.uninstrument()
    for fn in hilt.audit.registered_callbacks():
        hilt.unregister_audit_callback(fn)
    hilt.audit.wait_for_callbacks()
    _restore(hilt_logger, saved_hilt)
    _restore(internal_logger, saved_internal)
    settings.reset()
    # A plain `get_context().use_session(s)` (no `with`) sets the override for the rest of the thread.
    hilt.context._session_override.set(None)
    hilt.context._conversation.set(None)
    hilt.context._cost_scopes.set(())
    _clear_internal_counts()


@pytest.fixture
def tmp_log(tmp_path: Path) -> Path:
    """A fresh JSONL path (not yet created) in a folder that does not exist yet."""
    return tmp_path / "logs" / "hilt.jsonl"


def _read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    hilt.flush()  # calls are recorded in the background: finish them, as a reader in this process must
    data = Path(path).read_bytes()
    if not data:
        return []
    assert data.endswith(b"\n"), f"{path}: last line is not terminated"
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


@pytest.fixture
def read_jsonl() -> Callable[[str | os.PathLike[str]], list[dict[str, Any]]]:
    """``read_jsonl(path)``: the parsed lines of a file hilt wrote (every line must be complete JSON)."""
    return _read_jsonl


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for ``subprocess`` children running ``sys.executable -c ...`` against this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONIOENCODING"] = "utf-8"
    env.pop("HILT_AUDIT", None)
    return env



@pytest.fixture
def internal_reports(caplog: pytest.LogCaptureFixture) -> Callable[[], list[logging.LogRecord]]:
    """``internal_reports()``: the distinct records logged on ``hilt.internal`` so far in the test.

    ``hilt.internal`` forwards to the root handlers, and recent pytest also attaches caplog's handler to
    non-propagating loggers directly, so caplog may hold one record twice; this counts each once.
    """

    def collect() -> list[logging.LogRecord]:
        hilt.flush()  # failures of calls recorded in the background are reported once they are written
        seen: dict[int, logging.LogRecord] = {}
        for record in caplog.records:
            if record.name == "hilt.internal":
                seen.setdefault(id(record), record)
        return list(seen.values())

    return collect


class RecordList(logging.Handler):
    """A real handler that keeps every record it receives (for asserting what reached a logger)."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def root_records() -> Iterator[list[logging.LogRecord]]:
    """The records that reach a handler on the root logger during the test."""
    handler = RecordList()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)


@pytest.fixture
def hilt_records() -> Iterator[list[logging.LogRecord]]:
    """The records that reach a handler on the 'hilt' logger during the test."""
    handler = RecordList()
    logger = logging.getLogger("hilt")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)

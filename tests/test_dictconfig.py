"""logging.config.dictConfig from YAML: hilt's handlers behind a QueueHandler, with instrument(providers=[])."""

from __future__ import annotations

import copy
import json
import logging
import logging.config
import logging.handlers
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import hilt
from hilt import Event

yaml = pytest.importorskip("yaml")

DOCS_YAML = Path(__file__).resolve().parent.parent / "docs" / "logging.yaml"
PREFIX = "[HILT_AUDIT] "

# What docs/logging.yaml shows: hilt's handlers fed by a QueueHandler's listener thread (Python 3.12+ form).
CONFIG_YAML = """
version: 1
disable_existing_loggers: false
handlers:
  hilt_file:
    class: hilt.HiltJSONLHandler
    filename: "{filename}"
    max_bytes: 10000000
    backup_count: 5
  hilt_errors:
    class: hilt.HiltJSONLHandler
    filename: "{errors_filename}"
    level: WARNING
  hilt_audit:
    class: hilt.HiltAuditHandler
  hilt_queue:
    class: logging.handlers.QueueHandler
    handlers: [hilt_file, hilt_errors, hilt_audit]
    respect_handler_level: true
loggers:
  hilt:
    level: INFO
    handlers: [hilt_queue]
    propagate: false
"""


def _queue_handler_factory(handlers: list[logging.Handler], respect_handler_level: bool = False) -> logging.Handler:
    """What Python 3.12's dictConfig builds for a QueueHandler with ``handlers:``, for older Pythons."""
    targets = [handlers[i] for i in range(len(handlers))]  # indexing resolves dictConfig's cfg:// references
    events_queue: queue.Queue = queue.Queue()
    handler = logging.handlers.QueueHandler(events_queue)
    handler.listener = logging.handlers.QueueListener(  # type: ignore[attr-defined]
        events_queue, *targets, respect_handler_level=respect_handler_level
    )
    return handler


def for_this_python(config: dict[str, Any]) -> dict[str, Any]:
    """Before 3.12, dictConfig has no ``handlers:`` key for QueueHandler: build the same thing with a factory."""
    if sys.version_info >= (3, 12):
        return config
    config = copy.deepcopy(config)
    for spec in config.get("handlers", {}).values():
        if spec.get("class") == "logging.handlers.QueueHandler" and "handlers" in spec:
            del spec["class"]
            spec["()"] = _queue_handler_factory
            spec["handlers"] = [f"cfg://handlers.{name}" for name in spec["handlers"]]
    return config


def queue_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger("hilt").handlers if isinstance(h, logging.handlers.QueueHandler)]


@pytest.fixture
def restore_logging():
    """Undo what dictConfig did to the root logger and any other logger (handlers, levels, disabled flags)."""
    manager = logging.root.manager
    saved = {
        name: (list(lg.handlers), lg.level, lg.propagate, lg.disabled)
        for name, lg in list(manager.loggerDict.items()) if isinstance(lg, logging.Logger)
    }
    root = (list(logging.root.handlers), logging.root.level)
    started: list[logging.handlers.QueueListener] = []
    yield started
    for listener in started:
        if listener._thread is not None:  # type: ignore[attr-defined]
            listener.stop()
    for name, lg in list(manager.loggerDict.items()):
        if not isinstance(lg, logging.Logger) or name not in saved or name.startswith("hilt"):
            continue  # the conftest fixture restores the hilt loggers
        handlers, level, propagate, disabled = saved[name]
        for h in list(lg.handlers):
            if h not in handlers and not type(h).__module__.startswith("_pytest"):
                lg.removeHandler(h)
        lg.setLevel(level)
        lg.propagate, lg.disabled = propagate, disabled
    for h in list(logging.root.handlers):
        if h not in root[0] and not type(h).__module__.startswith("_pytest"):
            logging.root.removeHandler(h)
            h.close()
    for h in root[0]:
        if h not in logging.root.handlers:
            logging.root.addHandler(h)
    logging.root.setLevel(root[1])


def start_listeners(started: list) -> None:
    for handler in queue_handlers():
        listener = getattr(handler, "listener", None)
        if listener is not None and listener._thread is None:
            listener.start()
            started.append(listener)


def stop_listeners(started: list) -> None:
    for listener in started:
        if listener._thread is not None:
            listener.stop()


def emit_sample(thread_hop: bool) -> list[Event]:
    """Emit a prompt, a completion and an error event inside conversation(user_id='u1'), optionally from a thread."""
    events: list[Event] = []

    def work() -> None:
        with hilt.conversation(user_id="u1", tenant="acme"):
            events.append(Event(action="prompt", content={"text": "hi"}, extensions={"call_id": "k"}))
            events.append(Event(action="completion", content={"text": "yo"}, metrics={"tokens": {"total": 2}, "cost_usd": 0.01},
                                extensions={"call_id": "k", "status_code": 200}))
            events.append(Event(action="system", extensions={"call_id": "k2", "status_code": 429, "error": {"type": "RateLimitError"}}))
            for event in events:
                hilt.emit(event)

    if thread_hop:
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    else:
        work()
    return events


def test_dictconfig_yaml_with_queue_handler(tmp_path, capsys, restore_logging, read_jsonl):
    """dictConfig from YAML (JSONL + error-only JSONL + audit behind a QueueHandler) writes every line with its conversation tags."""
    filename, errors_filename = tmp_path / "logs" / "hilt.jsonl", tmp_path / "logs" / "errors.jsonl"
    text = CONFIG_YAML.replace("{filename}", str(filename)).replace("{errors_filename}", str(errors_filename))
    logging.config.dictConfig(for_this_python(yaml.safe_load(text)))
    start_listeners(restore_logging)
    assert len(queue_handlers()) == 1
    session = hilt.instrument(providers=[])
    assert session.path is None
    events = emit_sample(thread_hop=False)
    stop_listeners(restore_logging)

    lines = read_jsonl(filename)
    assert lines == [e.to_dict() for e in events]
    for line in lines:
        assert line["extensions"]["user_id"] == "u1" and line["extensions"]["tenant"] == "acme"
    assert [line["event_id"] for line in read_jsonl(errors_filename)] == [events[2].event_id]
    audit = [json.loads(line[len(PREFIX):]) for line in capsys.readouterr().out.splitlines()]
    assert [a["event_type"] for a in audit] == ["llm_call_started", "llm_call_completed", "llm_call_error"]
    assert [a["details"] for a in audit] == lines


def test_dictconfig_handlers_take_documented_options(tmp_path, restore_logging, read_jsonl):
    """HiltJSONLHandler options (fsync, max_bytes, backup_count, delay, mode, {date}) are accepted from dictConfig."""
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "daily": {
                "class": "hilt.HiltJSONLHandler", "filename": str(tmp_path / "app-{date}.jsonl"),
                "fsync": True, "max_bytes": 100000, "backup_count": 2, "delay": True, "mode": "a",
            }
        },
        "loggers": {"hilt": {"level": "INFO", "handlers": ["daily"]}},
    }
    logging.config.dictConfig(config)
    (handler,) = logging.getLogger("hilt").handlers[-1:]
    assert isinstance(handler, hilt.HiltJSONLHandler)
    assert (handler.fsync, handler.max_bytes, handler.backup_count) == (True, 100000, 2)
    event = Event(action="feedback", content={"text": "daily"})
    hilt.emit(event)
    (written,) = tmp_path.glob("app-*.jsonl")
    assert read_jsonl(written) == [event.to_dict()]


def test_dictconfig_bad_option_names_argument(tmp_path, restore_logging):
    """A bad handler option in dictConfig fails configuration with the HILTError naming the argument as cause."""
    config = {
        "version": 1,
        "handlers": {"bad": {"class": "hilt.HiltJSONLHandler", "filename": str(tmp_path), "max_bytes": 10}},
        "loggers": {"hilt": {"handlers": ["bad"]}},
        "disable_existing_loggers": False,
    }
    with pytest.raises(ValueError, match="bad") as info:
        logging.config.dictConfig(config)
    assert isinstance(info.value.__cause__, hilt.HILTError)
    assert str(info.value.__cause__).startswith("backup_count:")


def _jsonl_handler_specs(config: dict[str, Any]) -> list[dict[str, Any]]:
    specs = []
    for spec in config.get("handlers", {}).values():
        target = spec.get("class") or spec.get("()")
        if target in ("hilt.HiltJSONLHandler", "hilt.handlers.HiltJSONLHandler", "hilt.handlers.jsonl.HiltJSONLHandler"):
            specs.append(spec)
    return specs


@pytest.mark.skipif(not DOCS_YAML.exists(), reason="docs/logging.yaml not written yet")
def test_docs_logging_yaml_works(tmp_path, capsys, restore_logging):
    """docs/logging.yaml, loaded as documented with dictConfig + instrument(providers=[]), writes tagged lines across a QueueHandler hop."""
    config = yaml.safe_load(DOCS_YAML.read_text("utf-8"))
    specs = _jsonl_handler_specs(config)
    assert specs, "docs/logging.yaml should configure a hilt.HiltJSONLHandler"
    for i, spec in enumerate(specs):
        spec["filename"] = str(tmp_path / f"{i}" / Path(str(spec.get("filename", "hilt.jsonl"))).name)
    logging.config.dictConfig(for_this_python(config))
    start_listeners(restore_logging)
    hilt.instrument(providers=[])
    events = emit_sample(thread_hop=True)
    stop_listeners(restore_logging)
    for handler in logging.getLogger("hilt").handlers:
        handler.flush()

    written = sorted(tmp_path.rglob("*.jsonl"))
    assert written, "no JSONL file was written"
    all_lines = [json.loads(raw) for path in written for raw in path.read_bytes().splitlines()]
    by_id = {line["event_id"]: line for line in all_lines}
    assert set(by_id) == {e.event_id for e in events}
    for event in events:
        assert by_id[event.event_id] == event.to_dict()
        assert by_id[event.event_id]["extensions"]["user_id"] == "u1"
    audit = [line for line in capsys.readouterr().out.splitlines() if line.startswith(PREFIX)]
    if any("HiltAuditHandler" in str(spec.get("class") or spec.get("()")) for spec in config["handlers"].values()):
        parsed = [json.loads(line[len(PREFIX):]) for line in audit]
        assert {p["details"]["event_id"] for p in parsed} == set(by_id)


FAILED_HANDLER_SCRIPT = """
import logging.config, sys, hilt
try:
    hilt.HiltJSONLHandler(sys.argv[1], max_bytes=10)
except hilt.HILTError as exc:
    kept = exc  # keeps the half-built handler alive, as a traceback in a bug report would
logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
print("configured")
"""


def test_failed_handler_construction_does_not_break_dictconfig_or_exit(tmp_path, subprocess_env):
    """A HiltJSONLHandler whose construction raised does not make a later dictConfig() or logging.shutdown() at exit fail."""
    result = subprocess.run(
        [sys.executable, "-c", FAILED_HANDLER_SCRIPT, str(tmp_path / "app.jsonl")],
        env=subprocess_env, capture_output=True, timeout=60, check=False,
    )
    assert result.stderr.decode() == ""
    assert result.returncode == 0
    assert result.stdout.decode().splitlines() == ["configured"]

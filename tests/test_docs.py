"""The documentation runs as written: every ```python block, and docs/logging.yaml through dictConfig.

Each ```python block of README.md and docs/*.md is run as a script in a subprocess, in an empty
folder that holds a copy of docs/logging.yaml, with ``OPENAI_BASE_URL`` pointing at a local
``hilt.testing.OpenAIServer`` and ``OPENAI_API_KEY=test``: ``openai.OpenAI()`` in an example
talks to that server with no change to the example. A block that is not meant to run uses
another fence (```py-fragment, ```text, ```bash, ```json, ```yaml).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LOGGING_YAML = ROOT / "docs" / "logging.yaml"
TIMEOUT = 60

#: Fence labels the docs may use; only ``python`` blocks are run.
FENCE_LABELS = {"python", "py-fragment", "text", "bash", "json", "yaml"}
#: Import name -> the PyPI package that provides it, for skip reasons.
PIP_NAMES = {
    "openai": "openai",
    "opentelemetry": "opentelemetry-sdk",
    "prometheus_client": "prometheus-client",
    "sentry_sdk": "sentry-sdk",
    "yaml": "pyyaml",
}


@dataclass(frozen=True)
class Block:
    """One fenced code block of a documentation file."""

    path: Path
    line: int  # line number of the opening fence
    label: str
    code: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _blocks(path: Path) -> Iterator[Block]:
    """Every fenced block of ``path``, in order."""
    label: str | None = None
    start = 0
    body: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if label is None:
            if line.startswith("```"):
                label, start, body = line[3:].strip(), number, []
        elif line.strip() == "```":
            yield Block(path, start, label, "\n".join(body) + "\n")
            label = None
        else:
            body.append(line)
    if label is not None:
        raise AssertionError(f"{path.relative_to(ROOT)}:{start}: code fence never closed")


ALL_BLOCKS = [block for path in DOC_FILES if path.exists() for block in _blocks(path)]
PYTHON_BLOCKS = [block for block in ALL_BLOCKS if block.label == "python"]


def _imported_modules(code: str) -> set[str]:
    """Top-level names of the modules a block imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _missing_packages(modules: set[str]) -> list[str]:
    """The PyPI names of imported third-party modules that are not installed."""
    missing = []
    for module in sorted(modules):
        if module in sys.stdlib_module_names or module == "hilt":
            continue
        if importlib.util.find_spec(module) is None:
            missing.append(PIP_NAMES.get(module, module))
    return missing


def _subprocess_env(base_url: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["OPENAI_API_KEY"] = "test"
    for name in ("HILT_AUDIT", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_BASE_URL"):
        env.pop(name, None)
    if base_url is not None:
        env["OPENAI_BASE_URL"] = base_url
    return env


def _run(script: Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT,
    )


def _describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"


@pytest.fixture(scope="module")
def openai_server() -> Iterator[object]:
    """A local OpenAI-compatible server for the examples, or the reason there is none."""
    try:
        from hilt.testing import OpenAIServer
    except Exception as exc:  # the module is optional while it is being written
        yield f"hilt.testing.OpenAIServer is not importable ({type(exc).__name__}: {exc})"
        return
    with OpenAIServer() as server:
        yield server


def _skip_reason_for_openai(server: object) -> str | None:
    if isinstance(server, str):
        return server
    if importlib.util.find_spec("hilt.providers.openai") is None:
        return "hilt.providers.openai does not exist yet, so OpenAI calls are not recorded"
    return None


def test_doc_files_exist() -> None:
    """README.md, the docs pages and docs/logging.yaml are all present."""
    names = {path.name for path in DOC_FILES if path.exists()}
    expected = {"README.md", "configuration.md", "schema.md", "audit.md", "observability.md"}
    assert expected <= names, f"missing: {sorted(expected - names)}"
    assert LOGGING_YAML.exists()


def test_every_fence_is_labelled() -> None:
    """Every code fence names its language, so no example escapes the runner by accident."""
    bad = [f"{block.name}: {block.label or '(no label)'}" for block in ALL_BLOCKS if block.label not in FENCE_LABELS]
    assert not bad, f"use one of {sorted(FENCE_LABELS)}: {bad}"


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[block.name for block in PYTHON_BLOCKS])
def test_python_block_runs(block: Block, openai_server: object, tmp_path: Path) -> None:
    """A ```python block of the docs runs as a script and exits 0 without a traceback."""
    modules = _imported_modules(block.code)
    missing = _missing_packages(modules)
    if missing:
        pytest.skip(f"{block.name} needs: pip install {' '.join(missing)}")
    base_url = None
    if "openai" in modules:
        reason = _skip_reason_for_openai(openai_server)
        if reason:
            pytest.skip(f"{block.name} calls OpenAI: {reason}")
        base_url = openai_server.base_url  # type: ignore[attr-defined]
    shutil.copy(LOGGING_YAML, tmp_path / "logging.yaml")
    script = tmp_path / "example.py"
    script.write_text(block.code, encoding="utf-8")
    result = _run(script, tmp_path, _subprocess_env(base_url))
    assert result.returncode == 0, f"{block.name} failed: {_describe(result)}"
    assert "Traceback" not in result.stderr, f"{block.name} logged a traceback: {_describe(result)}"


def test_configuration_page_shows_logging_yaml() -> None:
    """docs/configuration.md shows docs/logging.yaml word for word."""
    shown = [block.code for block in ALL_BLOCKS if block.path.name == "configuration.md" and block.label == "yaml"]
    assert LOGGING_YAML.read_text(encoding="utf-8") in shown


_YAML_CHECK = textwrap.dedent(
    """
    import logging
    import logging.config
    import sys

    import yaml

    root_lines = []


    class Keep(logging.Handler):
        def emit(self, record):
            root_lines.append(record.getMessage())


    with open("logging.yaml", encoding="utf-8") as f:
        logging.config.dictConfig(yaml.safe_load(f))
    logging.getLogger().addHandler(Keep())

    import hilt

    hilt.instrument(providers=[])  # patch nothing: the handlers come from logging.yaml
    hilt.audit_log("data_export", {"rows": 3}, user="alice")
    hilt.emit(hilt.Event(session_id="s1", actor={"type": "tool", "id": "search"}, action="retrieval",
                         content={"text": "3 documents"}))
    logging.getLogger("hilt.internal").warning("hilt: internal diagnostics reach stderr")
    logging.getLogger("myapp").info("application log line")
    hilt.uninstrument()
    assert root_lines == ["application log line"], root_lines
    """
)


def test_logging_yaml_configures_hilt(tmp_path: Path) -> None:
    """docs/logging.yaml through yaml.safe_load + dictConfig writes private JSON lines, audit lines and no root copies."""
    if importlib.util.find_spec("yaml") is None:
        pytest.skip("needs: pip install pyyaml")
    shutil.copy(LOGGING_YAML, tmp_path / "logging.yaml")
    script = tmp_path / "check_yaml.py"
    script.write_text(_YAML_CHECK, encoding="utf-8")
    result = _run(script, tmp_path, _subprocess_env(None))
    assert result.returncode == 0, _describe(result)
    assert "Traceback" not in result.stderr, _describe(result)

    day = datetime.now(timezone.utc).date().isoformat()
    log_file = tmp_path / "logs" / f"hilt-{day}.jsonl"
    assert log_file.exists(), f"no {log_file.name} in {sorted(p.name for p in tmp_path.rglob('*'))}"
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(log_file.parent.stat().st_mode) == 0o700
    events = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines()]
    assert [event["action"] for event in events] == ["audit", "retrieval"]
    assert events[0]["extensions"] == {"audit_event_type": "data_export", "details": {"rows": 3, "user": "alice"}}
    assert events[1]["session_id"] == "s1"
    assert events[1]["actor"] == {"type": "tool", "id": "search"}
    assert events[1]["content"] == {"text": "3 documents"}
    assert all(event["hilt_version"] for event in events)

    audit = [line for line in result.stdout.splitlines() if line.startswith("[HILT_AUDIT] ")]
    assert [json.loads(line[len("[HILT_AUDIT] "):])["event_type"] for line in audit] == ["data_export", "event"]
    assert "internal diagnostics reach stderr" in result.stderr
    assert "3 documents" not in result.stderr, "events leaked to the root logger's handlers"


def _queue_yaml() -> str:
    """The Python 3.12+ QueueHandler configuration shown in docs/configuration.md."""
    for block in ALL_BLOCKS:
        if block.label == "yaml" and "logging.handlers.QueueHandler" in block.code:
            return block.code
    raise AssertionError("docs/configuration.md shows no QueueHandler YAML")


_QUEUE_CHECK = textwrap.dedent(
    """
    import atexit
    import logging
    import logging.config

    import yaml

    import hilt

    with open("logging-queue.yaml", encoding="utf-8") as f:
        logging.config.dictConfig(yaml.safe_load(f))
    listener = logging.getHandlerByName("hilt_queue").listener
    listener.start()
    atexit.register(listener.stop)

    hilt.instrument(providers=[])
    hilt.audit_log("data_export", rows=3)
    hilt.uninstrument()
    """
)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="dictConfig configures QueueHandler listeners from Python 3.12")
def test_queue_yaml_writes_lines(tmp_path: Path) -> None:
    """The Python 3.12+ QueueHandler YAML of docs/configuration.md writes the events off the caller's thread."""
    if importlib.util.find_spec("yaml") is None:
        pytest.skip("needs: pip install pyyaml")
    (tmp_path / "logging-queue.yaml").write_text(_queue_yaml(), encoding="utf-8")
    script = tmp_path / "check_queue.py"
    script.write_text(_QUEUE_CHECK, encoding="utf-8")
    result = _run(script, tmp_path, _subprocess_env(None))
    assert result.returncode == 0, _describe(result)
    day = datetime.now(timezone.utc).date().isoformat()
    lines = (tmp_path / "logs" / f"hilt-{day}.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["extensions"]["audit_event_type"] for line in lines] == ["data_export"]

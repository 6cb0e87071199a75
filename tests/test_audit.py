"""Audit stdout: '[HILT_AUDIT] {...}' lines, one per event, off by default, parseable line by line."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap

import pytest

import hilt
from hilt import Event, HiltAuditHandler

PREFIX = "[HILT_AUDIT] "
FORGED = '\n[HILT_AUDIT] {"timestamp": "2020-01-01T00:00:00Z", "event_type": "forged", "details": {}}'
EVIL_TEXT = "hello" + FORGED + "\u2028[HILT_AUDIT] {\"forged\": 2}\u2029\x85\r\n[HILT_AUDIT] x é 😀"

# Emits one event of each audit type; the prompt text tries to forge extra [HILT_AUDIT] lines.
SCRIPT = textwrap.dedent(
    """
    import sys, hilt
    from hilt import Event
    audit = {"on": True, "env": None}[sys.argv[2]]
    hilt.instrument(filepath=sys.argv[1], providers=[], audit=audit)
    evil = sys.argv[3]
    hilt.emit(Event(session_id="c1", actor={"type": "human", "id": "user"}, action="prompt",
                    content={"text": evil}, extensions={"call_id": "k1", "provider": "openai"}))
    hilt.emit(Event(session_id="c1", actor={"type": "agent", "id": "m"}, action="completion",
                    content={"text": "ok"}, metrics={"tokens": {"prompt": 3, "completion": 1, "total": 4},
                    "cost_usd": 0.5, "latency_ms": 12.5}, extensions={"call_id": "k1", "status_code": 200}))
    hilt.emit(Event(session_id="c2", actor={"type": "system", "id": "openai"}, action="system",
                    extensions={"call_id": "k2", "status_code": 429,
                                "error": {"type": "RateLimitError", "code": None, "message": "slow down"}}))
    hilt.emit(Event(session_id="conv-1", actor={"type": "tool", "id": "vector-db"}, action="retrieval",
                    content={"text": "3 documents"}))
    hilt.audit_log("data_export", {"rows": 3})
    print("plain app output")
    """
)
EXPECTED_TYPES = ["llm_call_started", "llm_call_completed", "llm_call_error", "event", "data_export"]


def audit_lines(output: str) -> list[dict]:
    """Parse stdout as [HILT_AUDIT] lines, splitting on every line break str.splitlines() knows."""
    parsed = []
    for line in output.splitlines():
        if line.startswith(PREFIX):
            parsed.append(json.loads(line[len(PREFIX):]))
    return parsed


def run_script(tmp_path, env, audit_mode: str) -> tuple[str, list[dict]]:
    log = tmp_path / "events.jsonl"
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(log), audit_mode, EVIL_TEXT],
        env=env, capture_output=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b"", result.stderr.decode()
    lines = [json.loads(raw) for raw in log.read_bytes().splitlines()]
    return result.stdout.decode("utf-8"), lines


def check_audit_output(stdout: str, lines: list[dict]) -> None:
    physical = stdout.splitlines()
    assert physical[-1] == "plain app output"
    assert len(physical) == len(EXPECTED_TYPES) + 1  # no forged or split line
    assert all(line.startswith(PREFIX) for line in physical[:-1])
    records = [json.loads(line[len(PREFIX):]) for line in physical[:-1]]
    assert [r["event_type"] for r in records] == EXPECTED_TYPES
    for record, line in zip(records, lines):
        assert list(record) == ["timestamp", "event_type", "details"]
        assert record["details"] == line
        assert record["timestamp"] == line["timestamp"] and record["timestamp"].endswith("Z")
    assert records[0]["details"]["content"]["text"] == EVIL_TEXT
    assert records[1]["details"]["metrics"]["cost_usd"] == 0.5
    assert records[2]["details"]["extensions"]["error"]["type"] == "RateLimitError"
    assert records[4]["details"]["extensions"]["details"] == {"rows": 3}


def test_subprocess_audit_true_lines_parse(tmp_path, subprocess_env):
    """instrument(audit=True) in a child process prints one parseable [HILT_AUDIT] line per event, details == JSONL line."""
    stdout, lines = run_script(tmp_path, subprocess_env, "on")
    assert len(lines) == len(EXPECTED_TYPES)
    check_audit_output(stdout, lines)


def test_subprocess_hilt_audit_env_lines_parse(tmp_path, subprocess_env):
    """HILT_AUDIT=1 in the environment turns audit lines on with audit left unset."""
    stdout, lines = run_script(tmp_path, {**subprocess_env, "HILT_AUDIT": "1"}, "env")
    check_audit_output(stdout, lines)


def test_subprocess_audit_off_by_default(tmp_path, subprocess_env):
    """Without audit=True or HILT_AUDIT, stdout holds only the application's own output."""
    stdout, lines = run_script(tmp_path, subprocess_env, "env")
    assert stdout.splitlines() == ["plain app output"]
    assert len(lines) == len(EXPECTED_TYPES)


def test_audit_line_cannot_be_forged_by_content(capsys, tmp_log):
    """Prompt text holding '\\n[HILT_AUDIT] {...}', U+2028, U+2029, U+0085 and CR stays inside one audit line."""
    hilt.instrument(filepath=tmp_log, providers=[], audit=True)
    hilt.emit(Event(action="prompt", content={"text": EVIL_TEXT}, extensions={"call_id": "x"}))
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    (physical,) = out.splitlines()
    record = json.loads(physical[len(PREFIX):])
    assert record["event_type"] == "llm_call_started"
    assert record["details"]["content"]["text"] == EVIL_TEXT
    for raw in ("\u2028", "\u2029", "\x85", "\r"):
        assert raw not in out


@pytest.mark.parametrize(("env", "audit", "expected"), [("1", None, 1), ("true", None, 1), ("0", None, 0), ("1", False, 0), (None, True, 1), (None, None, 0)])
def test_audit_switch(monkeypatch, capsys, tmp_log, env, audit, expected):
    """audit=True/False wins; audit=None follows HILT_AUDIT (1/true on, else off); off by default."""
    if env is None:
        monkeypatch.delenv("HILT_AUDIT", raising=False)
    else:
        monkeypatch.setenv("HILT_AUDIT", env)
    hilt.instrument(filepath=tmp_log, providers=[], audit=audit)
    hilt.emit(Event(action="feedback"))
    assert capsys.readouterr().out.count(PREFIX) == expected


def test_audit_handler_with_explicit_stream_and_event_types():
    """HiltAuditHandler(stream) writes one line per event with the documented event_type for each kind."""
    stream = io.StringIO()
    handler = HiltAuditHandler(stream)
    logging.getLogger("hilt").addHandler(handler)
    events = [
        Event(action="prompt", extensions={"call_id": "a"}),
        Event(action="completion", extensions={"call_id": "a"}),
        Event(action="system", extensions={"call_id": "b", "error": {"type": "APIConnectionError"}}),
        Event(action="system", extensions={"call_id": "c"}),
        Event(action="prompt"),
        Event(action="tool_call", extensions={"call_id": "d"}),
    ]
    for event in events:
        hilt.emit(event)
    audit_event = hilt.audit_log("consent_given", user="u1")
    records = audit_lines(stream.getvalue())
    assert [r["event_type"] for r in records] == [
        "llm_call_started", "llm_call_completed", "llm_call_error", "event", "event", "event", "consent_given",
    ]
    assert [r["details"] for r in records] == [e.to_dict() for e in events] + [audit_event.to_dict()]


def test_audit_handler_follows_redirected_stdout(tmp_log):
    """The default audit handler writes to the current sys.stdout, so a later redirection captures the lines."""
    hilt.instrument(filepath=tmp_log, providers=[], audit=True)
    buffer = io.StringIO()
    original = sys.stdout
    sys.stdout = buffer
    try:
        hilt.emit(Event(action="feedback", content={"text": "redirected"}))
    finally:
        sys.stdout = original
    (record,) = audit_lines(buffer.getvalue())
    assert record["details"]["content"]["text"] == "redirected"


def test_audit_handler_write_failure_never_raises(internal_reports):
    """A closed stdout stream makes the audit handler report on hilt.internal, never raise."""
    stream = io.StringIO()
    logging.getLogger("hilt").addHandler(HiltAuditHandler(stream))
    stream.close()
    hilt.emit(Event(action="feedback"))
    hilt.emit(Event(action="feedback"))
    reports = internal_reports()
    assert len(reports) == 1 and "HiltAuditHandler.emit" in reports[0].getMessage()

"""The log-reading commands: ``hilt stats``, ``hilt verify``, ``hilt tail`` (in-process and one subprocess)."""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hilt.cli import main
from hilt.demo import run_demo

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's real events, recorded once for the module."""
    path = tmp_path_factory.mktemp("cli") / "demo.jsonl"
    run_demo(path)
    return path


@pytest.fixture
def demo(demo_log: Path, tmp_path: Path) -> Path:
    """A private copy of the demo log a test may modify."""
    copy = tmp_path / "demo.jsonl"
    shutil.copy(demo_log, copy)
    return copy


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _closing(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["action"] == "completion" or (e["action"] == "system" and "error" in e["extensions"])]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _stats(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    status, out, err = _run(capsys, "stats", "--json", *argv)
    assert status == 0, err
    return json.loads(out)


def test_stats_json_matches_independent_sums(demo_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Calls, errors, token and cost sums equal those computed straight from the JSON lines."""
    events = _events(demo_log)
    closing = _closing(events)
    result = _stats(capsys, str(demo_log))
    assert set(result) >= {"calls", "errors", "tokens", "cost_usd", "latency_ms", "ttft_ms"}
    assert "groups" not in result
    assert result["calls"] == 8 == len({e["extensions"]["call_id"] for e in events if e["action"] == "prompt"})
    assert result["errors"] == 1 and result["errors_by_status"] == {"429": 1}
    for key in ("prompt", "completion", "total", "cached", "reasoning"):
        assert result["tokens"][key] == sum((e["metrics"]["tokens"].get(key) or 0) for e in closing)
    assert result["tokens"]["total"] == 76
    assert math.isclose(result["cost_usd"], sum(e["metrics"]["cost_usd"] or 0 for e in closing), rel_tol=1e-9)
    latencies = sorted(e["metrics"]["latency_ms"] for e in closing)
    assert result["latency_ms"] == {"p50": latencies[3], "p95": latencies[7], "p99": latencies[7]}
    ttft = [e["metrics"]["ttft_ms"] for e in closing if "ttft_ms" in e["metrics"]]
    assert result["ttft_ms"] == {"p50": ttft[0], "p95": ttft[0], "p99": ttft[0]}


def test_stats_by_groups(demo_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--by model/user/status/conversation/day split the calls; group figures add up to the totals."""
    by_model = _stats(capsys, "--by", "model", str(demo_log))
    assert {k: g["calls"] for k, g in by_model["groups"].items()} == {"gpt-4o": 5, "gpt-4o-mini": 2, "text-embedding-3-small": 1}
    assert by_model["groups"]["gpt-4o"]["errors"] == 1
    assert sum(g["tokens"]["total"] for g in by_model["groups"].values()) == by_model["tokens"]["total"]
    by_user = _stats(capsys, "--by", "user", str(demo_log))
    assert {k: g["calls"] for k, g in by_user["groups"].items()} == {"user": 6, "alice": 2}
    by_status = _stats(capsys, "--by", "status", str(demo_log))
    assert {k: g["calls"] for k, g in by_status["groups"].items()} == {"200": 7, "429": 1}
    by_conv = _stats(capsys, "--by", "conversation", str(demo_log))
    assert len(by_conv["groups"]) == 7 and sum(g["calls"] for g in by_conv["groups"].values()) == 8
    day = _events(demo_log)[0]["timestamp"][:10]
    assert list(_stats(capsys, "--by", "day", str(demo_log))["groups"]) == [day]


def test_stats_text_table(demo_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json a readable table: the totals, then one row per group."""
    status, out, _ = _run(capsys, "stats", "--by", "model", str(demo_log))
    assert status == 0
    lines = out.splitlines()
    assert "calls       8" in lines and "errors      1   by status: 429: 1" in lines
    assert any(line.split()[:3] == ["gpt-4o", "5", "1"] for line in lines)


def test_stats_rotated_set_with_gzip(demo_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A glob over app.jsonl, app.jsonl.1 and app.jsonl.2.gz reads all three; calls triple."""
    data = demo_log.read_bytes()
    (tmp_path / "app.jsonl").write_bytes(data)
    (tmp_path / "app.jsonl.1").write_bytes(data)
    (tmp_path / "app.jsonl.2.gz").write_bytes(gzip.compress(data))
    result = _stats(capsys, str(tmp_path / "app.jsonl*"))
    assert result["files"] == 3 and result["calls"] == 24 and result["tokens"]["total"] == 3 * 76


def test_stats_orphan_prompt_and_manual_completion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A prompt with no answer still counts as a call; a manual completion with no call_id counts too."""
    log = tmp_path / "x.jsonl"
    log.write_text(
        '{"hilt_version":"1.0","event_id":"a","timestamp":"2025-01-01T00:00:00Z","action":"prompt","extensions":{"call_id":"c1","model":"m"}}\n'
        '{"hilt_version":"1.0","event_id":"b","timestamp":"2025-01-01T00:00:01Z","action":"completion",'
        '"metrics":{"tokens":{"prompt":12,"completion":2,"total":14},"cost_usd":3e-06},"extensions":{"status_code":200}}\n'
    )
    result = _stats(capsys, str(log))
    assert result["calls"] == 2 and result["tokens"]["total"] == 14 and result["cost_usd"] == 3e-06


def test_stats_subprocess_json(demo_log: Path) -> None:
    """`python -m hilt stats --json` prints one JSON object and exits 0."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "hilt", "stats", "--json", str(demo_log)],
                          capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["calls"] == 8 and result["errors"] == 1


@pytest.mark.parametrize("command", ["stats", "verify", "tail"])
def test_missing_file_and_directory(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing file or a directory: one clear line on stderr, exit 2, no traceback."""
    status, out, err = _run(capsys, command, str(tmp_path / "nope.jsonl"))
    assert status == 2 and out == ""
    assert err == f"hilt {command}: {tmp_path / 'nope.jsonl'}: no such file\n"
    status, _, err = _run(capsys, command, str(tmp_path))
    assert status == 2 and "is a directory" in err and "Traceback" not in err
    status, _, err = _run(capsys, command, str(tmp_path / "*.nothing"))
    assert status == 2 and "no file matches" in err


def test_empty_and_non_jsonl_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty file is a note (exit 0); a file that is not JSONL is an error (exit 1)."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    status, out, err = _run(capsys, "stats", "--json", str(empty))
    assert status == 0 and json.loads(out)["calls"] == 0 and "empty file" in err
    status, out, _ = _run(capsys, "verify", str(empty))
    assert status == 0 and out == "checked 0 events in 1 file: 0 problems\n"
    text = tmp_path / "notes.txt"
    text.write_text("hello\nworld\n")
    status, _, err = _run(capsys, "stats", str(text))
    assert status == 1 and f"{text}: not a hilt JSONL log" in err
    status, out, _ = _run(capsys, "verify", str(text))
    assert status == 1 and out.splitlines()[0].startswith(f"{text}:1: malformed line: not JSON")


def test_corrupt_gzip_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A truncated .gz file gives a message naming the file, not a traceback."""
    bad = tmp_path / "app.jsonl.1.gz"
    bad.write_bytes(gzip.compress(b'{"action":"prompt"}\n' * 100)[:30])
    status, _, err = _run(capsys, "stats", str(bad))
    assert status == 1 and err.startswith(f"hilt stats: {bad}: corrupt or truncated gzip file")


def test_mixed_schema_versions_noted(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Mixed hilt_version values are reported on stderr by stats and verify."""
    with demo.open("a") as f:
        f.write('{"hilt_version":"0.9","event_id":"old-1","timestamp":"2024-01-01T00:00:00Z","action":"feedback"}\n')
    status, _, err = _run(capsys, "stats", str(demo))
    assert status == 0 and "mixed schema versions: 0.9 (1 events), 1.0 (16 events)" in err
    status, _, err = _run(capsys, "verify", str(demo))
    assert status == 0 and "mixed schema versions" in err


def test_verify_clean_demo(demo_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo log is clean: only the summary line, exit 0."""
    status, out, _ = _run(capsys, "verify", str(demo_log))
    assert (status, out) == (0, "checked 16 events in 1 file: 0 problems\n")


def test_verify_reports_problems_with_path_line(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Torn, malformed and wrongly typed lines, duplicates, dangling reply_to, prompt-less completions."""
    events = _events(demo)
    lines = demo.read_text().splitlines(keepends=True)
    first_id = events[0]["event_id"]
    # drop the last prompt (line 15): its error event (now line 15) has no prompt any more
    del lines[14]
    lines.append(lines[0])  # line 16: duplicate of line 1
    lines.append("garbage\n")  # 17
    lines.append("[1, 2]\n")  # 18
    lines.append('{"hilt_version":"1.0","event_id":"f1","timestamp":"2025-01-31 09:14:03","action":"feedback",'
                 '"metrics":{"cost_usd":"0.1"},"extensions":{"reply_to":"missing-id"}}\n')  # 19
    lines.append('{"event_id":"t1","timestamp":"2025-01-31T09:14:03Z","action":"pro')  # 20, torn
    demo.write_text("".join(lines))
    status, out, _ = _run(capsys, "verify", str(demo))
    call_id = events[15]["extensions"]["call_id"]
    p = str(demo)
    assert status == 1
    assert out.splitlines() == [
        f"{p}:15: error event without a prompt: no prompt event has call_id {call_id}",
        f"{p}:16: duplicate event_id {first_id} (first at {p}:1)",
        f"{p}:17: malformed line: not JSON (unexpected character, expected a JSON value)",
        f"{p}:18: not a JSON object (a JSON list)",
        f"{p}:19: timestamp: expected UTC ISO 8601 with Z ('2025-01-31T09:14:03.512406Z'), got '2025-01-31 09:14:03'",
        f"{p}:19: metrics.cost_usd: expected a number or null, got '0.1'",
        f"{p}:19: reply_to missing-id points to no event",
        f"{p}:20: torn last line (no newline; a crash mid-write?)",
        "checked 18 events in 1 file: 8 problems",
    ]


def test_verify_links_across_files(demo_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A completion whose prompt is in an older rotated file is fine when both files are checked."""
    lines = demo_log.read_text().splitlines(keepends=True)
    (tmp_path / "app.jsonl.1").write_text("".join(lines[:1]))
    (tmp_path / "app.jsonl").write_text("".join(lines[1:]))
    status, out, _ = _run(capsys, "verify", str(tmp_path / "app.jsonl*"))
    assert (status, out) == (0, "checked 16 events in 2 files: 0 problems\n")
    status, out, _ = _run(capsys, "verify", str(tmp_path / "app.jsonl"))
    assert status == 1 and out.startswith(f"{tmp_path / 'app.jsonl'}:1: completion without a prompt")


def test_tail_readable_lines_and_filters(demo_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Readable lines (no colour off a TTY), -n, and the --model/--status/--action filters."""
    events = _events(demo_log)
    status, out, _ = _run(capsys, "tail", "-n", "3", str(demo_log))
    lines = out.splitlines()
    assert status == 0 and len(lines) == 3 and "\x1b[" not in out
    error = lines[-1]
    assert error.startswith(events[-1]["timestamp"][:19].replace("T", " "))
    assert error.split()[2:7] == [events[-1]["session_id"], "system:openai", "system", "gpt-4o", "-"]
    assert "429  Error code: 429 - Rate limit reached for gpt-4o" in error
    _, out, _ = _run(capsys, "tail", "-n", "100", "--model", "gpt-4o-mini", str(demo_log))
    assert len(out.splitlines()) == 4 and all("gpt-4o-mini" in line for line in out.splitlines())
    _, out, _ = _run(capsys, "tail", "--status", "4xx", str(demo_log))
    assert len(out.splitlines()) == 1 and " 429 " in out
    _, out, _ = _run(capsys, "tail", "-n", "100", "--action", "completion", "--json", str(demo_log))
    assert [json.loads(line) for line in out.splitlines()] == [e for e in events if e["action"] == "completion"]


def test_tail_colour_only_on_tty(demo_log: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """On a TTY lines are coloured (errors red); NO_COLOR turns colour off."""
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.delenv("NO_COLOR", raising=False)
    _, out, _ = _run(capsys, "tail", "-n", "1", str(demo_log))
    assert out.startswith("\x1b[31m") and out.endswith("\x1b[0m\n")
    monkeypatch.setenv("NO_COLOR", "1")
    _, out, _ = _run(capsys, "tail", "-n", "1", str(demo_log))
    assert "\x1b[" not in out


def test_tail_follow_appends_and_rotation(demo_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-f prints lines appended later, including a line written in two parts, and follows a rotation."""
    lines = demo_log.read_text().splitlines(keepends=True)
    log = tmp_path / "live.jsonl"
    log.write_text("".join(lines[:2]))

    def writer() -> None:
        time.sleep(0.3)
        with log.open("a") as f:
            f.write(lines[2][:40])
            f.flush()
            time.sleep(0.3)
            f.write(lines[2][40:])
        time.sleep(0.3)
        log.rename(tmp_path / "live.jsonl.1")  # rotation: a new file with a new inode
        log.write_text(lines[3])

    thread = threading.Thread(target=writer)
    thread.start()
    status, out, err = _run(capsys, "tail", "-f", "-n", "1", "--json", "--max-events", "3", "--timeout", "5", str(log))
    thread.join()
    assert status == 0, err
    assert out.splitlines() == [line.rstrip("\n") for line in lines[1:4]]


def test_tail_gzip_and_malformed_lines(demo_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """tail reads a .gz file; a malformed line is named on stderr and skipped; -f on gzip is refused."""
    gz = tmp_path / "app.jsonl.1.gz"
    gz.write_bytes(gzip.compress(demo_log.read_bytes() + b"garbage\n"))
    status, out, err = _run(capsys, "tail", "-n", "2", str(gz))
    assert status == 0 and len(out.splitlines()) == 2 and err == f"{gz}:17: malformed line skipped\n"
    status, _, err = _run(capsys, "tail", "-f", str(gz))
    assert status == 2 and "gzip file cannot grow" in err


def test_demo_and_version_still_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The existing subcommands keep working."""
    status, out, _ = _run(capsys, "version")
    assert status == 0 and out.startswith("hilt ")


def test_demo_command_writes_the_log_and_prints_its_stats(tmp_path, capsys):
    """`hilt demo --out FILE` records the demo calls (one 429) and prints the stats table for that file."""
    out = tmp_path / "demo.jsonl"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    calls = {line["extensions"]["call_id"] for line in lines}
    assert f"{len(calls)} LLM calls recorded as {len(lines)} events" in printed
    assert "errors      1   by status: 429: 1" in printed
    assert [line["extensions"]["status_code"] for line in lines if line["action"] == "system"] == [429]


class _Terminal(io.StringIO):
    """A stderr stand-in that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_stats_shows_a_progress_bar_only_on_a_terminal_for_large_input(tmp_path, monkeypatch):
    """A large input draws a progress bar on a terminal stderr (and clears it); figures are unchanged."""
    from hilt.commands import stats

    log = tmp_path / "big.jsonl"
    line = json.dumps({"hilt_version": "1.0", "event_id": "e", "action": "retrieval", "extensions": {}}) + "\n"
    log.write_text(line * 70_000)
    monkeypatch.setattr(stats.Progress, "MIN_BYTES", 1)
    terminal = _Terminal()
    shown, _ = stats.compute([str(log)], None, stats.Progress([str(log)], terminal))
    assert "hilt stats [" in terminal.getvalue() and "%" in terminal.getvalue()
    plain = io.StringIO()
    quiet, _ = stats.compute([str(log)], None, stats.Progress([str(log)], plain))
    assert plain.getvalue() == ""
    assert shown == quiet and shown["events"] == 70_000


def test_demo_live_without_a_key_explains_and_exits_2(tmp_path, capsys, monkeypatch):
    """`hilt demo --live` with no OPENAI_API_KEY says what to set, exits 2 and writes nothing."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "live.jsonl"
    assert main(["demo", "--live", "--out", str(out)]) == 2
    assert "OPENAI_API_KEY" in capsys.readouterr().err
    assert not out.exists()

"""Crash safety: a writer killed with SIGKILL at random moments leaves a log that reads back.

A child process writes events at full speed through ``hilt.instrument(filepath=...)`` + ``hilt.emit``
and prints each event id once ``emit`` has returned (acknowledged). It is killed with SIGKILL 20-150 ms
after it says it started. After each kill: every line but the last is complete JSON, at most the last
is torn, ``Session.read()`` yields every intact event and reports a torn tail instead of failing,
``hilt verify`` names a torn tail as ``path:line`` and exits non-zero only then, and every acknowledged
id is in the file (with ``fsync=True`` and without: a completed ``write(2)`` survives the process).

A SIGKILL rarely lands inside a ``write(2)``, so each killed file is also checked a second time with
its tail cut at a random byte (what a crash mid-write leaves), to exercise the torn-line path every run.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import hilt
import hilt.cli

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and fork semantics are POSIX")

RUNS = 50  # half of them with fsync=True
SEED = int(os.environ.get("HILT_CRASH_SEED", "20261124"))

# Writes events as fast as it can; every 64th one carries a 100 kB text, so some kills land inside a
# long write(2). Prints "started" once the handler is open, then each event id after emit() returned.
CHILD = r"""
import sys
import hilt
path, fsync = sys.argv[1], sys.argv[2] == "1"
hilt.instrument(filepath=path, providers=[], fsync=fsync)
out = sys.stdout
out.write("started\n"); out.flush()
big = "x" * 100_000
i = 0
while True:
    event = hilt.Event(session_id="crash", actor={"type": "agent", "id": "writer"}, action="completion",
                       content={"text": big if i % 64 == 63 else "line %d \u00e9\u2028\u00a0" % i},
                       extensions={"seq": i})
    hilt.emit(event)
    out.write(event.event_id + "\n"); out.flush()
    i += 1
"""


@dataclass
class Run:
    path: Path
    fsync: bool
    delay: float
    acknowledged: list[str] = field(default_factory=list)
    stderr: bytes = b""
    returncode: int | None = None


def _kill_one(run: Run, env: dict[str, str]) -> Run:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(run.path), "1" if run.fsync else "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    started = threading.Event()
    chunks: list[bytes] = []

    def drain() -> None:  # keep the pipe empty so the child never blocks on stdout
        assert proc.stdout is not None
        buffered = b""
        while True:
            data = os.read(proc.stdout.fileno(), 65536)
            if not data:
                break
            chunks.append(data)
            buffered += data
            if not started.is_set() and b"started\n" in buffered:
                started.set()
        started.set()  # the child exited (or died) without starting: reported below

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        assert started.wait(30), "child never started"
        time.sleep(run.delay)
        proc.send_signal(signal.SIGKILL)
        run.returncode = proc.wait(30)
        reader.join(30)
        assert proc.stderr is not None
        run.stderr = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    lines = b"".join(chunks).split(b"\n")
    assert lines[0] == b"started", f"child said {lines[:3]!r}; stderr: {run.stderr[-2000:]!r}"
    run.acknowledged = [line.decode() for line in lines[1:-1]]  # the last piece has no newline: not complete
    return run


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Run]:
    """RUNS children, each killed at a random moment; two at a time (one per core)."""
    env = dict(os.environ)
    repo = str(Path(hilt.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([repo, *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONIOENCODING"] = "utf-8"
    env.pop("HILT_AUDIT", None)
    rng = random.Random(SEED)
    base = tmp_path_factory.mktemp("crash")
    runs = [
        Run(path=base / f"run{i:03d}" / "hilt.jsonl", fsync=i % 2 == 1, delay=rng.uniform(0.020, 0.150))
        for i in range(RUNS)
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda run: _kill_one(run, env), runs))


def _verify(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    status = hilt.cli.main(["verify", str(path)])
    return status, capsys.readouterr().out


def _whole_event(tail: bytes) -> bool:
    try:
        return isinstance(json.loads(tail), dict)
    except ValueError:
        return False


def _check_file(path: Path, capsys, internal_reports, caplog) -> tuple[list[str], bool]:
    """The checks every killed (or cut) file must pass; returns (intact event ids, torn tail?)."""
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    complete, tail = lines[:-1], lines[-1]  # tail: bytes after the last newline (b"" when none)
    ids = []
    for number, line in enumerate(complete, start=1):
        data = json.loads(line)  # every newline-terminated line is whole JSON
        assert data["session_id"] == "crash", f"{path}:{number}"
        ids.append(data["event_id"])
    torn = tail != b""
    if torn and _whole_event(tail):
        # write(2) stops at a page boundary when the kill arrives: one that falls just before the newline
        # leaves the whole event without it, which readers take as the event it is
        ids.append(json.loads(tail)["event_id"])
        torn = False
    if torn:
        with pytest.raises(ValueError):  # JSONDecodeError, or UnicodeDecodeError when cut inside a character
            json.loads(tail)

    caplog.clear()
    events = list(hilt.Session(path, mode="r").read())
    assert [e.event_id for e in events] == ids
    assert [e.extensions["seq"] for e in events] == list(range(len(ids)))
    reports = [r.getMessage() for r in internal_reports()]
    if torn:
        where = f"{path}:{len(complete) + 1}"
        assert any(where in m and "torn last line" in m for m in reports), reports
        with pytest.raises(hilt.HILTError, match=re.escape(f"{path}:{len(complete) + 1}")):
            list(hilt.Session(path, mode="r").read(strict=True))
    else:
        assert reports == []
        assert len(list(hilt.Session(path, mode="r").read(strict=True))) == len(ids)

    status, out = _verify(path, capsys)
    if torn:
        assert status == 1, out
        problems = [line for line in out.splitlines() if not line.startswith("checked ")]
        assert problems == [f"{path}:{len(complete) + 1}: torn last line (no newline; a crash mid-write?)"], out
    else:
        assert status == 0, out
        assert f"checked {len(ids)} events in 1 file: 0 problems" in out
    return ids, torn


def test_sigkill_leaves_only_a_torn_last_line_and_loses_no_acknowledged_event(
    killed_runs, capsys, internal_reports, caplog
):
    caplog.set_level("WARNING", logger="hilt.internal")
    totals = {"events": 0, "acknowledged": 0, "acknowledged_fsync": 0, "torn": 0, "lost": 0}
    for run in killed_runs:
        assert run.returncode == -signal.SIGKILL, (run.path, run.returncode, run.stderr[-2000:])
        ids, torn = _check_file(run.path, capsys, internal_reports, caplog)
        present = set(ids)
        lost = [i for i in run.acknowledged if i not in present]
        assert lost == [], f"{run.path} (fsync={run.fsync}): acknowledged but missing: {lost[:5]}"
        # Acknowledged ids are a prefix of the file's ids: the writer acknowledges in file order.
        assert ids[: len(run.acknowledged)] == run.acknowledged
        assert len(ids) - len(run.acknowledged) <= 1  # at most the one written but not yet acknowledged
        totals["events"] += len(ids)
        totals["acknowledged"] += len(run.acknowledged)
        totals["acknowledged_fsync"] += len(run.acknowledged) if run.fsync else 0
        totals["torn"] += torn
    # Some acknowledged work happened in each mode, or the test tested nothing.
    assert sum(len(r.acknowledged) for r in killed_runs if r.fsync) > 0
    assert sum(len(r.acknowledged) for r in killed_runs if not r.fsync) > 0
    print(f"crash-safety: {len(killed_runs)} SIGKILLs, {totals}")


def test_a_tail_cut_mid_line_is_reported_not_fatal(killed_runs, capsys, internal_reports, caplog, tmp_path):
    """The same files with the last line cut at a random byte: what a crash inside write(2) leaves."""
    caplog.set_level("WARNING", logger="hilt.internal")
    rng = random.Random(SEED + 1)
    cut_runs = 0
    for n, run in enumerate(killed_runs):
        raw = run.path.read_bytes()
        end = raw.rfind(b"\n", 0, len(raw) - 1) + 1 if raw.endswith(b"\n") else raw.rfind(b"\n") + 1
        last_line = raw[end:]
        if len(last_line.rstrip(b"\n")) < 2:
            continue
        cut = end + rng.randrange(1, len(last_line.rstrip(b"\n")))
        path = tmp_path / f"cut{n:03d}" / "hilt.jsonl"
        path.parent.mkdir()
        path.write_bytes(raw[:cut])
        ids, torn = _check_file(path, capsys, internal_reports, caplog)
        assert torn
        assert ids == [json.loads(line)["event_id"] for line in raw[:end].split(b"\n")[:-1]]
        cut_runs += 1
    assert cut_runs >= RUNS // 2

"""Many threads and processes appending to one file, with and without size rotation: no line torn, lost or doubled."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import hilt
from hilt import Event

THREADS, PROCESSES, PER_WRITER = 8, 4, 5000

# A child process: instrument() the shared file, say "ready", wait for the go file, then write.
WRITER = textwrap.dedent(
    """
    import os, sys, time, hilt
    from hilt import Event
    path, writer, count, go, max_bytes, backup_count = sys.argv[1:7]
    hilt.instrument(filepath=path, providers=[], max_bytes=int(max_bytes), backup_count=int(backup_count))
    print("ready", flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.002)
    for i in range(int(count)):
        hilt.emit(Event(session_id=writer, action="prompt",
                        content={"text": f"{writer}:{i}:" + "abcdefghij" * (i % 60)},
                        extensions={"writer": writer, "seq": i}))
    hilt.uninstrument()
    """
)


def text_for(writer: str, i: int) -> str:
    return f"{writer}:{i}:" + "abcdefghij" * (i % 60)


def start_writers(path: Path, go: Path, names: list[str], count: int, env: dict, max_bytes=0, backup_count=0):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), name, str(count), str(go), str(max_bytes), str(backup_count)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for name in names
    ]
    for proc in procs:
        assert proc.stdout.readline() == b"ready\n", proc.stderr.read().decode()
    return procs


def finish(procs) -> None:
    for proc in procs:
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err.decode()
        assert err == b"", err.decode()


def check_lines(raw_lines: list[bytes], writers: list[str], count: int) -> None:
    """Every line parses, carries the text its writer wrote, and each (writer, seq) appears exactly once."""
    seen: set[tuple[str, int]] = set()
    ids: set[str] = set()
    for raw in raw_lines:
        line = json.loads(raw)
        writer, seq = line["extensions"]["writer"], line["extensions"]["seq"]
        assert line["content"]["text"] == text_for(writer, seq)
        assert line["session_id"] == writer
        seen.add((writer, seq))
        ids.add(line["event_id"])
    assert len(raw_lines) == len(writers) * count
    assert len(ids) == len(raw_lines)
    assert seen == {(w, i) for w in writers for i in range(count)}


def test_threads_and_processes_share_one_file(tmp_path, subprocess_env):
    """8 threads x 5,000 and 4 processes x 5,000 events at once into one file give exactly 60,000 intact lines, ids unique."""
    path = tmp_path / "shared.jsonl"
    go = tmp_path / "go"
    proc_names = [f"p{n}" for n in range(PROCESSES)]
    thread_names = [f"t{n}" for n in range(THREADS)]
    procs = start_writers(path, go, proc_names, PER_WRITER, subprocess_env)
    hilt.instrument(filepath=path, providers=[])
    barrier = threading.Barrier(THREADS)
    failures: list[BaseException] = []

    def write(name: str) -> None:
        try:
            barrier.wait()
            for i in range(PER_WRITER):
                hilt.emit(Event(session_id=name, action="prompt", content={"text": text_for(name, i)},
                                extensions={"writer": name, "seq": i}))
        except BaseException as exc:  # surfaced below
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(name,)) for name in thread_names]
    go.touch()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    finish(procs)
    hilt.uninstrument()
    assert failures == []
    data = path.read_bytes()
    assert data.endswith(b"\n")
    raw_lines = data.split(b"\n")[:-1]
    assert len(raw_lines) == 60_000
    check_lines(raw_lines, proc_names + thread_names, PER_WRITER)
    assert [e.extensions["seq"] for e in hilt.Session(path, mode="r").read() if e.session_id == "t3"] == list(range(PER_WRITER))


def test_rotation_under_two_processes_loses_no_line(tmp_path, subprocess_env):
    """Two processes rotating one file set by size lose and duplicate no line (counted across the file and its backups)."""
    path = tmp_path / "rotating.jsonl"
    go = tmp_path / "go"
    names, count = ["a", "b"], 2000
    procs = start_writers(path, go, names, count, subprocess_env, max_bytes=32_768, backup_count=400)
    go.touch()
    finish(procs)
    files = [path] + sorted(tmp_path.glob("rotating.jsonl.*"))
    backups = [p for p in files if p.suffix.lstrip(".").isdigit()]
    assert len(backups) >= 10  # rotation really happened, many times
    assert not (tmp_path / "rotating.jsonl.400").exists() or len(backups) < 400
    raw_lines: list[bytes] = []
    for p in [path, *backups]:
        data = p.read_bytes()
        assert data == b"" or data.endswith(b"\n"), p
        raw_lines += data.split(b"\n")[:-1] if data else []
    check_lines(raw_lines, names, count)

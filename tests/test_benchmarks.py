"""The benchmarks keep running: each is started as a script with tiny settings and its report checked
(the figures themselves are for people, never asserted: the machines are shared and noisy)."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_benchmark(name: str, *arguments: str) -> tuple[str, ModuleType]:
    """Run ``benchmarks/<name>.py`` with ``arguments``; return its report (it must succeed) and the module."""
    result = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), *arguments],
                            capture_output=True, text=True, timeout=240, cwd=BENCHMARKS)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return result.stdout, importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_overhead_benchmark_reports_every_case_and_writes_the_events():
    """One paired block of five calls per case: a row for every server and case, the slopes and the
    isolated per-chunk figure, the stream read, chunk memory, the recorder's work by batch size, its share of a loop of calls and the
    with-hilt calls' events in the file."""
    report, overhead = run_benchmark("overhead", "--blocks", "1", "--calls", "5")
    for server, kind in overhead.CASES:
        assert re.search(rf"^{re.escape(server)}\s+{re.escape(overhead.label(kind))}\s+\d", report, re.M), (server, kind)
    slopes = re.findall(r"^added per stream chunk, server .*: -?\d+\.\d+ µs wall \(-?\d+\.\d+% of the -?\d+\.\d+ µs a chunk takes without hilt\), "
                        r"-?\d+\.\d+ µs wall by means, ", report, re.M)
    assert len(slopes) == len(overhead.SERVERS), report
    switches = re.findall(r"^added per stream chunk, server .* µs process CPU, -?\d+\.\d+ context switches per 100 chunks$",
                          report, re.M)
    assert len(switches) == len(overhead.SERVERS), report
    assert re.search(r"^server .*switches/call$", report, re.M), report
    assert re.search(r"chunks already parsed \(isolated\): -?\d+\.\d+ µs", report)
    assert re.search(r"read of a 200-chunk stream: \d+\.\d+ µs as hilt keeps it, \d+\.\d+ µs with every chunk", report)
    assert re.search(r"memory per chunk: [\d,]+ bytes parsed, [\d,]+ bytes as the text", report)
    batches = re.search(r"^recorder's work per call after a 200-chunk stream \(server at once\), by calls per batch: (.*)$",
                        report, re.M)
    assert batches and [int(k) for k in re.findall(r"(\d+): \d+\.\d+ µs", batches.group(1))] == list(overhead.BATCH_SIZES)
    share = re.search(r"recorder's tasks done during (\d+) chat calls in a row \(server at once\): (\d+) of (\d+)", report)
    assert share and int(share.group(3)) == 2 * int(share.group(1)) >= int(share.group(2)), report
    assert re.search(r"own work on the caller's thread per call \(isolated, SDK stubbed, recorder tasks dropped\): "
                     r"-?\d+\.\d+ µs over \d+\.\d+ µs plain", report)
    written = int(re.search(r"; (\d+) events written", report).group(1))
    assert written == 2 * (3 + 5) * len(overhead.CASES)  # with hilt, per case: 3 warm-up and 5 timed calls, 2 events each


def test_overhead_benchmark_chat_only_reports_just_the_chat_calls():
    """``--chat-only`` measures the chat calls alone: their rows, none of the stream lines."""
    result = subprocess.run([sys.executable, str(BENCHMARKS / "overhead.py"), "--blocks", "1", "--calls", "5", "--chat-only"],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert len(re.findall(r"^\S+ ms\s+chat call\s+\d", result.stdout, re.M)) == 2, result.stdout
    assert "stream" not in result.stdout  # no stream rows, slopes or chunk figures


def test_instruction_benchmark_counts_a_chat_call_with_and_without_hilt():
    """The chat call only, runs of one and two calls under valgrind: the row has the SDK's and hilt's counts."""
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed")
    result = subprocess.run([sys.executable, str(BENCHMARKS / "instructions.py"), "--chat-only", "--calls", "1,2"],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    row = re.search(r"^chat call\s+([\d,]+)\s+(\d+\.\d)\s+(-?[\d,]+)\s+-?\d+\.\d+%\s+-?\d+\.\d+\s+(-?[\d,]+)\s+-?\d+\.\d+$",
                    result.stdout, re.M)
    assert row, result.stdout
    sdk, whole, caller = (int(row.group(i).replace(",", "")) for i in (1, 3, 4))
    assert sdk > 1_000_000  # a real SDK call through the mock transport, counted
    assert whole > caller  # the recorder's tasks (reading, pricing, writing two events) are counted too
    assert result.stderr == ""


def test_compare_benchmark_reports_hilt_and_says_which_tools_it_could_not_run():
    """One paired block of five calls: hilt's three cases and per-chunk line, and for each OpenTelemetry tool its
    rows or a line saying why it was not run (they are optional: the ``compare`` extra)."""
    report, compare = run_benchmark("compare", "--blocks", "1", "--calls", "5")
    for case, _ in compare.CASES:
        assert re.search(rf"^hilt\s+{re.escape(case)}\s+\d+\.\d\s+-?\d+\.\d\s+\d\.\d{{3}}\s+-?\d+\.\d\s+(-?\d+\.\d|nan)$",
                         report, re.M), (case, report)
    assert re.search(r"^added per stream chunk, hilt \(slope 20→200 chunks\): -?\d+\.\d\d µs wall$", report, re.M), report
    for tool in compare.OTEL_TOOLS:
        ran = re.search(rf"^{re.escape(tool)}\s+chat call\s+\d", report, re.M)
        skipped = re.search(rf"^{re.escape(tool)}: not run \(.+; pip install -e \"\.\[compare\]\"\)$", report, re.M)
        assert bool(ran) != bool(skipped), (tool, report)

"""hilt's work per OpenAI call and per stream chunk, counted in CPU instructions: repeatable where timings are not.

On a shared machine the timed benchmark (``overhead.py``) moves by microseconds per chunk between runs of the
same code. Here each case runs under valgrind (``cachegrind``, no cache simulation), which counts the
instructions the process executes, whatever else the machine does. Per case, the same script runs a few calls
and a few more calls, and the difference, divided by the extra calls, is one call's instructions; start-up and
imports cancel out. The recorder thread is not started: after each call ``hilt.flush()`` runs its tasks on
the caller's thread, so their work is counted too (``caller only``: the tasks dropped, hilt's work on the
caller's thread alone). Garbage collection is off: a
full collection is one big event whose moment depends on the whole heap, not on the call.

A count is turned into microseconds by the SDK's own rate, measured in the same run without hilt and without
valgrind: ``hilt's instructions / the SDK's instructions × the SDK's median time``. So it is an estimate of
hilt's work, not of the two threads' interplay on the GIL (``overhead.py`` measures that).

Run: ``python benchmarks/instructions.py`` (about 3 minutes; needs ``valgrind``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import gc
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import openai  # noqa: E402

import hilt  # noqa: E402
from hilt import _recorder  # noqa: E402
from overhead import chat_call, make_client, stream_call  # noqa: E402

MODES = ("without", "with", "caller only")
#: Calls per case: (fewer, more); the difference is what one call costs.
CALLS = (4, 12)


def call_for(chunks: int) -> Callable[[], object]:
    """A chat call (``chunks == 0``) or a stream of ``chunks`` content chunks read to its end, through the SDK."""
    return functools.partial(stream_call if chunks else chat_call, make_client(chunks or 20))


def worker(mode: str, chunks: int, calls: int) -> None:
    """The measured process: three warm-up calls, then ``calls`` calls, each followed by ``hilt.flush()``."""
    gc.disable()
    fn = call_for(chunks)
    if mode != "without":
        hilt.instrument(filepath=str(Path(tempfile.mkdtemp()) / "bench.jsonl"), providers=["openai"])
        # The recorder thread is never started: its tasks wait for each flush, which runs them here. Started, it
        # would look for tasks every few ms of wall time, and valgrind's slowdown would make those looks count
        # in proportion to a call's length (private knobs: a benchmark's).
        _recorder._sleeping, _recorder._heartbeat = False, None
    if mode == "caller only":
        import hilt.providers.openai as provider

        provider.submit = lambda task: None  # the recorder's tasks are dropped (private: a benchmark's knob)
    for _ in range(3):
        fn()
    hilt.flush()
    for _ in range(calls):
        fn()
        hilt.flush()


def count(mode: str, chunks: int, calls: int, seed: int = 0) -> int:
    """Instructions the whole worker process executes (all threads), from valgrind's summary, with string
    hashing seeded by ``seed`` (so each seed is one repeatable layout of the interpreter's dicts)."""
    command = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
               sys.executable, __file__, "--worker", mode, str(chunks), str(calls)]
    env = {**os.environ, "PYTHONHASHSEED": str(seed)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    found = re.search(r"I\s+refs:\s+([\d,]+)", result.stderr)
    if result.returncode != 0 or found is None:
        raise RuntimeError(f"valgrind run failed ({mode}, {chunks} chunks):\n{result.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_call(cases: list[tuple[str, int]], calls: tuple[int, int], seeds: int = 1) -> dict[tuple[str, int], list[float]]:
    """One call's instructions per (mode, chunks), once per hash seed (two valgrind runs each, as many at once as
    there are cores). A count repeats exactly for one seed and one build, but moves by a fraction of a percent
    with the layout of the interpreter's dicts, which any change of code or seed shifts."""
    runs = [(mode, chunks, n, seed) for mode, chunks in cases for n in calls for seed in range(seeds)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        totals = dict(zip(runs, pool.map(lambda run: count(*run), runs)))
    return {(mode, chunks): [(totals[mode, chunks, calls[1], seed] - totals[mode, chunks, calls[0], seed])
                             / (calls[1] - calls[0]) for seed in range(seeds)]
            for mode, chunks in cases}


def sdk_time_us(chunks: int, blocks: int = 15, calls: int = 10) -> float:
    """The SDK's median time per call without hilt and without valgrind (median of block medians)."""
    fn = call_for(chunks)
    for _ in range(3):
        fn()
    medians = []
    gc.disable()
    try:
        for _ in range(blocks):
            times = []
            for _ in range(calls):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            medians.append(statistics.median(times))
    finally:
        gc.enable()
    return statistics.median(medians) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", default="20,200", help="the two stream lengths (the per-chunk figure is the slope)")
    parser.add_argument("--calls", default=",".join(map(str, CALLS)), help="calls in the short and the long run")
    parser.add_argument("--chat-only", action="store_true", help="only the chat call (a quick check)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="hash seeds (interpreter layouts) per case; the figures are their medians, with their range")
    parser.add_argument("--worker", nargs=3, metavar=("MODE", "CHUNKS", "CALLS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), int(args.worker[2]))
        return
    if shutil.which("valgrind") is None:
        sys.exit("instructions.py needs valgrind (Debian: apt install valgrind)")
    short, long = (int(n) for n in args.chunks.split(","))
    lengths = (0,) if args.chat_only else (0, short, long)
    calls = tuple(int(n) for n in args.calls.split(","))
    by_seed = per_call([(mode, n) for n in lengths for mode in MODES], calls, args.seeds)  # type: ignore[arg-type]
    times = {n: sdk_time_us(n) for n in lengths}

    print(f"hilt instruction counts — {time.strftime('%Y-%m-%d')}, Python {platform.python_version()}, "
          f"{platform.machine()}, openai {openai.__version__}; valgrind runs of {calls[0]} and {calls[1]} calls")
    print(f"{'case':<22}{'SDK instr':>14}{'SDK µs':>10}{'hilt instr':>13}{'share':>8}{'≈ hilt µs':>11}"
          f"{'caller only':>13}{'≈ µs':>8}")

    def row(name: str, sdk: float, sdk_us: float, whole: float, caller: float) -> None:
        rate = sdk_us / sdk  # µs per instruction of the SDK's own work, this run
        print(f"{name:<22}{sdk:>14,.0f}{sdk_us:>10.1f}{whole:>13,.0f}{whole / sdk:>8.2%}{whole * rate:>11.2f}"
              f"{caller:>13,.0f}{caller * rate:>8.2f}")

    def median(values: list[float]) -> float:
        return statistics.median(values)

    def added(mode: str, n: int) -> list[float]:
        return [a - b for a, b in zip(by_seed[mode, n], by_seed["without", n])]

    def slope(mode: str) -> list[float]:
        return [(a - b) / (long - short) for a, b in zip(by_seed[mode, long], by_seed[mode, short])]

    spreads = []
    for n in lengths:
        row("chat call" if n == 0 else f"stream, {n} chunks", median(by_seed["without", n]), times[n],
            median(added("with", n)), median(added("caller only", n)))
        spreads.append((n, added("with", n)))
    if not args.chat_only:
        per_chunk = [a - b for a, b in zip(slope("with"), slope("without"))]
        caller_chunk = [a - b for a, b in zip(slope("caller only"), slope("without"))]
        row(f"per chunk ({short}→{long})", median(slope("without")), (times[long] - times[short]) / (long - short),
            median(per_chunk), median(caller_chunk))
        spreads.append((-1, per_chunk))
    if args.seeds > 1:
        for n, values in spreads:
            name = "per chunk" if n < 0 else "chat call" if n == 0 else f"stream, {n} chunks"
            print(f"  {name}: hilt instr over {args.seeds} seeds {min(values):,.0f} to {max(values):,.0f}")
    print("'hilt instr': instructions added per call (or per chunk), the recorder's tasks included; 'share': of the")
    print("SDK's own; '≈ hilt µs': the same at the SDK's rate in this run; 'caller only': the recorder's tasks dropped.")


if __name__ == "__main__":
    main()

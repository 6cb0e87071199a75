"""Throughput of ``HiltJSONLHandler`` and the cost of a ``HiltQueueHandler`` hop, same run.

1. Events per second through a ``HiltJSONLHandler`` on the ``hilt`` logger (a plain
   ``hilt.emit(Event(...))`` loop) from 1, 4 and 16 threads, and from 4 processes into one file.
   The lines are counted at the end: every event must be there.
2. Median per-call time of ``hilt.emit`` with the JSONL handler attached directly vs with a
   ``HiltQueueHandler`` in front of it (alternating rounds), against ``hilt.emit`` with no handler.

Run: ``python benchmarks/throughput.py`` (``--events N`` per configuration, ``--calls N`` per round).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import hilt
from hilt import Event, HiltJSONLHandler, HiltQueueHandler

LOGGER = logging.getLogger("hilt")

CHILD = """
import os, sys, time, logging, hilt
from hilt import Event, HiltJSONLHandler
path, count, go, name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
logger = logging.getLogger("hilt")
logger.addHandler(HiltJSONLHandler(path))
logger.setLevel(logging.INFO)
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.001)
start = time.perf_counter()
for i in range(count):
    hilt.emit(Event(session_id=name, action="prompt", content={"text": f"{name} event {i}"}, extensions={"seq": i}))
end = time.perf_counter()
print(f"{end - start:.6f}", flush=True)
"""


def event(name: str, i: int) -> Event:
    return Event(session_id=name, action="prompt", content={"text": f"{name} event {i}"}, extensions={"seq": i})


def attach(handler: logging.Handler) -> None:
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)


def detach(handler: logging.Handler) -> None:
    LOGGER.removeHandler(handler)
    handler.flush()
    handler.close()


def count_lines(path: Path) -> int:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path}: last line torn"
    return data.count(b"\n")


def threads_rate(folder: Path, threads: int, total: int) -> float:
    path = folder / f"threads-{threads}-{total}.jsonl"
    handler = HiltJSONLHandler(path)
    attach(handler)
    per = total // threads
    barrier = threading.Barrier(threads + 1)

    def work(n: int) -> None:
        barrier.wait()
        for i in range(per):
            hilt.emit(event(f"t{n}", i))

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    detach(handler)
    lines = count_lines(path)
    assert lines == per * threads, f"{threads} threads: {lines} lines, expected {per * threads}"
    return per * threads / elapsed


def processes_rate(folder: Path, processes: int, total: int) -> float:
    path = folder / "processes.jsonl"
    go = folder / "go"
    per = total // processes
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(hilt.__file__).resolve().parent.parent),
                                         *filter(None, [env.get("PYTHONPATH")])])
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(per), str(go), f"p{n}"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in range(processes)]
    for proc in procs:
        assert proc.stdout.readline() == "ready\n", proc.stderr.read()
    start = time.perf_counter()
    go.touch()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    elapsed = time.perf_counter() - start
    lines = count_lines(path)
    assert lines == per * processes, f"{processes} processes: {lines} lines, expected {per * processes}"
    return per * processes / elapsed


def emit_medians(folder: Path, calls: int, rounds: int) -> dict[str, float]:
    """Median µs per ``hilt.emit`` call for each set-up, rounds alternating so drift hits all alike."""
    samples: dict[str, list[float]] = {"no handler": [], "JSONL direct": [], "queue -> JSONL": []}
    for r in range(rounds):
        for name in samples:
            events = [event("q", i) for i in range(calls)]
            handler: logging.Handler | None = None
            target: HiltJSONLHandler | None = None
            if name == "JSONL direct":
                handler = HiltJSONLHandler(folder / f"direct-{r}.jsonl")
            elif name == "queue -> JSONL":
                target = HiltJSONLHandler(folder / f"queued-{r}.jsonl")
                handler = HiltQueueHandler([target])
            if handler is not None:
                attach(handler)
            times = samples[name]
            gc.disable()
            try:
                for ev in events:
                    t0 = time.perf_counter_ns()
                    hilt.emit(ev)
                    times.append((time.perf_counter_ns() - t0) / 1000)
            finally:
                gc.enable()
            if handler is not None:
                detach(handler)
            if target is not None:
                target.close()
                path = folder / f"queued-{r}.jsonl"
                assert count_lines(path) == calls, "queue handler lost events"
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=32_000, help="events per throughput configuration")
    parser.add_argument("--calls", type=int, default=2_000, help="emit calls per overhead round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating overhead rounds")
    args = parser.parse_args()
    for handler in list(LOGGER.handlers):
        LOGGER.removeHandler(handler)
    print(f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        threads_rate(folder, 1, 2_000)  # warm up
        rates = {f"{n} thread{'s' if n > 1 else ''}": threads_rate(folder, n, args.events) for n in (1, 4, 16)}
        rates["4 processes"] = processes_rate(folder, 4, args.events)
        medians = emit_medians(folder, args.calls, args.rounds)
    base = rates["1 thread"]
    print()
    print(f"Throughput into one file ({args.events:,} events each, all lines present)")
    print("| writers | events/s | vs 1 thread |")
    print("|---|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.0f} | {rate / base:.2f} |")
    print()
    print(f"hilt.emit per call, median of {args.rounds} x {args.calls:,} alternating calls")
    print("| set-up | median µs | vs JSONL direct |")
    print("|---|---|---|")
    direct = medians["JSONL direct"]
    for name, value in medians.items():
        print(f"| {name} | {value:.1f} | {value / direct:.2f} |")


if __name__ == "__main__":
    main()

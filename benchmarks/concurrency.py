"""Full-size concurrency checks: 8 processes × 10,000 events into one file, and 64 asyncio tasks ×
500 calls through ``AsyncOpenAI`` (each task in its own ``hilt.conversation``). Prints what was
written and what was lost (the answer must be nothing). Run: ``python benchmarks/concurrency.py``.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import hilt

PROCESSES, EVENTS = 8, 10_000
TASKS, CALLS = 64, 500


def _writer(path: str, worker: int) -> None:
    hilt.instrument(filepath=path, providers=[])
    for n in range(EVENTS):
        hilt.emit(hilt.Event(action="retrieval", extensions={"worker": worker, "n": n}))
    hilt.uninstrument()


def processes(folder: Path) -> str:
    path = str(folder / "procs.jsonl")
    start = time.perf_counter()
    workers = [multiprocessing.get_context("spawn").Process(target=_writer, args=(path, w)) for w in range(PROCESSES)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    seen = Counter()
    torn = 0
    for line in open(path, "rb"):
        try:
            data = json.loads(line)
        except ValueError:
            torn += 1
            continue
        seen[(data["extensions"]["worker"], data["extensions"]["n"])] += 1
    missing = PROCESSES * EVENTS - len(seen)
    doubled = sum(1 for count in seen.values() if count > 1)
    return (f"{PROCESSES} processes x {EVENTS:,} events into one file in {elapsed:.1f} s: "
            f"{len(seen):,} distinct events, {missing} missing, {doubled} duplicated, {torn} torn lines")


async def _task(client, n: int) -> None:  # type: ignore[no-untyped-def]
    with hilt.conversation(id=f"conv-{n}"):
        for i in range(CALLS):
            await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"task {n} call {i}"}])


async def _all_tasks(base_url: str) -> None:
    import openai

    async with openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0) as client:
        await asyncio.gather(*(_task(client, n) for n in range(TASKS)))


def tasks(folder: Path) -> str:
    from hilt.testing import OpenAIServer

    path = folder / "tasks.jsonl"
    with OpenAIServer() as server:
        hilt.instrument(filepath=str(path), providers=["openai"])
        start = time.perf_counter()
        asyncio.run(_all_tasks(server.base_url))
        elapsed = time.perf_counter() - start
        hilt.uninstrument()
    events = [json.loads(line) for line in open(path, "rb")]
    prompts = [e for e in events if e["action"] == "prompt"]
    closing = [e for e in events if e["action"] != "prompt"]
    bleeding = 0
    for event in events:
        text = event["content"]["text"] if event["action"] == "prompt" else None
        if text is not None and event["session_id"] != f"conv-{text.split()[1]}":
            bleeding += 1
    by_call = Counter(e["extensions"]["call_id"] for e in closing)
    linked = {e["extensions"]["call_id"]: e["session_id"] for e in prompts}
    mismatched = sum(1 for e in closing if linked.get(e["extensions"]["call_id"]) != e["session_id"])
    return (f"{TASKS} asyncio tasks x {CALLS} calls in {elapsed:.1f} s: {len(prompts):,} prompts, {len(closing):,} closing "
            f"events ({sum(1 for c in by_call.values() if c > 1)} calls closed twice), "
            f"{bleeding + mismatched} events with another task's conversation id")


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        print(f"Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}")
        print(processes(Path(folder)))
        print(tasks(Path(folder)))


if __name__ == "__main__":
    main()

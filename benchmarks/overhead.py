"""Per-call overhead of hilt on the OpenAI SDK: median time with and without instrumentation, same run.

The SDK talks to ``httpx2.MockTransport`` (no sockets), so the numbers are the SDK's own cost plus
hilt's. hilt writes to a real JSONL file with content capture on. Reports the caller's median added
time and the CPU per call of the whole process (hilt's recorder thread included).
Run: ``python benchmarks/overhead.py`` (``--rounds``, ``--calls``).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

import httpx2
import openai

import hilt

CHAT_BODY = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hello there, how can I help?"}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19,
              "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}},
}).encode()


def stream_body(chunks: int) -> bytes:
    """An SSE chat stream of ``chunks`` content chunks, a finish chunk and a usage chunk."""
    def frame(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
        data = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-2024-08-06",
                "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if usage:
            data["usage"] = usage
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    parts = [frame({"role": "assistant", "content": ""})]
    parts += [frame({"content": f"word{i} "}) for i in range(chunks)]
    parts.append(frame({}, finish="stop"))
    parts.append(frame({}, usage={"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks}))
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


def make_client(stream_chunks: int) -> openai.OpenAI:
    sse = stream_body(stream_chunks)

    def handler(request: httpx2.Request) -> httpx2.Response:
        if b'"stream":true' in request.content.replace(b" ", b""):
            return httpx2.Response(200, content=sse, headers={"content-type": "text/event-stream", "x-request-id": "req_1"})
        return httpx2.Response(200, content=CHAT_BODY, headers={"content-type": "application/json", "x-request-id": "req_1"})

    return openai.OpenAI(api_key="sk-bench", base_url="http://bench.invalid/v1",
                         http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))


MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello"}]


def sample(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    """Median wall time of one call on the caller's thread, and the process CPU time per call (all threads:
    what the recorder thread spends in the background counts here), both in µs."""
    for _ in range(max(5, calls // 10)):
        fn()
    samples = []
    gc.disable()
    try:
        cpu_start = time.process_time()
        for _ in range(calls):
            start = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - start) * 1e6)
        hilt.flush()  # the recorder's work for these calls is inside the CPU figure
        cpu = (time.process_time() - cpu_start) * 1e6 / calls
    finally:
        gc.enable()
    return statistics.median(samples), cpu


def chunk_loop_us(rounds: int, chunks: int = 20_000) -> tuple[float, float]:
    """Per-chunk time of iterating an ``openai.Stream`` whose chunks are already parsed, plain and as hilt's
    recording subclass (same run, alternating): hilt's own per-chunk work without the SDK's ~100 µs parse."""
    from openai import Stream
    from openai.types.chat import ChatCompletionChunk

    from hilt.providers.openai import _OpenAICall, _recording_stream_class

    frames = [json.loads(frame[6:]) for frame in stream_body(18).split(b"\n\n") if frame.startswith(b"data: {")]
    parsed = [ChatCompletionChunk.model_validate(frame) for frame in frames]
    items = (parsed * (chunks // len(parsed) + 1))[:chunks]
    recording_class = _recording_stream_class(Stream[ChatCompletionChunk])
    options = types.SimpleNamespace(url="/chat/completions", json_data={"model": "gpt-4o", "messages": MESSAGES})

    def run(cls: type, recorded: bool) -> float:
        stream = cls.__new__(cls)
        stream._iterator = iter(items)
        if recorded:
            stream._hilt_call = _OpenAICall(None, options, True)
        start = time.perf_counter()
        for _ in stream:
            pass
        return (time.perf_counter() - start) * 1e6 / chunks

    plain, recorded = [], []
    for _ in range(rounds):
        plain.append(run(Stream, False))
        recorded.append(run(recording_class, True))
    hilt.flush()
    return statistics.median(plain), statistics.median(r - p for r, p in zip(recorded, plain))


CASES = ("chat", "stream20", "stream200")
LABELS = {"chat": "chat call", "stream20": "stream, 20 chunks", "stream200": "stream, 200 chunks"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15, help="alternating rounds without / with hilt")
    parser.add_argument("--calls", type=int, default=200, help="calls per case per round")
    args = parser.parse_args()
    client_20, client_200 = make_client(20), make_client(200)
    cases: dict[str, Callable[[], object]] = {
        "chat": lambda: client_20.chat.completions.create(model="gpt-4o", messages=MESSAGES, temperature=0.2),
        "stream20": lambda: list(client_20.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)),
        "stream200": lambda: list(client_200.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)),
    }
    calls = {"chat": args.calls, "stream20": args.calls, "stream200": max(20, args.calls // 5)}
    # Rounds alternate without / with hilt, so drift on a shared machine hits both sides alike; each
    # figure is the median over rounds of the paired difference (with minus without, same round).
    rows: dict[str, dict[str, list[float]]] = {k: {"base": [], "with": [], "added": [], "base_cpu": [], "cpu": []} for k in CASES}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.jsonl"
        for _ in range(args.rounds):
            for key in CASES:
                base, base_cpu = sample(cases[key], calls[key])
                hilt.instrument(filepath=str(path), providers=["openai"])
                with_hilt, cpu = sample(cases[key], calls[key])
                hilt.uninstrument()
                row = rows[key]
                row["base"].append(base)
                row["with"].append(with_hilt)
                row["added"].append(with_hilt - base)
                row["base_cpu"].append(base_cpu)
                row["cpu"].append(cpu - base_cpu)
        lines = sum(1 for _ in open(path))
    med = {k: {name: statistics.median(values) for name, values in row.items()} for k, row in rows.items()}
    print(f"hilt overhead benchmark — {time.strftime('%Y-%m-%d')}, Python {platform.python_version()}, "
          f"{platform.machine()}, openai {openai.__version__}; {args.rounds} rounds; {lines} events written")
    print(f"{'case':<22}{'without µs':>12}{'with µs':>10}{'added µs':>10}{'ratio':>7}{'added CPU µs':>14}")
    for key in CASES:
        m = med[key]
        print(f"{LABELS[key]:<22}{m['base']:>12.1f}{m['with']:>10.1f}{m['added']:>10.1f}"
              f"{(m['base'] + m['added']) / m['base']:>7.3f}{m['cpu']:>14.1f}")
    per_chunk = statistics.median(
        (a200 - a20) / 180 for a200, a20 in zip(rows["stream200"]["added"], rows["stream20"]["added"])
    )
    per_chunk_cpu = statistics.median(
        (c200 - c20) / 180 for c200, c20 in zip(rows["stream200"]["cpu"], rows["stream20"]["cpu"])
    )
    print(f"added per stream chunk (slope 20→200 chunks): {per_chunk:.2f} µs on the caller, {per_chunk_cpu:.2f} µs CPU")
    plain_chunk, added_chunk = chunk_loop_us(args.rounds)
    print(f"added per chunk, chunks already parsed (isolated): {added_chunk:.3f} µs over {plain_chunk:.3f} µs plain")
    print("'added' is the caller's median wall time (what the LLM call takes longer); 'added CPU' is the process")
    print("CPU per call over all threads, the recorder thread's background work included.")


if __name__ == "__main__":
    main()

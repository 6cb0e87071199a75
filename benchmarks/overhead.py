"""Per-call overhead of hilt on the OpenAI SDK: median time with and without instrumentation, same run.

The SDK talks to ``httpx2.MockTransport`` (no sockets), so the numbers are the SDK's own cost plus
hilt's. hilt writes to a real JSONL file with content capture on. Reports the caller's median added
time and the CPU per call of the whole process (hilt's recorder thread included).
Run: ``python benchmarks/overhead.py`` (``--blocks``, ``--calls``).
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


def make_client(stream_chunks: int, latency_s: float = 0.0) -> openai.OpenAI:
    """A real SDK client on a mock transport; ``latency_s`` is the server's time to answer (a sleep, so the
    caller's thread waits without the GIL, as it does on a socket)."""
    sse = stream_body(stream_chunks)

    def handler(request: httpx2.Request) -> httpx2.Response:
        if latency_s:
            time.sleep(latency_s)
        if b'"stream":true' in request.content.replace(b" ", b""):
            return httpx2.Response(200, content=sse, headers={"content-type": "text/event-stream", "x-request-id": "req_1"})
        return httpx2.Response(200, content=CHAT_BODY, headers={"content-type": "application/json", "x-request-id": "req_1"})

    return openai.OpenAI(api_key="sk-bench", base_url="http://bench.invalid/v1",
                         http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))


MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello"}]


def sample(fn: Callable[[], object], calls: int) -> tuple[float, float, float]:
    """One block of ``calls`` calls: the median wall time of a call on the caller's thread, the median CPU
    time of the caller's thread alone, and the process CPU time per call (all threads: what the recorder
    thread spends in the background counts here), all in µs."""
    for _ in range(max(3, calls // 5)):
        fn()
    walls, threads = [], []
    gc.disable()
    try:
        cpu_start = time.process_time()
        for _ in range(calls):
            start, thread_start = time.perf_counter(), time.thread_time()
            fn()
            threads.append((time.thread_time() - thread_start) * 1e6)
            walls.append((time.perf_counter() - start) * 1e6)
        hilt.flush()  # the recorder's work for these calls is inside the CPU figure
        cpu = (time.process_time() - cpu_start) * 1e6 / calls
    finally:
        gc.enable()
    return statistics.median(walls), statistics.median(threads), cpu


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


LATENCIES_MS = (0, 1)
CASES = tuple((kind, latency) for latency in LATENCIES_MS for kind in ("chat", "stream20", "stream200"))
LABELS = {"chat": "chat call", "stream20": "stream, 20 chunks", "stream200": "stream, 200 chunks"}


def measure(blocks: int, calls_per_block: int) -> tuple[dict[tuple[str, int], dict[str, list[float]]], int]:
    """Each case's paired figures over ``blocks`` pairs, and the number of events written."""
    def call(client: openai.OpenAI, stream: bool) -> Callable[[], object]:
        if stream:
            return lambda: list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
        return lambda: client.chat.completions.create(model="gpt-4o", messages=MESSAGES, temperature=0.2)

    functions: dict[tuple[str, int], Callable[[], object]] = {}
    for latency in LATENCIES_MS:
        client_20, client_200 = make_client(20, latency / 1000), make_client(200, latency / 1000)
        functions[("chat", latency)] = call(client_20, stream=False)
        functions[("stream20", latency)] = call(client_20, stream=True)
        functions[("stream200", latency)] = call(client_200, stream=True)
    calls = {"chat": calls_per_block, "stream20": calls_per_block, "stream200": max(5, calls_per_block // 5)}
    # The shared machine's speed moves by tens of percent within a second, so each case runs as many short
    # blocks, without and with hilt back to back, in ABBA order (drift inside a pair hits both sides alike);
    # each figure is the median over pairs of the paired difference (with minus without).
    names = ("base", "with", "added", "thread", "cpu")
    rows = {case: {name: [] for name in names} for case in CASES}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.jsonl"
        for block in range(blocks):
            for case in CASES:
                measured = {}
                for with_hilt in ((False, True) if block % 2 == 0 else (True, False)):
                    if with_hilt:
                        hilt.instrument(filepath=str(path), providers=["openai"])
                    measured[with_hilt] = sample(functions[case], calls[case[0]])
                    if with_hilt:
                        hilt.uninstrument()
                (base, base_thread, base_cpu), (wall, thread, cpu) = measured[False], measured[True]
                row = rows[case]
                row["base"].append(base)
                row["with"].append(wall)
                row["added"].append(wall - base)
                row["thread"].append(thread - base_thread)
                row["cpu"].append(cpu - base_cpu)
        with open(path) as lines:
            written = sum(1 for _ in lines)
    return rows, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--blocks", type=int, default=40, help="paired blocks (without / with hilt) per case")
    parser.add_argument("--calls", type=int, default=25, help="calls per block (the 200-chunk stream: a fifth)")
    args = parser.parse_args()
    rows, written = measure(args.blocks, args.calls)
    print(f"hilt overhead benchmark — {time.strftime('%Y-%m-%d')}, Python {platform.python_version()}, "
          f"{platform.machine()}, openai {openai.__version__}; {args.blocks} paired blocks; {written} events written")
    print(f"{'server latency':<16}{'case':<20}{'without µs':>12}{'added µs':>10}{'ratio':>7}"
          f"{'caller CPU µs':>15}{'added CPU µs':>14}")
    for case in CASES:
        m = {name: statistics.median(values) for name, values in rows[case].items()}
        print(f"{f'{case[1]} ms':<16}{LABELS[case[0]]:<20}{m['base']:>12.1f}{m['added']:>10.1f}"
              f"{(m['base'] + m['added']) / m['base']:>7.3f}{m['thread']:>15.1f}{m['cpu']:>14.1f}")
    for latency in LATENCIES_MS:
        def slope(name: str) -> float:
            long, short = rows[("stream200", latency)][name], rows[("stream20", latency)][name]
            return statistics.median((a - b) / 180 for a, b in zip(long, short))

        print(f"added per stream chunk, {latency} ms latency (slope 20→200 chunks): {slope('added'):.2f} µs wall, "
              f"{slope('thread'):.2f} µs caller CPU, {slope('cpu'):.2f} µs process CPU")
    plain_chunk, added_chunk = chunk_loop_us(15)
    print(f"added per chunk, chunks already parsed (isolated): {added_chunk:.3f} µs over {plain_chunk:.3f} µs plain")
    print("'added' is the caller's median wall time per call, with minus without (what the LLM call takes longer);")
    print("'caller CPU' the same for the CPU time of the caller's thread alone; 'added CPU' the process CPU per")
    print("call over all threads, the recorder thread's background work included.")


if __name__ == "__main__":
    main()

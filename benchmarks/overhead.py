"""Per-call overhead of hilt on the OpenAI SDK: median time with and without instrumentation, same run.

The SDK talks to ``httpx2.MockTransport`` (no sockets), so the numbers are the SDK's own cost plus
hilt's. hilt writes to a real JSONL file with content capture on. Run: ``python benchmarks/overhead.py``.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import tempfile
import time
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


def median_us(fn: Callable[[], object], repeat: int) -> float:
    for _ in range(max(20, repeat // 10)):
        fn()
    samples = []
    gc.disable()
    try:
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - start) * 1e6)
    finally:
        gc.enable()
    return statistics.median(samples)


def measure(repeat: int) -> dict[str, float]:
    client_20 = make_client(20)
    client_200 = make_client(200)

    def chat() -> object:
        return client_20.chat.completions.create(model="gpt-4o", messages=MESSAGES, temperature=0.2)

    def stream_20() -> object:
        return list(client_20.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))

    def stream_200() -> object:
        return list(client_200.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))

    return {"chat": median_us(chat, repeat), "stream20": median_us(stream_20, repeat),
            "stream200": median_us(stream_200, max(50, repeat // 4))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        # Alternate rounds so drift on a shared machine hits both sides alike.
        base_rounds, hilt_rounds = [], []
        for _ in range(3):
            base_rounds.append(measure(args.repeat))
            hilt.instrument(filepath=str(Path(folder) / "bench.jsonl"), providers=["openai"])
            hilt_rounds.append(measure(args.repeat))
            hilt.uninstrument()
        lines = sum(1 for _ in open(Path(folder) / "bench.jsonl"))
    base = {k: statistics.median(r[k] for r in base_rounds) for k in base_rounds[0]}
    with_hilt = {k: statistics.median(r[k] for r in hilt_rounds) for k in hilt_rounds[0]}
    print(f"hilt overhead benchmark — {time.strftime('%Y-%m-%d')}, Python {platform.python_version()}, "
          f"{platform.machine()}, openai {openai.__version__}; {lines} events written")
    print(f"{'case':<22}{'without µs':>12}{'with µs':>12}{'added µs':>11}{'ratio':>8}")
    for key, label in (("chat", "chat call"), ("stream20", "stream, 20 chunks"), ("stream200", "stream, 200 chunks")):
        added = with_hilt[key] - base[key]
        print(f"{label:<22}{base[key]:>12.1f}{with_hilt[key]:>12.1f}{added:>11.1f}{with_hilt[key] / base[key]:>8.2f}")
    per_chunk = ((with_hilt["stream200"] - base["stream200"]) - (with_hilt["stream20"] - base["stream20"])) / 180
    print(f"added per stream chunk (slope 20→200 chunks): {per_chunk:.2f} µs")


if __name__ == "__main__":
    main()

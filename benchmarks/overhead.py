"""Per-call overhead of hilt on the OpenAI SDK: median time with and without instrumentation, same run.

The SDK talks to ``httpx2.MockTransport`` (no sockets), so the numbers are the SDK's own cost plus
hilt's. hilt writes to a real JSONL file with content capture on. Reports the caller's median added
time, its thread's CPU and the CPU per call of the whole process (hilt's recorder thread included),
against a server that answers at once, after 1 ms, and chunk by chunk (see :data:`SERVERS`).
Run: ``python benchmarks/overhead.py`` (``--blocks``, ``--calls``, ``--chat-only``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import httpx2
import openai

import hilt
from hilt import _recorder

CHAT_BODY = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hello there, how can I help?"}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19,
              "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}},
}).encode()


def stream_frames(chunks: int) -> list[bytes]:
    """The SSE frames of a chat stream of ``chunks`` content chunks, a finish chunk and a usage chunk."""
    def frame(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
        data = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-2024-08-06",
                "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if usage:
            data["usage"] = usage
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    frames = [frame({"role": "assistant", "content": ""})]
    frames += [frame({"content": f"word{i} "}) for i in range(chunks)]
    frames.append(frame({}, finish="stop"))
    frames.append(frame({}, usage={"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks}))
    frames.append(b"data: [DONE]\n\n")
    return frames


def chunk_payloads(chunks: int) -> list[bytes]:
    """The JSON of each chunk of :func:`stream_frames` (``[DONE]`` left out)."""
    return [frame[6:].strip() for frame in stream_frames(chunks) if frame.startswith(b"data: {")]


def stream_body(chunks: int) -> bytes:
    """An SSE chat stream of ``chunks`` content chunks, all in one body."""
    return b"".join(stream_frames(chunks))


def make_client(stream_chunks: int, latency_s: float = 0.0, gap_s: float = 0.0) -> openai.OpenAI:
    """A real SDK client on a mock transport; ``latency_s`` is the server's time to answer and ``gap_s`` its
    time between stream chunks (sleeps, so the caller's thread waits without the GIL, as it does on a socket)."""
    frames = stream_frames(stream_chunks)
    sse = b"".join(frames)

    def paced() -> Iterator[bytes]:
        for frame in frames:
            time.sleep(gap_s)
            yield frame

    def handler(request: httpx2.Request) -> httpx2.Response:
        if latency_s:
            time.sleep(latency_s)
        if b'"stream":true' in request.content.replace(b" ", b""):
            headers = {"content-type": "text/event-stream", "x-request-id": "req_1"}
            return httpx2.Response(200, content=paced() if gap_s else sse, headers=headers)
        return httpx2.Response(200, content=CHAT_BODY, headers={"content-type": "application/json", "x-request-id": "req_1"})

    return openai.OpenAI(api_key="sk-bench", base_url="http://bench.invalid/v1",
                         http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))


MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello"}]


def chat_call(client: openai.OpenAI) -> object:
    """The chat call every case makes."""
    return client.chat.completions.create(model="gpt-4o", messages=MESSAGES, temperature=0.2)


def stream_call(client: openai.OpenAI) -> list[object]:
    """The streamed chat call every stream case makes, read to its end."""
    return list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))


@contextlib.contextmanager
def instrumented(name: str) -> Iterator[None]:
    """hilt on (JSONL file ``name`` in a temporary folder, OpenAI only) for the ``with`` block."""
    with tempfile.TemporaryDirectory() as folder:
        hilt.instrument(filepath=str(Path(folder) / name), providers=["openai"])
        try:
            yield
        finally:
            hilt.uninstrument()


def settle() -> None:
    """Wait until the recorder thread sleeps (it lingers after its last task), and collect garbage, so one
    block's background work never runs in the next block (a block without hilt above all)."""
    gc.collect()
    deadline = time.monotonic() + 1.0
    while not _recorder._sleeping and time.monotonic() < deadline:
        time.sleep(0.005)


class Sample(NamedTuple):
    """One block's figures (see :func:`sample`)."""

    wall: float
    thread: float
    cpu: float
    backlog: int
    mean: float
    switches: float


def sample(fn: Callable[[], object], calls: int, flush: Callable[[], object] = hilt.flush) -> Sample:
    """One block of ``calls`` calls: the median wall time of a call on the caller's thread, the median CPU
    time of the caller's thread alone, and the process CPU time per call (all threads: what the recorder
    thread spends in the background counts here), all in µs; the recorder's tasks still waiting at the
    end of the block (done by ``hilt.flush()``, outside the per-call figures); the mean wall time of a
    call (where the median leaves out the calls the recorder's batches fell in, the mean shares them out);
    and the process's context switches per call (a thread blocking on the GIL, a lock or a sleep: each time
    the recorder and a caller that never waits hand the GIL to each other)."""
    settle()
    for _ in range(max(3, calls // 5)):
        fn()
    walls, threads = [], []
    gc.disable()
    try:
        cpu_start, switches_start = time.process_time(), context_switches()
        for _ in range(calls):
            start, thread_start = time.perf_counter(), time.thread_time()
            fn()
            threads.append((time.thread_time() - thread_start) * 1e6)
            walls.append((time.perf_counter() - start) * 1e6)
        backlog = len(_recorder._pending)
        switches = (context_switches() - switches_start) / calls
        flush()  # the recorder's work for these calls is inside the CPU figure (another tool's: its own flush)
        cpu = (time.process_time() - cpu_start) * 1e6 / calls
    finally:
        gc.enable()
    return Sample(statistics.median(walls), statistics.median(threads), cpu, backlog, statistics.fmean(walls), switches)


def paired_slope(long: list[float], short: list[float], chunks: int) -> float:
    """The median over paired blocks of (long stream's figure - short stream's) / ``chunks`` more chunks."""
    return statistics.median((a - b) / chunks for a, b in zip(long, short))


def context_switches() -> int:
    """The process's context switches so far, voluntary and not (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_nvcsw + usage.ru_nivcsw


def chunk_loop_us(rounds: int, chunks: int = 20_000) -> tuple[float, float]:
    """Per-chunk time of iterating an ``openai.Stream`` whose chunks are already parsed, plain and as hilt's
    recording subclass (same run, alternating): hilt's own per-chunk work without the SDK's ~100 µs parse."""
    from openai import Stream
    from openai.types.chat import ChatCompletionChunk

    from hilt.providers.openai import _OpenAICall, _recording_stream_class

    parsed = [ChatCompletionChunk.model_validate_json(data) for data in chunk_payloads(18)]
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


@contextlib.contextmanager
def recorder_held(call: Callable[[], object]) -> Iterator[None]:
    """After three warm-up calls, keep hilt's recorder from running for the ``with`` block (garbage collection
    off): a submit neither wakes it nor hands over, so its tasks wait for a ``hilt.flush()`` on this thread."""
    for _ in range(3):
        call()
    hilt.flush()
    settle()
    _recorder._sleeping, _recorder._heartbeat = False, None
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        _recorder._sleeping = True


def stream_work_per_chunk(rounds: int, lengths: tuple[int, int] = (20, 200)) -> tuple[float, float]:
    """hilt's work per stream chunk without the two threads' interplay: the recorder is kept from running while a
    block of streams goes on, and its tasks then run on the caller's thread (``hilt.flush()``). Returns the slope
    from the short to the long stream of the caller's median added wall time per call, and of the added CPU per
    call (the caller's during the block plus the recorder's tasks after it), paired without / with hilt."""
    clients = {n: make_client(n) for n in lengths}

    def block(n: int) -> tuple[float, float]:
        call = functools.partial(stream_call, clients[n])
        walls = []
        with recorder_held(call):
            cpu_start = time.thread_time()
            for _ in range(20 if n == lengths[0] else 5):
                start = time.perf_counter()
                call()
                walls.append((time.perf_counter() - start) * 1e6)
            hilt.flush()  # the recorder's tasks for the block, on this thread
            cpu = (time.thread_time() - cpu_start) * 1e6 / len(walls)
        return statistics.median(walls), cpu

    added: dict[int, list[tuple[float, float]]] = {n: [] for n in lengths}
    for round_ in range(rounds):
        for n in lengths:
            pair = {}
            for with_hilt in ((False, True) if round_ % 2 == 0 else (True, False)):
                with instrumented("work.jsonl") if with_hilt else contextlib.nullcontext():
                    pair[with_hilt] = block(n)
            added[n].append((pair[True][0] - pair[False][0], pair[True][1] - pair[False][1]))
    short, long = lengths

    def slope(index: int) -> float:
        return paired_slope([a[index] for a in added[long]], [b[index] for b in added[short]], long - short)

    return slope(0), slope(1)


#: Calls whose recorder tasks run together, for :func:`batched_tasks_us`.
BATCH_SIZES = (1, 2, 5, 10, 20)


def batched_tasks_us(rounds: int, calls: int = 40, sizes: tuple[int, ...] = BATCH_SIZES,
                     chunks: int = 200) -> dict[int, float]:
    """The recorder's work per call when the tasks of ``k`` streamed calls (``chunks`` chunks, server at once)
    run together, on the caller's thread right after the ``k``-th, for each ``k`` in ``sizes``: the first
    tasks after a long call find hilt's code and data gone from the CPU caches (the SDK's parse has evicted
    them), so a batch of many calls costs less per call than one of a single call. Medians over ``rounds``."""
    call = functools.partial(stream_call, make_client(chunks))
    per_call: dict[int, list[float]] = {k: [] for k in sizes}
    with instrumented("batches.jsonl"), recorder_held(call):
        for _ in range(rounds):
            for k in sizes:
                batches, spent = max(1, calls // k), 0.0
                for _ in range(batches):
                    for _ in range(k):
                        call()
                    start = time.perf_counter()
                    hilt.flush()
                    spent += time.perf_counter() - start
                per_call[k].append(spent * 1e6 / (batches * k))
    return {k: statistics.median(values) for k, values in per_call.items()}


def stream_read_us(rounds: int, chunks: int = 200) -> tuple[float, float]:
    """The recorder's read of a finished ``chunks``-chunk stream (its event's text, usage, finish reason), as
    hilt keeps the chunks (compacted: text-only chunks as their text) and with every chunk object kept,
    alternating."""
    from openai.types.chat import ChatCompletionChunk

    from hilt.providers._openai_payloads import ChatStreamState

    payloads = chunk_payloads(chunks)

    def run(every_chunk: bool) -> float:
        states = []
        for _ in range(20):
            state = ChatStreamState(time.perf_counter())
            for data in payloads:
                state.add(ChatCompletionChunk.model_validate_json(data))
            if not every_chunk:
                state.compact(1, len(state.chunks))  # done on the caller's thread as the stream goes on
            states.append(state)
        start = time.perf_counter()
        for state in states:
            state.facts(True)
        return (time.perf_counter() - start) * 1e6 / len(states)

    kept, every = [], []
    for _ in range(rounds):
        kept.append(run(False))
        every.append(run(True))
    return statistics.median(kept), statistics.median(every)


def chunk_memory_bytes(chunks: int = 1000) -> tuple[float, float]:
    """Memory per chunk of a chat stream: a parsed chunk object (``tracemalloc``, after a warm-up so the
    SDK's and pydantic's one-time allocations stay out), and what hilt keeps of a chunk that only carries
    text once it is compacted (its share of the joined string and of its slot in the list)."""
    import tracemalloc

    from openai.types.chat import ChatCompletionChunk

    wire = chunk_payloads(chunks)
    for data in wire:
        ChatCompletionChunk.model_validate_json(data)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        parsed = [ChatCompletionChunk.model_validate_json(data) for data in wire]
        whole = tracemalloc.get_traced_memory()[0] - before - sys.getsizeof(parsed)
    finally:
        tracemalloc.stop()
    from hilt.providers._openai_payloads import ChatStreamState

    state = ChatStreamState(0.0)
    state.chunks = list(parsed)
    state.compact(1, len(state.chunks))  # text-only runs joined, as hilt keeps them
    texts = sum(1 for chunk in parsed if chunk.choices and chunk.choices[0].delta.content)
    return whole / len(parsed), sum(sys.getsizeof(item) + 8 for item in state.chunks if item.__class__ is str) / texts


def caller_path_us(rounds: int, calls: int = 20_000) -> tuple[float, float]:
    """hilt's own work on the caller's thread per call, isolated: its ``request`` and ``_process_response``
    wrappers around stand-ins for the SDK's methods (which do nothing but hand over a read response), with the
    recorder's tasks dropped; against the stand-ins alone, alternating. Returns (plain, added) µs per call."""
    import hilt.providers.openai as openai_provider

    response = httpx2.Response(200, content=CHAT_BODY, headers={"content-type": "application/json", "x-request-id": "r"})
    response.read()

    def sdk_process_response(self: object, **kwargs: object) -> object:
        return kwargs["response"]

    def sdk_request(self: object, cast_to: object, options: object, *, stream: bool = False,
                    stream_cls: object = None, process: Callable[..., object] = sdk_process_response) -> object:
        return process(self, cast_to=cast_to, options=options, response=response, stream=stream,
                       stream_cls=stream_cls, retries_taken=0)

    wrapped_request = openai_provider._wrap_sync_request(
        functools.partial(sdk_request, process=openai_provider._wrap_process_response(sdk_process_response)))
    client = object()
    options = types.SimpleNamespace(url="/chat/completions", json_data={"model": "gpt-4o", "messages": MESSAGES})

    def run(request: Callable[..., object]) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            request(client, None, options)
        return (time.perf_counter() - start) * 1e6 / calls

    plain, added = [], []
    with instrumented("caller.jsonl"):
        real_submit, openai_provider.submit = openai_provider.submit, lambda task: None
        try:
            for _ in range(rounds):
                base = run(sdk_request)
                plain.append(base)
                added.append(run(wrapped_request) - base)
        finally:
            openai_provider.submit = real_submit
    return statistics.median(plain), statistics.median(added)


def recorder_share(calls: int = 1000) -> tuple[int, int]:
    """A loop of ``calls`` chat calls with the server answering at once (the caller's thread never waits): the
    recorder's tasks done while the loop ran, and the number submitted (two a call); the rest waits for a flush."""
    client = make_client(20)
    with instrumented("share.jsonl"):
        for _ in range(20):
            chat_call(client)
        hilt.flush()
        settle()
        for _ in range(calls):
            chat_call(client)
        left = len(_recorder._pending)
    return 2 * calls - left, 2 * calls


#: How the mock server answers: (label, seconds before the answer, seconds between stream chunks, stream lengths).
#: The paced server sends chunks as a model does, with the caller's thread idle between them.
SERVERS = (
    ("0 ms", 0.0, 0.0, (20, 200)),
    ("1 ms", 0.001, 0.0, (20, 200)),
    ("0.5 ms/chunk", 0.0, 0.0005, (20, 60)),
)
CASES = tuple((server, kind) for server, _, gap, lengths in SERVERS
              for kind in (() if gap else ("chat",)) + tuple(f"stream{n}" for n in lengths))


def label(kind: str) -> str:
    return "chat call" if kind == "chat" else f"stream, {kind[6:]} chunks"


def measure(blocks: int, calls_per_block: int, cases: tuple[tuple[str, str], ...] = CASES,
            ) -> tuple[dict[tuple[str, str], dict[str, list[float]]], int]:
    """Each case's paired figures over ``blocks`` pairs, and the number of events written."""
    functions: dict[tuple[str, str], Callable[[], object]] = {}
    calls: dict[tuple[str, str], int] = {}
    for server, latency, gap, lengths in SERVERS:
        for kind in (case[1] for case in cases if case[0] == server):
            client = make_client(int(kind[6:]) if kind != "chat" else 20, latency, gap)
            functions[server, kind] = functools.partial(chat_call if kind == "chat" else stream_call, client)
            short = kind in ("chat", "stream20") and not gap
            calls[server, kind] = calls_per_block if short else max(5, calls_per_block // 5)
    # The shared machine's speed moves by tens of percent within a second, so each case runs as many short
    # blocks, without and with hilt back to back, in ABBA order (drift inside a pair hits both sides alike);
    # each figure is the median over pairs of the paired difference (with minus without).
    names = ("base", "with", "added", "thread", "cpu", "backlog", "mean", "switches")
    rows = {case: {name: [] for name in names} for case in cases}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.jsonl"
        for block in range(blocks):
            for case in cases:
                measured = {}
                for with_hilt in ((False, True) if block % 2 == 0 else (True, False)):
                    if with_hilt:
                        hilt.instrument(filepath=str(path), providers=["openai"])
                    measured[with_hilt] = sample(functions[case], calls[case])
                    if with_hilt:
                        hilt.uninstrument()
                without, with_ = measured[False], measured[True]
                row = rows[case]
                row["base"].append(without.wall)
                row["with"].append(with_.wall)
                row["added"].append(with_.wall - without.wall)
                row["thread"].append(with_.thread - without.thread)
                row["cpu"].append(with_.cpu - without.cpu)
                row["backlog"].append(with_.backlog / calls[case])
                row["mean"].append(with_.mean - without.mean)
                row["switches"].append(with_.switches - without.switches)
        with open(path) as lines:
            written = sum(1 for _ in lines)
    return rows, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--blocks", type=int, default=40, help="paired blocks (without / with hilt) per case")
    parser.add_argument("--calls", type=int, default=25, help="calls per block (long and paced streams: a fifth, at least 5)")
    parser.add_argument("--chat-only", action="store_true",
                        help="only the chat calls (a long run of those in the time of a short full one)")
    args = parser.parse_args()
    cases = tuple(case for case in CASES if case[1] == "chat") if args.chat_only else CASES
    rows, written = measure(args.blocks, args.calls, cases)
    done, submitted = recorder_share(max(20, 40 * args.calls))
    plain_path, caller_path = caller_path_us(15)
    print(f"hilt overhead benchmark — {time.strftime('%Y-%m-%d')}, Python {platform.python_version()}, "
          f"{platform.machine()}, openai {openai.__version__}; {args.blocks} paired blocks; {written} events written")
    print(f"{'server':<16}{'case':<20}{'without µs':>12}{'added µs':>10}{'ratio':>7}"
          f"{'caller CPU µs':>15}{'added CPU µs':>14}{'left/call':>11}{'switches/call':>15}")
    for case in cases:
        m = {name: statistics.median(values) for name, values in rows[case].items()}
        print(f"{case[0]:<16}{label(case[1]):<20}{m['base']:>12.1f}{m['added']:>10.1f}"
              f"{(m['base'] + m['added']) / m['base']:>7.3f}{m['thread']:>15.1f}{m['cpu']:>14.1f}"
              f"{m['backlog']:>11.2f}{m['switches']:>15.2f}")
    print(f"recorder's tasks done during {submitted // 2} chat calls in a row (server at once): {done} of {submitted}")
    print(f"hilt's own work on the caller's thread per call (isolated, SDK stubbed, recorder tasks dropped): "
          f"{caller_path:.2f} µs over {plain_path:.2f} µs plain")
    if not args.chat_only:
        report_streams(rows, rounds=max(2, min(30, args.blocks)))  # a short run (--blocks 1) stays short
    print("'added' is the caller's median wall time per call, with minus without (what the LLM call takes longer);")
    print("'caller CPU' the same for the CPU time of the caller's thread alone; 'added CPU' the process CPU per")
    print("call over all threads, the recorder thread's background work included; 'left/call' the recorder's")
    print("tasks still waiting per call at the end of a block (done by hilt.flush(), outside the per-call times);")
    print("'switches/call' the process's added context switches per call (the GIL handed between the threads).")


def report_streams(rows: dict[tuple[str, str], dict[str, list[float]]], rounds: int = 30) -> None:
    """The per-chunk lines: end-to-end slopes, hilt's own per-chunk work (``rounds`` pairs), the recorder's read,
    memory."""
    for server, _, _, (short, long) in SERVERS:
        def slope(name: str) -> float:
            return paired_slope(rows[server, f"stream{long}"][name], rows[server, f"stream{short}"][name], long - short)

        added = slope("added")
        plain = slope("base")  # a chunk's time without hilt, same run (the paced server's gap in it): the ratio's baseline
        share = 100 * added / plain if plain > 0 else float("nan")
        print(f"added per stream chunk, server {server} (slope {short}→{long} chunks): {added:.2f} µs wall "
              f"({share:.2f}% of the {plain:.1f} µs a chunk takes without hilt), "
              f"{slope('mean'):.2f} µs wall by means, {slope('thread'):.2f} µs caller CPU, {slope('cpu'):.2f} µs process CPU, "
              f"{100 * slope('switches'):.2f} context switches per 100 chunks")
    work_wall, work_cpu = stream_work_per_chunk(rounds)
    print(f"hilt's work per stream chunk, the recorder's tasks run after each block (no interplay of the two threads; "
          f"slope 20→200 chunks): {work_wall:.2f} µs caller wall, {work_cpu:.2f} µs CPU with the recorder's tasks")
    batches = batched_tasks_us(max(1, min(3, rounds // 10)), calls=40 if rounds >= 10 else 20)
    print("recorder's work per call after a 200-chunk stream (server at once), by calls per batch: "
          + ", ".join(f"{k}: {us:.1f} µs" for k, us in batches.items()))
    plain_chunk, added_chunk = chunk_loop_us(15)
    print(f"added per chunk, chunks already parsed (isolated): {added_chunk:.3f} µs over {plain_chunk:.3f} µs plain")
    read_kept, read_every = stream_read_us(15)
    print(f"recorder's read of a 200-chunk stream: {read_kept:.1f} µs as hilt keeps it, {read_every:.1f} µs with "
          f"every chunk kept (ratio {read_kept / read_every:.2f})")
    chunk_bytes, text_bytes = chunk_memory_bytes()
    print(f"memory per chunk: {chunk_bytes:,.0f} bytes parsed, {text_bytes:,.0f} bytes as the text hilt keeps")


if __name__ == "__main__":
    main()

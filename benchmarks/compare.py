"""hilt beside the OpenTelemetry-based OpenAI instrumentations, on the harness of ``overhead.py``, in one run.

The real SDK on ``httpx2.MockTransport`` answering at once: a chat call and 20- and 200-chunk chat streams.
Every tool writes its records to a local file in the background, content capture on: hilt its JSONL events,
the OpenTelemetry ones their spans as JSON lines through a ``BatchSpanProcessor`` (flushed at the end of each
block, as hilt is). Each block runs in a fresh process, turned on once: one of these instrumentations stacks
its wrappers on every instrument/uninstrument cycle, so a tool can't be switched off and on in one process.
A block with a tool is paired with a block without any, back to back, in ABBA order over the blocks.
The tools other than hilt are optional: ``pip install -e ".[compare]"``; a missing one is reported, not run.
Run: ``python benchmarks/compare.py`` (``--blocks``, ``--calls``).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import openai

import hilt
from overhead import chat_call, make_client, paired_slope, sample, stream_call

#: pip package -> the module with its ``OpenAIInstrumentor``
OTEL_TOOLS = {
    "opentelemetry-instrumentation-openai-v2": "opentelemetry.instrumentation.openai_v2",
    "openinference-instrumentation-openai": "openinference.instrumentation.openai",
    "opentelemetry-instrumentation-openai": "opentelemetry.instrumentation.openai",
}
#: How opentelemetry-instrumentation-openai-v2 is told to put message content on its spans.
V2_CONTENT = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY",
              "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental"}
#: (case, stream length or ``None`` for the chat call)
CASES = (("chat call", None), ("stream, 20 chunks", 20), ("stream, 200 chunks", 200))
NONE = "none"


def turn_on(tool: str, folder: Path) -> Callable[[], object]:
    """Instrument the SDK with ``tool`` (``none``: nothing); returns what finishes its background work."""
    if tool == NONE:
        return lambda: None
    if tool == "hilt":
        hilt.instrument(filepath=str(folder / "hilt.jsonl"), providers=["openai"])
        return hilt.flush
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    spans = open(folder / "spans.jsonl", "w")  # noqa: SIM115 - the worker's whole life
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(
        ConsoleSpanExporter(out=spans, formatter=lambda span: span.to_json(indent=None) + "\n")))
    importlib.import_module(OTEL_TOOLS[tool]).OpenAIInstrumentor().instrument(tracer_provider=provider)
    return provider.force_flush


def worker(tool: str, calls: int) -> None:
    """One block in this process: each case's median wall time and process CPU per call, as a JSON line."""
    os.environ.update(V2_CONTENT)
    with tempfile.TemporaryDirectory() as folder:
        flush = turn_on(tool, Path(folder))
        figures = {}
        for case, length in CASES:
            function = functools.partial(stream_call if length else chat_call, make_client(length or 20))
            for _ in range(3):  # first use: imports, price tables, caches
                function()
            flush()
            measured = sample(function, calls if length != 200 else max(5, calls // 5), flush=flush)
            figures[case] = {"wall": measured.wall, "cpu": measured.cpu}
        print(json.dumps(figures))


def block(tool: str, calls: int) -> dict[str, dict[str, float]]:
    result = subprocess.run([sys.executable, __file__, "--worker", tool, "--calls", str(calls)],
                            capture_output=True, text=True, timeout=600, cwd=Path(__file__).parent)
    if result.returncode != 0:
        raise RuntimeError(f"{tool}: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'failed'}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def available(tool: str) -> str | None:
    """``None`` when ``tool`` runs here, else why not."""
    try:
        importlib.import_module(OTEL_TOOLS[tool]).OpenAIInstrumentor  # noqa: B018 - the import is the check
        importlib.import_module("opentelemetry.sdk.trace")
    except Exception as exc:  # not installed, or not importable beside this SDK
        return f"{type(exc).__name__}: {exc}"
    return None


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def measure(tools: list[str], blocks: int, calls: int) -> dict[tuple[str, str], dict[str, list[float]]]:
    """Per tool and case, over ``blocks`` pairs: the wall time without any tool, and with minus without."""
    rows = {(tool, case): {"base": [], "added": [], "cpu": []} for tool in tools for case, _ in CASES}
    for index in range(blocks):
        for tool in tools:
            pair = {}
            for name in ((NONE, tool) if index % 2 == 0 else (tool, NONE)):
                pair[name] = block(name, calls)
            for case, _ in CASES:
                row, without, with_ = rows[tool, case], pair[NONE][case], pair[tool][case]
                row["base"].append(without["wall"])
                row["added"].append(with_["wall"] - without["wall"])
                row["cpu"].append(with_["cpu"] - without["cpu"])
    return rows


def report(rows: dict[tuple[str, str], dict[str, list[float]]], tools: list[str]) -> None:
    print(f"{'tool':<42}{'case':<20}{'without µs':>12}{'added µs':>10}{'ratio':>7}{'added CPU µs':>14}{'× hilt':>8}")
    medians = {key: {name: statistics.median(values) for name, values in row.items()} for key, row in rows.items()}
    for tool in tools:
        for case, _ in CASES:
            m, mine = medians[tool, case], medians["hilt", case]
            times = m["added"] / mine["added"] if mine["added"] > 0 else float("nan")
            print(f"{tool:<42}{case:<20}{m['base']:>12.1f}{m['added']:>10.1f}"
                  f"{(m['base'] + m['added']) / m['base']:>7.3f}{m['cpu']:>14.1f}{times:>8.1f}")
    for tool in tools:
        slope = paired_slope(rows[tool, "stream, 200 chunks"]["added"], rows[tool, "stream, 20 chunks"]["added"], 180)
        print(f"added per stream chunk, {tool} (slope 20→200 chunks): {slope:.2f} µs wall")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--blocks", type=int, default=10, help="paired blocks (without / with the tool) per tool")
    parser.add_argument("--calls", type=int, default=25, help="calls per block and case (200 chunks: a fifth, at least 5)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.calls)
        return
    missing = {tool: why for tool in OTEL_TOOLS if (why := available(tool)) is not None}
    tools = ["hilt", *(tool for tool in OTEL_TOOLS if tool not in missing)]
    rows = measure(tools, args.blocks, args.calls)
    versions = "".join(f"; {tool} {version(tool)}" for tool in tools[1:])
    print(f"hilt beside OpenTelemetry-based instrumentations — {time.strftime('%Y-%m-%d')}, Python "
          f"{platform.python_version()}, {platform.machine()}, openai {openai.__version__}; {args.blocks} paired "
          f"blocks{versions}")
    report(rows, tools)
    for tool, why in missing.items():
        print(f"{tool}: not run ({why}; pip install -e \".[compare]\")")
    print("'added' is the caller's median wall time per call with the tool minus without any, paired block by block")
    print("(each block a fresh process); 'added CPU' the process CPU per call over all threads, background export")
    print("included; '× hilt' the tool's added time over hilt's, same case, same run.")


if __name__ == "__main__":
    main()

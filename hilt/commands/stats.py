"""``hilt stats FILE...``: calls, errors, tokens, cost and latency percentiles of one or more logs.

The loop is lean on purpose: each line is parsed with ``orjson`` and only the few fields needed are
read (no ``Event`` objects), so a million events take a few seconds.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from typing import Any

import orjson

from ..formatting import loads_line
from ._files import expand, guard_read_error, open_log

__all__ = ["add_parser", "run", "compute"]

TOKEN_KEYS = ("prompt", "completion", "total", "cached", "reasoning")
BY_CHOICES = ("model", "conversation", "day", "user", "status")
NONE_KEY = "(none)"
NO_RESPONSE = "(no response)"


class _Group:
    """The running totals of one group (or of the whole log when there is no ``--by``)."""

    __slots__ = ("closing", "orphans", "errors", "error_status", "tokens", "cost", "cost_unknown", "latency", "ttft")

    def __init__(self) -> None:
        self.closing = 0  # completion and error events
        self.orphans = 0  # prompts whose call has no closing event (in flight, or the process died)
        self.errors = 0
        self.error_status: dict[str, int] = {}
        self.tokens = [0, 0, 0, 0, 0]
        self.cost = 0.0
        self.cost_unknown = 0
        self.latency: list[float] = []
        self.ttft: list[float] = []

    def merge(self, other: _Group) -> None:
        self.closing += other.closing
        self.orphans += other.orphans
        self.errors += other.errors
        for status, count in other.error_status.items():
            self.error_status[status] = self.error_status.get(status, 0) + count
        self.tokens = [a + b for a, b in zip(self.tokens, other.tokens)]
        self.cost += other.cost
        self.cost_unknown += other.cost_unknown
        self.latency.extend(other.latency)
        self.ttft.extend(other.ttft)

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.closing + self.orphans,
            "errors": self.errors,
            "errors_by_status": dict(sorted(self.error_status.items())),
            "tokens": dict(zip(TOKEN_KEYS, self.tokens)),
            "cost_usd": round(self.cost, 12),
            "cost_unknown": self.cost_unknown,
            "latency_ms": percentiles(self.latency),
            "ttft_ms": percentiles(self.ttft),
        }


def model_of(data: dict[str, Any], ext: dict[str, Any], action: Any) -> Any:
    """The model a closing event counts under: the requested one, else the response's, else a completion's actor."""
    actor = data.get("actor") or {}
    return ext.get("model") or ext.get("response_model") or (actor.get("id") if action == "completion" else None)


def percentiles(values: list[float]) -> dict[str, float | None]:
    """Nearest-rank p50/p95/p99 (each a value that occurred); ``None`` for no values."""
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    ordered = sorted(values)
    n = len(ordered)
    return {name: ordered[max(0, math.ceil(q * n) - 1)] for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))}


class _Scan:
    """Everything one pass over the files gathers."""

    def __init__(self, by: str | None, observer: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.by = by
        self.observer = observer  # sees every event dict first (``hilt report`` builds its series this way)
        self.groups: dict[str, _Group] = {}
        self.prompt_keys: dict[Any, str] = {}  # call_id -> the group of its prompt
        self.closed: set[Any] = set()  # call_ids that have a completion or error event
        self.events = 0
        self.other = 0  # events that are neither prompts nor closing events (tool calls, audit, ...)
        self.skipped = 0  # lines that are not JSON objects or hold wrong types
        self.first_skipped: str | None = None
        self.versions: dict[Any, int] = {}
        self.file_errors: list[str] = []


class Progress:
    """A one-line progress bar on stderr for large inputs, shown only when stderr is a terminal."""

    MIN_BYTES = 32 * 1024 * 1024
    EVERY_LINES = 1 << 16  # how often the hot loop asks for an update

    def __init__(self, paths: list[str], stream: Any = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        sizes = []
        for path in paths:
            try:
                sizes.append(os.path.getsize(path))
            except OSError:
                sizes.append(0)
        self.total = sum(sizes)
        self.enabled = self.total >= self.MIN_BYTES and bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = 0  # bytes of the files already finished

    def update(self, handle: Any) -> None:
        """Redraw from the current file's position (compressed bytes for gzip files)."""
        raw = getattr(handle, "fileobj", None) or handle
        try:
            position = raw.tell()
        except (OSError, ValueError):
            return
        share = min(1.0, (self.done + position) / self.total) if self.total else 1.0
        filled = int(share * 30)
        self.stream.write(f"\rhilt stats [{'#' * filled}{'.' * (30 - filled)}] {share * 100:5.1f}%")
        self.stream.flush()

    def file_done(self, path: str) -> None:
        try:
            self.done += os.path.getsize(path)
        except OSError:
            pass

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 50 + "\r")
            self.stream.flush()


def _scan_file(path: str, scan: _Scan, progress: Progress | None = None) -> None:
    """Add one file's events to ``scan``: the hot loop."""
    by = scan.by
    groups = scan.groups
    prompt_keys = scan.prompt_keys
    closed = scan.closed
    versions = scan.versions
    loads = orjson.loads  # the fast path; loads_line only for the lines it refuses
    observe = scan.observer
    group = groups.get("")
    if by is None and group is None:
        group = groups[""] = _Group()
    events = other = skipped = number = 0
    nonblank = 0
    first_skipped = None
    empty: dict[str, Any] = {}
    handle = open_log(path)
    try:
        with handle:
            for line in handle:
                number += 1
                if progress is not None and not number % Progress.EVERY_LINES:
                    progress.update(handle)
                try:
                    try:
                        data = loads(line)
                    except orjson.JSONDecodeError:
                        data = loads_line(line)  # lone-surrogate escapes hilt itself writes
                    action = data.get("action")
                except (orjson.JSONDecodeError, AttributeError):
                    if line.strip():
                        nonblank += 1
                        skipped += 1
                        if first_skipped is None:
                            first_skipped = f"{path}:{number}"
                    continue
                nonblank += 1
                try:
                    events += 1
                    if observe is not None:
                        observe(data)
                    version = data.get("hilt_version")
                    versions[version] = versions.get(version, 0) + 1
                    ext = data.get("extensions") or empty
                    if action == "prompt":
                        cid = ext.get("call_id")
                        if cid is not None:
                            if by is None:
                                key = ""
                            elif by == "model":
                                key = ext.get("model") or NONE_KEY
                            elif by == "conversation":
                                key = data.get("session_id") or NONE_KEY
                            elif by == "day":
                                key = (data.get("timestamp") or NONE_KEY)[:10]
                            elif by == "user":
                                actor = data.get("actor") or empty
                                key = ext.get("user_id") or (actor.get("id") if actor.get("type") == "human" else None) or NONE_KEY
                            else:
                                key = NO_RESPONSE
                            prompt_keys[cid] = key
                        continue
                    if action == "completion":
                        error = False
                    elif action == "system" and "error" in ext:
                        error = True
                    else:
                        other += 1
                        continue
                    cid = ext.get("call_id")
                    if cid is not None:
                        closed.add(cid)
                    status = ext.get("status_code")
                    if by is not None:
                        if by == "model":
                            key = model_of(data, ext, action) or NONE_KEY
                        elif by == "conversation":
                            key = data.get("session_id") or NONE_KEY
                        elif by == "day":
                            key = (data.get("timestamp") or NONE_KEY)[:10]
                        elif by == "user":
                            key = ext.get("user_id") or prompt_keys.get(cid) or NONE_KEY
                        else:
                            key = NONE_KEY if status is None else str(status)
                        group = groups.get(key)
                        if group is None:
                            group = groups[key] = _Group()
                    metrics = data.get("metrics")
                    if metrics:
                        tokens = metrics.get("tokens")
                        if tokens:
                            sums = group.tokens  # type: ignore[union-attr]
                            value = tokens.get("prompt")
                            if value is not None:
                                sums[0] += value
                            value = tokens.get("completion")
                            if value is not None:
                                sums[1] += value
                            value = tokens.get("total")
                            if value is not None:
                                sums[2] += value
                            value = tokens.get("cached")
                            if value is not None:
                                sums[3] += value
                            value = tokens.get("reasoning")
                            if value is not None:
                                sums[4] += value
                        value = metrics.get("cost_usd")
                        if value is None:
                            group.cost_unknown += 1  # type: ignore[union-attr]
                        else:
                            group.cost += value  # type: ignore[union-attr]
                        value = metrics.get("latency_ms")
                        if value is not None:
                            group.latency.append(value)  # type: ignore[union-attr]
                        value = metrics.get("ttft_ms")
                        if value is not None:
                            group.ttft.append(value)  # type: ignore[union-attr]
                    else:
                        group.cost_unknown += 1  # type: ignore[union-attr]
                    group.closing += 1  # last, so a line with a wrong type is not counted as a call  # type: ignore[union-attr]
                    if error or (status is not None and status >= 400):
                        group.errors += 1  # type: ignore[union-attr]
                        skey = NONE_KEY if status is None else str(status)
                        es = group.error_status  # type: ignore[union-attr]
                        es[skey] = es.get(skey, 0) + 1
                except (AttributeError, TypeError):
                    skipped += 1  # a JSON value of the wrong type (a string for a number, a list for an object)
                    if first_skipped is None:
                        first_skipped = f"{path}:{number}"
    except (OSError, EOFError) as exc:
        raise guard_read_error(path, exc) from None
    scan.events += events
    scan.other += other
    scan.skipped += skipped
    if scan.first_skipped is None:
        scan.first_skipped = first_skipped
    if nonblank and not events:
        scan.file_errors.append(f"{path}: not a hilt JSONL log (no line is a JSON object)")
    elif not nonblank:
        scan.file_errors.append(f"{path}: empty file (no events)")


def compute(
    paths: list[str],
    by: str | None = None,
    progress: Progress | None = None,
    observer: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[dict[str, Any], _Scan]:
    """The statistics of the files as the JSON-ready dict ``hilt stats --json`` prints.

    ``observer`` is called with every event dict (before it is counted), for callers that gather more.
    """
    scan = _Scan(by, observer)
    active = progress if progress is not None and progress.enabled else None
    for path in paths:
        _scan_file(path, scan, active)
        if active is not None:
            active.file_done(path)
    if active is not None:
        active.finish()
    for cid, key in scan.prompt_keys.items():
        if cid not in scan.closed:
            group = scan.groups.get(key)
            if group is None:
                group = scan.groups[key] = _Group()
            group.orphans += 1
    total = _Group()
    for group in scan.groups.values():
        total.merge(group)
    result: dict[str, Any] = {"files": len(paths), "events": scan.events, **total.to_dict()}
    if scan.skipped:
        result["skipped_lines"] = scan.skipped
    if by is not None:
        result["by"] = by
        ordered = sorted(scan.groups.items(), key=lambda item: (-(item[1].closing + item[1].orphans), item[0]))
        result["groups"] = {key: group.to_dict() for key, group in ordered}
    return result, scan


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _cost(value: float) -> str:
    return f"{value:.10f}".rstrip("0").rstrip(".") if value else "0"


def render_text(result: dict[str, Any]) -> str:
    tokens = result["tokens"]
    lat, ttft = result["latency_ms"], result["ttft_ms"]
    errors = ", ".join(f"{status}: {count}" for status, count in result["errors_by_status"].items())
    unknown = f"  ({result['cost_unknown']} calls without a price)" if result["cost_unknown"] else ""
    lines = [
        f"files       {result['files']}   events {result['events']}",
        f"calls       {result['calls']}",
        f"errors      {result['errors']}" + (f"   by status: {errors}" if errors else ""),
        "tokens      " + "  ".join(f"{key} {tokens[key]}" for key in TOKEN_KEYS),
        f"cost_usd    {_cost(result['cost_usd'])}{unknown}",
        "latency_ms  " + "  ".join(f"{key} {_number(lat[key])}" for key in ("p50", "p95", "p99")),
        "ttft_ms     " + "  ".join(f"{key} {_number(ttft[key])}" for key in ("p50", "p95", "p99")),
    ]
    if "groups" in result:
        header = (result["by"], "calls", "errors", "tokens", "cost_usd", "p50_ms", "p95_ms", "p99_ms")
        rows = [
            (key, str(g["calls"]), str(g["errors"]), str(g["tokens"]["total"]), _cost(g["cost_usd"]),
             _number(g["latency_ms"]["p50"]), _number(g["latency_ms"]["p95"]), _number(g["latency_ms"]["p99"]))
            for key, g in result["groups"].items()
        ]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines.append("")
        for row in [header, *rows]:
            cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
            lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def add_parser(commands: Any) -> None:
    """Add ``stats`` to the subcommands."""
    parser = commands.add_parser(
        "stats", help="calls, errors, tokens, cost and latency of one or more logs",
        description="Calls, errors, tokens, cost and latency percentiles of JSONL logs (globs, rotated and .gz files).",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="log files or globs ('logs/app.jsonl*')")
    parser.add_argument("--by", choices=BY_CHOICES, help="also break the figures down by this key")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """``hilt stats``: print the figures; exit 1 when a file is not a log (or holds no event)."""
    paths = expand(args.files)
    result, scan = compute(paths, args.by, Progress(paths))
    if args.json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
    else:
        print(render_text(result))
    status = 0
    for message in scan.file_errors:
        print(f"hilt stats: {message}", file=sys.stderr)
        if "not a hilt JSONL log" in message:
            status = 1
    if scan.skipped:
        print(f"hilt stats: {scan.skipped} unreadable lines skipped (first at {scan.first_skipped}); "
              "'hilt verify' lists them", file=sys.stderr)
    known = [v for v in scan.versions if v is not None]
    if len(scan.versions) > 1:
        mix = ", ".join(f"{v if v is not None else 'missing'} ({n} events)" for v, n in sorted(scan.versions.items(), key=lambda i: str(i[0])))
        print(f"hilt stats: mixed schema versions: {mix}", file=sys.stderr)
    elif known and not str(known[0]).startswith("1."):
        print(f"hilt stats: schema version {known[0]!r} is not one this hilt knows (1.x); figures may be incomplete", file=sys.stderr)
    return status

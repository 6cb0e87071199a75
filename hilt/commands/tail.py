"""``hilt tail [-f] FILE``: the last events of a log as readable lines, optionally following it.

Colours only when stdout is a terminal and ``NO_COLOR`` is unset. ``--json`` passes the matching
lines through unchanged. ``-f`` polls the file every 0.2 s and reopens it when it is rotated
(its inode changes) or truncated.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from typing import IO, Any


from ..formatting import loads_line
from ._files import CLIError, expand, guard_read_error, is_gzip, open_log

__all__ = ["add_parser", "run", "format_event"]

POLL_SECONDS = 0.2
_RESET = "\x1b[0m"
_COLOURS = {"prompt": "\x1b[36m", "completion": "\x1b[32m", "error": "\x1b[31m", "dim": "\x1b[2m"}


def _cut(text: Any, width: int) -> str:
    value = "-" if text is None or text == "" else str(text)
    return value if len(value) <= width else value[: width - 1] + "…"


def format_event(data: dict[str, Any], colour: bool = False) -> str:
    """One readable line: time, conversation, actor, action, model, tokens, cost, latency, status, text."""
    ext = data.get("extensions") if isinstance(data.get("extensions"), dict) else {}
    metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
    actor = data.get("actor") if isinstance(data.get("actor"), dict) else {}
    content = data.get("content") if isinstance(data.get("content"), dict) else {}
    tokens = metrics.get("tokens") if isinstance(metrics.get("tokens"), dict) else {}
    timestamp = str(data.get("timestamp") or "-")[:19].replace("T", " ")
    actor_text = f"{actor.get('type') or '-'}:{actor.get('id') or '-'}"
    action = str(data.get("action") or "-")
    total = tokens.get("total")
    cost = metrics.get("cost_usd")
    latency = metrics.get("latency_ms")
    status = ext.get("status_code")
    text = content.get("text")
    if text is None and isinstance(ext.get("error"), dict):
        text = ext["error"].get("message")
    text = " ".join(str(text).split())[:60] if text is not None else ""
    cells = [
        timestamp.ljust(19),
        _cut(data.get("session_id"), 22).ljust(22),
        _cut(actor_text, 26).ljust(26),
        _cut(action, 10).ljust(10),
        _cut(ext.get("model") or ext.get("response_model"), 22).ljust(22),
        ("-" if total is None else f"{total}tok").rjust(7),
        ("-" if not isinstance(cost, (int, float)) else f"${cost:.7f}").rjust(10),
        ("-" if not isinstance(latency, (int, float)) else f"{latency:.0f}ms").rjust(7),
        ("-" if status is None else str(status)).rjust(3),
        text,
    ]
    line = "  ".join(cells).rstrip()
    if colour:
        failed = (action == "system" and "error" in ext) or (isinstance(status, int) and status >= 400)
        code = _COLOURS["error"] if failed else _COLOURS.get(action, "")
        if code:
            line = f"{code}{line}{_RESET}"
    return line


class _Filter:
    """``--model``, ``--status``, ``--action``: an event is shown when it matches all that are given."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.model = args.model
        self.status = args.status
        self.action = args.action

    def __call__(self, data: dict[str, Any]) -> bool:
        ext = data.get("extensions") if isinstance(data.get("extensions"), dict) else {}
        if self.action is not None and data.get("action") != self.action:
            return False
        if self.model is not None and self.model not in (ext.get("model"), ext.get("response_model")):
            return False
        if self.status is not None:
            status = ext.get("status_code")
            if status is None:
                return False
            if self.status.endswith("xx"):
                return str(status)[:1] == self.status[:1]
            return str(status) == self.status
        return True


class _Printer:
    def __init__(self, path: str, args: argparse.Namespace) -> None:
        self.path = path
        self.json = args.json
        self.accept = _Filter(args)
        self.colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        self.printed = 0

    def parse(self, number: int, raw: bytes) -> dict[str, Any] | None:
        """The event of a line when it is shown; reports an unreadable line on stderr."""
        if not raw.strip():
            return None
        try:
            data = loads_line(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            print(f"{self.path}:{number}: malformed line skipped", file=sys.stderr)
            return None
        return data if self.accept(data) else None

    def show(self, raw: bytes, data: dict[str, Any]) -> None:
        if self.json:
            sys.stdout.write(raw.decode("utf-8", "replace").rstrip("\n") + "\n")
        else:
            sys.stdout.write(format_event(data, self.colour) + "\n")
        sys.stdout.flush()
        self.printed += 1


def _lines(handle: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    return enumerate(handle, start=1)


def _follow(path: str, printer: _Printer, handle: IO[bytes], number: int, args: argparse.Namespace) -> None:
    """Print lines appended to ``path`` until interrupted, ``--max-events`` or ``--timeout``."""
    inode = os.fstat(handle.fileno()).st_ino
    pending = b""
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    try:
        while True:
            if args.max_events is not None and printer.printed >= args.max_events:
                return
            chunk = handle.readline()
            if chunk:
                pending += chunk
                if not pending.endswith(b"\n"):
                    continue  # a line still being written: wait for its end
                number += 1
                data = printer.parse(number, pending)
                if data is not None:
                    printer.show(pending, data)
                pending = b""
                continue
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(POLL_SECONDS)
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                continue  # rotated away, the new file is not there yet
            if stat.st_ino != inode or stat.st_size < handle.tell():
                handle.close()
                handle = open(path, "rb")  # noqa: SIM115 - closed on the next rotation or at exit
                inode, number, pending = os.fstat(handle.fileno()).st_ino, 0, b""
    finally:
        handle.close()


def add_parser(commands: Any) -> None:
    """Add ``tail`` to the subcommands."""
    parser = commands.add_parser(
        "tail", help="show the last events of a log as readable lines; -f follows it",
        description="Show the last events of a JSONL log as readable lines (or raw with --json); -f follows it.",
    )
    parser.add_argument("file", metavar="FILE", help="the log file")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing lines as they are appended")
    parser.add_argument("-n", "--lines", type=int, default=10, metavar="N", help="show the last N matching events (default 10)")
    parser.add_argument("--json", action="store_true", help="print the matching lines as they are (JSONL)")
    parser.add_argument("--model", help="only events for this model (requested or response model)")
    parser.add_argument("--status", help="only events with this status code ('429', or a class such as '5xx')")
    parser.add_argument("--action", help="only events with this action (prompt, completion, system, ...)")
    parser.add_argument("--max-events", type=int, metavar="N", help="with -f: stop after printing N events in all")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="with -f: stop after this many seconds")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """``hilt tail``: print the last ``-n`` matching events, then follow with ``-f``."""
    paths = expand([args.file])
    if len(paths) != 1:
        raise CLIError(f"{args.file}: matches {len(paths)} files; tail reads one")
    path = paths[0]
    if args.lines < 0:
        raise CLIError(f"-n: expected a number of lines >= 0, got {args.lines}")
    if args.follow and is_gzip(path):
        raise CLIError(f"{path}: a gzip file cannot grow; drop -f to read it")
    printer = _Printer(path, args)
    last: deque[tuple[bytes, dict[str, Any]]] = deque(maxlen=args.lines)
    number = 0
    handle = open_log(path)
    try:
        for number, raw in _lines(handle):
            if args.follow and not raw.endswith(b"\n"):
                handle.seek(handle.tell() - len(raw))  # a line being written: the follow loop reads it whole
                number -= 1
                break
            data = printer.parse(number, raw)
            if data is not None:
                last.append((raw, data))
    except (OSError, EOFError) as exc:
        handle.close()
        raise guard_read_error(path, exc) from None
    for raw, data in last:
        printer.show(raw, data)
    if not args.follow:
        handle.close()
        return 0
    _follow(path, printer, handle, number, args)
    return 0

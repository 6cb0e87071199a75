"""``hilt verify FILE...``: check every line against the event schema and the links between events.

Each problem is printed as ``path:line: message``, then one summary line; the exit status is 0 only
when there is no problem (1 when there are, 2 when a file cannot be read at all).
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime
from typing import Any


from ..events import ACTIONS, TOKEN_KEYS
from ..formatting import loads_line
from ._files import expand, guard_read_error, open_log

__all__ = ["add_parser", "run", "check"]

_ACTION = re.compile(r"[a-z][a-z0-9_]{0,63}")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z")
_METRIC_NUMBERS = ("cost_usd", "latency_ms", "ttft_ms")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _line_problems(data: Any) -> list[str]:
    """What is wrong with one parsed line, as messages (empty when the event is well formed)."""
    if not isinstance(data, dict):
        return [f"not a JSON object (a JSON {type(data).__name__})"]
    problems = []
    version = data.get("hilt_version")
    if version is None:
        problems.append("missing hilt_version")
    elif not isinstance(version, str):
        problems.append(f"hilt_version: expected a string, got {version!r}")
    event_id = data.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        problems.append("missing event_id" if event_id is None else f"event_id: expected a string, got {event_id!r}")
    timestamp = data.get("timestamp")
    if not isinstance(timestamp, str) or not _TIMESTAMP.fullmatch(timestamp) or not _valid_date(timestamp):
        problems.append(f"timestamp: expected UTC ISO 8601 with Z ('2025-01-31T09:14:03.512406Z'), got {timestamp!r}")
    action = data.get("action")
    if not isinstance(action, str) or (action not in ACTIONS and not _ACTION.fullmatch(action)):
        problems.append(f"action: {action!r} is not a valid action (a lower-case name such as 'prompt')")
    for key in ("actor", "content", "metrics", "extensions"):
        value = data.get(key)
        if value is not None and not isinstance(value, dict):
            problems.append(f"{key}: expected an object, got {type(value).__name__}")
    session_id = data.get("session_id")
    if session_id is not None and not isinstance(session_id, str):
        problems.append(f"session_id: expected a string, got {session_id!r}")
    metrics = data.get("metrics")
    if isinstance(metrics, dict):
        tokens = metrics.get("tokens")
        if tokens is not None and not isinstance(tokens, dict):
            problems.append(f"metrics.tokens: expected an object, got {type(tokens).__name__}")
        elif tokens:
            for key in TOKEN_KEYS:
                value = tokens.get(key)
                if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                    problems.append(f"metrics.tokens.{key}: expected a count (integer >= 0) or null, got {value!r}")
        for key in _METRIC_NUMBERS:
            value = metrics.get(key)
            if value is not None and not _is_number(value):
                problems.append(f"metrics.{key}: expected a number or null, got {value!r}")
    extensions = data.get("extensions")
    if isinstance(extensions, dict):
        status = extensions.get("status_code")
        if status is not None and (not isinstance(status, int) or isinstance(status, bool)):
            problems.append(f"extensions.status_code: expected an integer, got {status!r}")
        for key in ("call_id", "reply_to"):
            value = extensions.get(key)
            if value is not None and not isinstance(value, str):
                problems.append(f"extensions.{key}: expected a string, got {value!r}")
    return problems


def _valid_date(timestamp: str) -> bool:
    try:
        datetime.fromisoformat(timestamp[:-1])
    except ValueError:
        return False
    return True


def check(paths: list[str]) -> tuple[list[tuple[int, int, str]], int, dict[str, int]]:
    """Check the files: ``(problems as (file index, line, message), events checked, versions seen)``."""
    problems: list[tuple[int, int, str]] = []
    seen: dict[str, tuple[int, int]] = {}  # event_id -> where it first appeared
    prompts: set[str] = set()  # call_ids of prompt events
    links: list[tuple[int, int, str, str | None, str | None]] = []  # closing events and other replies, checked last
    versions: dict[str, int] = {}
    events = 0
    for index, path in enumerate(paths):
        number = 0
        previous: tuple[int, bytes] | None = None
        try:
            with open_log(path) as handle:
                for number, raw in enumerate(handle, start=1):
                    if not raw.strip():
                        continue
                    previous = (number, raw)
                    try:
                        data = loads_line(raw)
                    except ValueError as exc:
                        torn = not raw.endswith(b"\n")
                        reason = str(exc).split(":")[0]
                        message = "torn last line (no newline; a crash mid-write?)" if torn else f"malformed line: not JSON ({reason})"
                        problems.append((index, number, message))
                        continue
                    events += 1
                    messages = _line_problems(data)
                    problems.extend((index, number, message) for message in messages)
                    if not isinstance(data, dict):
                        continue
                    version = data.get("hilt_version")
                    if isinstance(version, str):
                        versions[version] = versions.get(version, 0) + 1
                    event_id = data.get("event_id")
                    if isinstance(event_id, str):
                        first = seen.get(event_id)
                        if first is None:
                            seen[event_id] = (index, number)
                        else:
                            problems.append((index, number, f"duplicate event_id {event_id} (first at {paths[first[0]]}:{first[1]})"))
                    extensions = data.get("extensions")
                    if not isinstance(extensions, dict):
                        continue
                    call_id, reply_to = extensions.get("call_id"), extensions.get("reply_to")
                    action = data.get("action")
                    if action == "prompt":
                        if isinstance(call_id, str):
                            prompts.add(call_id)
                    elif action == "completion" or (action == "system" and "error" in extensions) or reply_to is not None:
                        closing = action in ("completion", "system")
                        links.append((index, number, str(action), call_id if closing else None, reply_to))
        except (OSError, EOFError) as exc:
            raise guard_read_error(path, exc) from None
        del previous
    for index, number, action, call_id, reply_to in links:
        if isinstance(call_id, str) and call_id not in prompts:
            kind = "completion" if action == "completion" else "error event"
            problems.append((index, number, f"{kind} without a prompt: no prompt event has call_id {call_id}"))
        elif isinstance(reply_to, str) and reply_to not in seen:
            problems.append((index, number, f"reply_to {reply_to} points to no event"))
    problems.sort(key=lambda problem: (problem[0], problem[1]))
    return problems, events, versions


def add_parser(commands: Any) -> None:
    """Add ``verify`` to the subcommands."""
    parser = commands.add_parser(
        "verify", help="check logs against the event schema; exit 0 only when clean",
        description="Check every line of JSONL logs: the event schema, duplicate event_ids, reply_to links, "
        "completions without prompts. Prints 'path:line: message' per problem and a summary line.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="log files or globs ('logs/app.jsonl*')")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """``hilt verify``: print the problems and the summary; 0 when clean, 1 otherwise."""
    paths = expand(args.files)
    problems, events, versions = check(paths)
    out = sys.stdout
    for index, number, message in problems:
        out.write(f"{paths[index]}:{number}: {message}\n")
    if len(versions) > 1:
        mix = ", ".join(f"{version} ({count} events)" for version, count in sorted(versions.items()))
        print(f"hilt verify: note: mixed schema versions: {mix}", file=sys.stderr)
    files = "file" if len(paths) == 1 else "files"
    noun = "problem" if len(problems) == 1 else "problems"
    out.write(f"checked {events} events in {len(paths)} {files}: {len(problems)} {noun}\n")
    return 1 if problems else 0

"""The ``hilt`` command line (``hilt demo``, ``stats``, ``verify``, ``tail``, ``report``, ``version``).

The log-reading commands live in :mod:`hilt.commands`, one small module each."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import __version__
from .commands import report, stats, tail, verify
from .commands._files import CLIError

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    if args.live and not os.environ.get("OPENAI_API_KEY"):
        raise CLIError("--live calls the real OpenAI API: set OPENAI_API_KEY first (or leave out --live)")
    summary = run_demo(args.out, live=args.live)
    print(f"hilt demo: {summary['calls']} LLM calls recorded as {summary['events']} events in {summary['path']}")
    where = "the OpenAI API" if args.live else "embedded OpenAI-compatible server, no API key, no network"
    print(f"({where}; {summary['conversations']} conversations)")
    print()
    result, _scan = stats.compute([args.out])
    print(stats.render_text(result))
    print()
    print(f"Next: hilt tail {args.out}  |  hilt stats {args.out} --by model  |  hilt verify {args.out}")
    return 0


def _version(args: argparse.Namespace) -> int:
    print(f"hilt {__version__}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="hilt", description="A private audit trail of every LLM call.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="record real SDK calls to an embedded OpenAI-compatible server")
    demo.add_argument("--out", default="logs/demo.jsonl", help="the JSONL file to write (default: logs/demo.jsonl)")
    demo.add_argument("--live", action="store_true", help="call the real OpenAI API (needs OPENAI_API_KEY) instead")
    demo.set_defaults(handler=_demo)
    stats.add_parser(commands)
    verify.add_parser(commands)
    tail.add_parser(commands)
    report.add_parser(commands)
    version = commands.add_parser("version", help="print hilt's version")
    version.set_defaults(handler=_version)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except CLIError as exc:
        print(f"hilt {args.command}: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `hilt tail log | head`: the reader left; point stdout at devnull so exit does not complain.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())

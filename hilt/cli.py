"""The ``hilt`` command line (``hilt demo``, ``hilt version``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    summary = run_demo(args.out)
    print(f"hilt demo: {summary['calls']} LLM calls recorded as {summary['events']} events in {summary['path']}")
    print(f"  conversations: {summary['conversations']}")
    print(f"  errors:        {summary['errors']}  (status codes: {summary['status_codes']})")
    print(f"  tokens:        {summary['total_tokens']}")
    print(f"  cost_usd:      {summary['cost_usd']}")
    print(f"Read it back:  python -c \"import hilt; [print(e.action, e.content.text) for e in hilt.Session('{args.out}', mode='r').read()]\"")
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
    demo.set_defaults(handler=_demo)
    version = commands.add_parser("version", help="print hilt's version")
    version.set_defaults(handler=_version)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())

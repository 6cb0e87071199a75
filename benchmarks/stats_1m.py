"""Time ``hilt stats --json`` on a generated log of 1,000,000 events (500,000 calls).

The log is written fast from a few real-looking event lines (a prompt, a completion, a streamed
completion, a 429 error) templated with different ids, so the file looks like a real log to the
parser: same keys, same sizes. The command runs in a fresh process, as a user would run it.
Run: ``python benchmarks/stats_1m.py [--events N] [--keep PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROMPT = (
    '{{"hilt_version":"1.0","event_id":"p-{i:08d}","timestamp":"2026-01-{day:02d}T09:14:03.512406Z",'
    '"session_id":"conv_{conv:016x}","actor":{{"type":"human","id":"user"}},"action":"prompt",'
    '"content":{{"text":"What is an audit trail? ({i})","messages":[{{"role":"system","content":"You are terse."}},'
    '{{"role":"user","content":"What is an audit trail? ({i})"}}]}},"extensions":{{"call_id":"c-{i:08d}",'
    '"provider":"openai","operation":"chat","model":"{model}","stream":false,"request":{{"temperature":0.2}}}}}}\n'
)
COMPLETION = (
    '{{"hilt_version":"1.0","event_id":"r-{i:08d}","timestamp":"2026-01-{day:02d}T09:14:03.781220Z",'
    '"session_id":"conv_{conv:016x}","actor":{{"type":"agent","id":"{model}-2024-08-06"}},"action":"completion",'
    '"content":{{"text":"An audit trail is a chronological record of who did what, and when. ({i})"}},'
    '"metrics":{{"tokens":{{"prompt":22,"completion":{ctok},"total":{ttok},"cached":0,"reasoning":0}},'
    '"cost_usd":5.7e-06,"latency_ms":{lat}.813{ttft}}},"extensions":{{"call_id":"c-{i:08d}","provider":"openai",'
    '"operation":"chat","model":"{model}","stream":false,"reply_to":"p-{i:08d}","status_code":200,'
    '"request_id":"req_{i}","attempts":1,"response_model":"{model}-2024-08-06","response_id":"chatcmpl-{i}",'
    '"finish_reason":"stop"}}}}\n'
)
ERROR = (
    '{{"hilt_version":"1.0","event_id":"r-{i:08d}","timestamp":"2026-01-{day:02d}T09:15:11.020871Z",'
    '"session_id":"conv_{conv:016x}","actor":{{"type":"system","id":"openai"}},"action":"system","content":{{"text":null}},'
    '"metrics":{{"tokens":{{"prompt":null,"completion":null,"total":null,"cached":null,"reasoning":null}},'
    '"cost_usd":null,"latency_ms":{lat}.412}},"extensions":{{"call_id":"c-{i:08d}","provider":"openai",'
    '"operation":"chat","model":"{model}","stream":false,"reply_to":"p-{i:08d}","status_code":429,'
    '"request_id":"req_{i}","attempts":1,"error":{{"type":"RateLimitError","code":"rate_limit_exceeded",'
    '"message":"Error code: 429 - Rate limit reached for requests."}}}}}}\n'
)
MODELS = ("gpt-4o", "gpt-4o-mini", "o3-mini")


def write_log(path: Path, events: int) -> None:
    """Write ``events`` events (prompt + closing pairs): every 50th call a 429, every 4th a stream."""
    with open(path, "w", encoding="utf-8", buffering=1 << 20) as out:
        chunk: list[str] = []
        for i in range(events // 2):
            fields = {"i": i, "day": 1 + i % 28, "conv": i // 3, "model": MODELS[i % 3], "lat": 100 + i % 900}
            chunk.append(PROMPT.format(**fields))
            if i % 50 == 49:
                chunk.append(ERROR.format(**fields))
            else:
                ctok = 4 + i % 40
                ttft = f',"ttft_ms":{50 + i % 200}.5' if i % 4 == 0 else ""
                chunk.append(COMPLETION.format(ctok=ctok, ttok=22 + ctok, ttft=ttft, **fields))
            if len(chunk) >= 20000:
                out.write("".join(chunk))
                chunk.clear()
        out.write("".join(chunk))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", help="write the log here and keep it (default: a temporary file)")
    parser.add_argument("--by", help="also time --by this key (model, conversation, day, user, status)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "stats_1m.jsonl"
        start = time.perf_counter()
        write_log(path, args.events)
        written = time.perf_counter() - start
        size_mb = path.stat().st_size / 1e6
        print(f"wrote {args.events:,} events ({size_mb:.0f} MB) in {written:.1f} s")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        runs = [["stats", "--json", str(path)]]
        if args.by:
            runs.append(["stats", "--json", "--by", args.by, str(path)])
        for argv in runs:
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "hilt", *argv], capture_output=True, text=True, env=env, check=True)
            elapsed = time.perf_counter() - start
            result = json.loads(done.stdout)
            print(f"hilt {' '.join(argv[:-1])}: {elapsed:.2f} s  ({args.events / elapsed / 1e6:.2f} M events/s; "
                  f"calls={result['calls']} errors={result['errors']} p50={result['latency_ms']['p50']} ms)")
        print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}")


if __name__ == "__main__":
    main()

"""Median microseconds per call: genai-prices' calc_price called directly vs hilt's cached cost_usd.

Run from the repository root: ``python benchmarks/pricing_lookup.py``. Both are measured in the same run,
on the same rotating set of calls (gpt-4o, a dated snapshot, gpt-4o-mini, an embedding model).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genai_prices import Usage, calc_price  # noqa: E402

from hilt.pricing import cost_usd  # noqa: E402

CALLS = [
    ("gpt-4o", {"prompt": 1200, "completion": 350, "cached": 1024, "reasoning": 0}),
    ("gpt-4o-2024-08-06", {"prompt": 800, "completion": 120, "cached": 0, "reasoning": 0}),
    ("gpt-4o-mini-2024-07-18", {"prompt": 5000, "completion": 900, "cached": 2048, "reasoning": 0}),
    ("text-embedding-3-small", {"prompt": 400, "completion": None, "cached": None, "reasoning": None}),
]
BATCH = 200  # calls per timed batch
ROUNDS = 41  # timed batches per contender; the median batch is reported


def genai_prices_direct(model: str, tokens: dict) -> float:
    """What a caller without hilt's cache does per call: build a Usage and ask genai-prices."""
    usage = Usage(
        input_tokens=tokens["prompt"] or 0,
        cache_read_tokens=tokens["cached"] or 0,
        output_tokens=tokens["completion"] or 0,
    )
    return float(calc_price(usage, model, provider_id="openai").total_price)


def hilt_cached(model: str, tokens: dict) -> float | None:
    return cost_usd("openai", model, tokens)


def median_us_per_call(func) -> float:
    calls = (CALLS * (BATCH // len(CALLS) + 1))[:BATCH]
    batches = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for model, tokens in calls:
            func(model, tokens)
        batches.append((time.perf_counter() - start) / BATCH * 1e6)
    return statistics.median(batches)


def main() -> None:
    for model, tokens in CALLS:  # warm both (imports, hilt's cache) and check they agree
        assert hilt_cached(model, tokens) == genai_prices_direct(model, tokens), model
    direct = median_us_per_call(genai_prices_direct)
    cached = median_us_per_call(hilt_cached)
    print(f"genai-prices calc_price, per call: {direct:.2f} us")
    print(f"hilt cost_usd, cached:             {cached:.2f} us")
    print(f"ratio:                             {direct / cached:.1f}x")


if __name__ == "__main__":
    main()

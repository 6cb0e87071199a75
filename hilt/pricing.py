"""USD cost of one LLM call from its token counts, using genai-prices' bundled price data.

Prices come from the data bundled inside the installed ``genai-prices`` package (``genai_prices.data``),
read directly rather than through ``calc_price``/``get_snapshot()``: hilt never fetches prices over
the network, and an ``UpdatePrices`` task started elsewhere in the process (which swaps genai-prices'
global snapshot for one downloaded from GitHub) does not change hilt's numbers. genai-prices is
imported on the first look-up, not when hilt is imported (it takes ~0.25 s).

Cost of a call: the model's price entry is looked up once per (provider, model) and memoised together
with its rates, so a repeated call is a cache hit plus a few integer operations (~1 us). Measured with
genai-prices 0.2.3, the slow part of ``genai_prices.calc_price`` is not the look-up (its snapshot caches
that) but its generic unit arithmetic (~100 us per call), so caching only the price entry would not be
enough: hilt does the arithmetic for the units it reports itself, exactly (rates as integers over a
common denominator, one final correctly rounded division). When a price's rates are first built they
are checked once against genai-prices' own ``ModelPrice.calc_price``, so a change of meaning in
genai-prices yields ``None`` and a report, never a silently wrong number.

Token semantics follow genai-prices: ``input_tokens`` includes ``cache_read_tokens`` and
``output_tokens`` includes ``output_reasoning_tokens``; a unit without its own price is charged at
its parent's rate (cached prompt tokens at the input rate when a model has no cache-read price).
Not reflected: service-tier variants (batch, flex, priority), audio/image tokens (all prompt tokens are
priced as text), and models priced per audio hour, character or page, which give ``None``.
"""

from __future__ import annotations

import functools
import math
import numbers
import re
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any

from ._internal import report_failure

__all__ = ["cost_usd", "set_price_overrides", "validate_price_overrides"]

_PLACE = "pricing"
_OVERRIDE_KEYS = ("input", "output", "cached_input")
_DATE_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")
_PER_TOKENS = 1_000_000
_PER_REQUESTS = 1_000
_ZERO = Decimal(0)
_INVALID = object()  # a token count that is not a non-negative whole number

_overrides: dict[str, _Rates] = {}
_generation = 0  # bumped by set_price_overrides; part of the cache key so a stale fill is never hit
_overrides_lock = threading.Lock()


class _Tiered:
    """A threshold ("cliff") price: once the prompt exceeds a tier's start, that tier's rate applies to all units."""

    __slots__ = ("base", "tiers")

    def __init__(self, base: int, tiers: list[tuple[int, int]]) -> None:
        self.base = base
        self.tiers = sorted(tiers, reverse=True)  # highest start first

    def at(self, prompt: int) -> int:
        for start, price in self.tiers:
            if prompt > start:
                return price
        return self.base


class _Rates:
    """A model's prices for the units hilt reports, as integer numerators over one common ``denominator``.

    Built from exact decimal USD prices (per 1M tokens, per 1K requests), so the per-call arithmetic is
    exact integer arithmetic and the single final division ``int / int`` is a correctly rounded float:
    the same float as ``float()`` of genai-prices' exact ``Decimal`` total.
    """

    __slots__ = ("input", "output", "cache_read", "reasoning", "per_request", "denominator", "tiered")

    def __init__(
        self,
        input: Any,
        output: Any,
        cache_read: Any = None,
        reasoning: Any = None,
        per_request: Decimal | Fraction = _ZERO,
    ) -> None:
        """Rates in USD per 1M tokens (``Decimal`` or ``(base, [(start, price), ...])``) and USD per request."""
        per_token = [_usd_per_token(value) for value in (input, output, cache_read, reasoning)]
        request = Fraction(per_request)
        exact = [request]
        for value in per_token:
            if isinstance(value, Fraction):
                exact.append(value)
            elif value is not None:
                base, tiers = value
                exact += [base, *(price for _, price in tiers)]
        denominator = math.lcm(*(f.denominator for f in exact))

        def scaled(value: Any) -> Any:
            if value is None:
                return None
            if isinstance(value, Fraction):
                return int(value * denominator)
            base, tiers = value
            return _Tiered(int(base * denominator), [(start, int(price * denominator)) for start, price in tiers])

        self.input, self.output, self.cache_read, self.reasoning = (scaled(value) for value in per_token)
        # cache_read None: cached prompt tokens cost the input rate; reasoning None: they cost the output rate
        self.per_request = int(request * denominator)
        self.denominator = denominator
        self.tiered = any(isinstance(r, _Tiered) for r in (self.input, self.output, self.cache_read, self.reasoning))

    def cost(self, prompt: int, completion: int, cached: int, reasoning: int) -> int | None:
        """Cost in units of 1/denominator USD, or None when a subset count exceeds its whole (inconsistent data)."""
        rate_in, rate_out, rate_cached, rate_reasoning = self.input, self.output, self.cache_read, self.reasoning
        if self.tiered:
            rate_in, rate_out, rate_cached, rate_reasoning = (
                r.at(prompt) if isinstance(r, _Tiered) else r for r in (rate_in, rate_out, rate_cached, rate_reasoning)
            )
        total = self.per_request
        if rate_cached is not None and cached:
            if cached > prompt:
                return None
            total += rate_cached * cached
            prompt -= cached
        total += rate_in * prompt
        if rate_reasoning is not None and reasoning:
            if reasoning > completion:
                return None
            total += rate_reasoning * reasoning
            completion -= reasoning
        return total + rate_out * completion


def _usd_per_token(price: Any) -> Any:
    """A price per 1M tokens as an exact Fraction of USD per token (tiered: ``(base, [(start, price)])``)."""
    if price is None:
        return None
    if isinstance(price, tuple):
        base, tiers = price
        return _usd_per_token(base), [(start, _usd_per_token(p)) for start, p in tiers]
    return Fraction(price) / _PER_TOKENS


class _Conditional:
    """A genai-prices model whose price depends on the request time (price changes, off-peak hours)."""

    __slots__ = ("model",)

    def __init__(self, model: Any) -> None:
        self.model = model

    def rates_now(self) -> _Rates | None:
        return _rates_for(self.model.get_prices(datetime.now(timezone.utc)))


def cost_usd(provider: str, model: str | None, tokens: Mapping[str, int | None]) -> float | None:
    """USD cost of one call, or None when the model's price is unknown (never another model's price)."""
    try:
        if not model or not isinstance(model, str) or not isinstance(provider, str):
            return None
        prompt = _count(tokens.get("prompt"))
        completion = _count(tokens.get("completion"))
        if prompt is None and completion is None:
            return None
        cached = _count(tokens.get("cached"))
        reasoning = _count(tokens.get("reasoning"))
        if _INVALID in (prompt, completion, cached, reasoning):
            return None
        entry = _price_entry(provider, model, _generation)
        if entry is None:
            return None
        rates = entry if type(entry) is _Rates else entry.rates_now()
        if rates is None:
            return None
        total = rates.cost(prompt or 0, completion or 0, cached or 0, reasoning or 0)
        return None if total is None else total / rates.denominator
    except Exception as exc:
        report_failure(_PLACE, exc)
        return None


def set_price_overrides(overrides: Mapping[str, Mapping[str, float]] | None) -> None:
    """Replace user price overrides: {model: {"input": usd_per_1M, "output": usd_per_1M, "cached_input": usd_per_1M}}."""
    global _overrides, _generation
    validated = validate_price_overrides(overrides)
    with _overrides_lock:
        _overrides = validated
        _generation += 1
        _price_entry.cache_clear()
        _rates_by_price.clear()


def validate_price_overrides(overrides: Mapping[str, Mapping[str, float]] | None) -> dict[str, _Rates]:
    """Check overrides without applying them; raises ``ValueError`` naming the model and key."""
    validated: dict[str, _Rates] = {}
    if overrides is not None:
        if not isinstance(overrides, Mapping):
            raise ValueError(f"pricing: expected a mapping of model name to prices, got {type(overrides).__name__}")
        for name, prices in overrides.items():
            validated[_check_name(name)] = _override_rates(name, prices)
    return validated


def _count(value: object) -> Any:
    """A token count as an int, None when absent, or _INVALID."""
    if value is None:
        return None
    if type(value) is int:
        return value if value >= 0 else _INVALID
    if isinstance(value, bool):
        return _INVALID
    if isinstance(value, numbers.Integral):
        return int(value) if value >= 0 else _INVALID
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return _INVALID


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"pricing: model names must be non-empty strings, got {name!r}")
    return name


def _override_rates(name: str, prices: object) -> _Rates:
    valid = ", ".join(_OVERRIDE_KEYS)
    if not isinstance(prices, Mapping):
        raise ValueError(f"pricing[{name!r}]: expected a mapping with keys {valid}, got {type(prices).__name__}")
    for key in prices:
        if key not in _OVERRIDE_KEYS:
            raise ValueError(f"pricing[{name!r}]: unknown key {key!r}; use {valid}")
    rates: dict[str, Decimal] = {}
    for key in _OVERRIDE_KEYS:
        if key not in prices:
            if key == "cached_input":
                continue
            raise ValueError(f"pricing[{name!r}]: missing key {key!r}; use {valid}")
        value = prices[key]
        if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)) or not _finite_non_negative(value):
            raise ValueError(
                f"pricing[{name!r}]: {key!r} must be a non-negative number of USD per 1M tokens, got {value!r}"
            )
        rates[key] = value if isinstance(value, Decimal) else Decimal(repr(value))
    return _Rates(rates["input"], rates["output"], cache_read=rates.get("cached_input", rates["input"]))


def _finite_non_negative(value: int | float | Decimal) -> bool:
    if isinstance(value, Decimal):
        return value.is_finite() and value >= 0
    return math.isfinite(value) and value >= 0


@functools.lru_cache(maxsize=1024)
def _price_entry(provider: str, model: str, generation: int) -> _Rates | _Conditional | None:
    """The price of ``model`` as reported by ``provider``: an override, genai-prices' entry, or None if unknown.

    ``generation`` is the overrides version, so a look-up racing ``set_price_overrides`` cannot cache stale data.
    """
    overrides = _overrides
    if overrides:
        rates = overrides.get(model)
        if rates is None and (undated := _DATE_SUFFIX.sub("", model)) != model:
            rates = overrides.get(undated)
        if rates is not None:
            return rates
    try:
        info = _find_model(provider, model)
        if info is None:
            return None
        if isinstance(info.prices, list):  # conditional prices: resolved per call for the request time
            return _Conditional(info)
        return _rates_for(info.prices)
    except Exception as exc:  # an unexpected failure inside genai-prices: report once, remember "unknown"
        report_failure(_PLACE, exc)
        return None


def _find_model(provider: str, model: str) -> Any:
    """genai-prices' model entry for (provider, model), or None.

    The provider is matched by genai-prices' ``find_provider_by_id`` and the model by the provider's own
    ``find_model`` (explicit aliases such as dated snapshots; providers like Azure fall back to the vendor
    they resell). For ``openai`` (any OpenAI-compatible server), a name the OpenAI entry does not know is
    tried without provider, as genai-prices does when no provider is given, but only when exactly one
    provider's model pattern claims the name.
    """
    from genai_prices.data_snapshot import find_provider_by_id

    providers = _bundled_providers()
    found = find_provider_by_id(providers, provider)
    if found is None:
        return None
    info = found.find_model(model, all_providers=providers)
    if info is None and found.id == "openai":
        ref = model.lower()
        claimants = [p for p in providers if p.model_match is not None and p.model_match.is_match(ref)]
        if len(claimants) == 1 and claimants[0] is not found:
            info = claimants[0].find_model(model, all_providers=providers)
    return info


@functools.lru_cache(maxsize=None)
def _bundled_providers() -> list[Any]:
    """Providers of the price snapshot bundled with genai-prices (never the auto-updated one)."""
    from genai_prices.data import providers

    return providers


# Rates per genai-prices ModelPrice (keyed by id; the objects live as long as the bundled data).
_rates_by_price: dict[int, tuple[Any, _Rates | None]] = {}


def _rates_for(model_price: Any) -> _Rates | None:
    """Cached rates of a genai-prices ModelPrice; None when it has no price per token (e.g. per audio hour)."""
    hit = _rates_by_price.get(id(model_price))
    if hit is not None and hit[0] is model_price:
        return hit[1]
    try:
        rates = _build_rates(model_price)
    except Exception as exc:
        report_failure(_PLACE, exc)
        rates = None
    _rates_by_price[id(model_price)] = (model_price, rates)
    return rates


def _build_rates(model_price: Any) -> _Rates | None:
    priced = {k: v for k, v in vars(model_price).items() if not k.startswith("_") and v is not None}
    if not priced:
        return _Rates(_ZERO, _ZERO)  # listed with no price: free (e.g. OpenAI moderation)
    if "input_mtok" not in priced and "output_mtok" not in priced:
        return None  # priced per character, audio hour, ...: token counts cannot price it
    rates = _Rates(
        _rate(priced.get("input_mtok", _ZERO)),
        _rate(priced.get("output_mtok", _ZERO)),
        cache_read=_rate(priced.get("cache_read_mtok")),
        reasoning=_rate(priced.get("output_reasoning_mtok")),
        per_request=Fraction(priced["requests_kcount"]) / _PER_REQUESTS if "requests_kcount" in priced else _ZERO,
    )
    _check_against_genai_prices(model_price, rates)
    return rates


def _rate(price: Any) -> Any:
    if price is None or isinstance(price, Decimal):
        return price
    return price.base, [(tier.start, tier.price) for tier in price.tiers]  # genai-prices TieredPrices


def _check_against_genai_prices(model_price: Any, rates: _Rates) -> None:
    """Raise if hilt's arithmetic disagrees with genai-prices' on probe calls using every unit hilt reports."""
    from genai_prices import Usage

    prompts = [1000]
    tiers = [r.tiers for r in (rates.input, rates.output, rates.cache_read, rates.reasoning) if isinstance(r, _Tiered)]
    if tiers:
        prompts.append(max(start for t in tiers for start, _ in t) + 1000)  # above the highest tier
    for prompt in prompts:
        counts = {"input_tokens": prompt, "cache_read_tokens": 300, "output_tokens": 500, "output_reasoning_tokens": 200}
        expected = model_price.calc_price(Usage(**counts))["total_price"]
        got = rates.cost(prompt, 500, 300, 200)
        if got is None or Fraction(got, rates.denominator) != Fraction(expected):
            raise ArithmeticError(f"hilt's price arithmetic disagrees with genai-prices for {model_price}: {counts}")

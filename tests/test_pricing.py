"""Tests of hilt.pricing against the real genai-prices package and its bundled price data (no mocks of it)."""

from __future__ import annotations

import re
import socket

import pytest
from genai_prices import Usage, calc_price
from genai_prices import data_snapshot
from genai_prices.data import providers as bundled_providers

from hilt import pricing
from hilt.pricing import cost_usd, set_price_overrides

CALL = {"prompt": 1000, "completion": 500, "total": 1500, "cached": 300, "reasoning": 0}


@pytest.fixture(autouse=True)
def _no_overrides():
    """Every test starts and ends without price overrides and with empty caches."""
    set_price_overrides(None)
    yield
    set_price_overrides(None)


def genai_cost(model: str, provider: str = "openai", **tokens: int) -> float:
    """The cost genai-prices itself computes for a call, as a float."""
    return float(calc_price(Usage(**tokens), model, provider_id=provider).total_price)


def test_gpt4o_equals_genai_prices_and_hand_computed_rates():
    """gpt-4o costs what calc_price says and what genai-prices 0.2.3's published $2.50 / $1.25 cached / $10 per 1M give."""
    got = cost_usd("openai", "gpt-4o", CALL)
    assert got == genai_cost("gpt-4o", input_tokens=1000, cache_read_tokens=300, output_tokens=500)
    assert got == (700 * 2.50 + 300 * 1.25 + 500 * 10.00) / 1_000_000 == 0.007125


@pytest.mark.parametrize("snapshot", ["gpt-4o-2024-08-06", "gpt-4o-2024-11-20", "GPT-4o-2024-08-06"])
def test_dated_snapshot_of_gpt4o_priced_like_gpt4o(snapshot):
    """Dated gpt-4o snapshots that genai-prices lists as aliases get gpt-4o's price, as calc_price does."""
    got = cost_usd("openai", snapshot, CALL)
    assert got == cost_usd("openai", "gpt-4o", CALL)
    assert got == genai_cost(snapshot, input_tokens=1000, cache_read_tokens=300, output_tokens=500)


def test_gpt4o_mini_dated_snapshot_equals_genai_prices():
    """gpt-4o-mini-2024-07-18 costs what calc_price says, i.e. gpt-4o-mini's price."""
    got = cost_usd("openai", "gpt-4o-mini-2024-07-18", CALL)
    assert got == genai_cost("gpt-4o-mini-2024-07-18", input_tokens=1000, cache_read_tokens=300, output_tokens=500)
    assert got == cost_usd("openai", "gpt-4o-mini", CALL)


def test_dated_snapshot_with_its_own_price_is_not_the_base_models():
    """gpt-4o-2024-05-13 has its own (higher) price in genai-prices, so it must not get gpt-4o's."""
    got = cost_usd("openai", "gpt-4o-2024-05-13", CALL)
    assert got == genai_cost("gpt-4o-2024-05-13", input_tokens=1000, cache_read_tokens=300, output_tokens=500)
    assert got != cost_usd("openai", "gpt-4o", CALL)


def test_cached_tokens_cost_less_than_uncached():
    """The same prompt with cached tokens costs less, priced at the cache-read rate."""
    uncached = cost_usd("openai", "gpt-4o", {"prompt": 1000, "completion": 500})
    cached = cost_usd("openai", "gpt-4o", {"prompt": 1000, "completion": 500, "cached": 300})
    assert cached < uncached
    assert uncached - cached == pytest.approx(300 * (2.50 - 1.25) / 1_000_000)


def test_embeddings_price_prompt_tokens_only():
    """text-embedding-3-small with completion None costs its prompt tokens at $0.02 per 1M, as calc_price says."""
    got = cost_usd("openai", "text-embedding-3-small", {"prompt": 1000, "completion": None, "total": 1000})
    assert got == genai_cost("text-embedding-3-small", input_tokens=1000)
    assert got == 1000 * 0.02 / 1_000_000


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "no-such-model"),
        ("openai", "gpt-4o-2099-01-01"),  # a future snapshot: unknown, not gpt-4o's price
        ("openai", "llama-3.1-70b"),  # served by an OpenAI-compatible server; no vendor claims it
        ("openai", "databricks-claude-3-7-sonnet"),  # claimed by two vendors' patterns: ambiguous
        ("no-such-provider", "gpt-4o"),
        ("openai", None),
        ("openai", ""),
    ],
)
def test_unknown_model_is_none(provider, model):
    """A model (or provider) genai-prices does not know, or knows only ambiguously, has no price."""
    assert cost_usd(provider, model, CALL) is None


def test_other_vendor_model_via_openai_uses_the_one_vendor_claiming_it():
    """A Claude model called through an OpenAI-compatible endpoint gets Anthropic's price from genai-prices."""
    got = cost_usd("openai", "claude-3-5-sonnet-latest", CALL)
    assert got is not None
    assert got == genai_cost("claude-3-5-sonnet-latest", "anthropic", input_tokens=1000, cache_read_tokens=300, output_tokens=500)


def test_azure_falls_back_to_openai_prices():
    """Azure's deployment names resolve through genai-prices' azure entry (with its fallback to OpenAI)."""
    got = cost_usd("azure", "gpt-35-turbo", {"prompt": 1000, "completion": 500})
    assert got == genai_cost("gpt-35-turbo", "azure", input_tokens=1000, output_tokens=500)
    assert got == cost_usd("openai", "gpt-3.5-turbo", {"prompt": 1000, "completion": 500})


def test_every_openai_and_azure_model_agrees_with_calc_price():
    """For every OpenAI/Azure model in the bundled data and several token mixes, hilt equals calc_price or is None."""
    mixes = [(1000, 500, 300, 200), (1, 0, 0, 0), (300_000, 40_000, 250_000, 10_000), (0, 7, 0, 7)]
    checked = 0
    for provider in (p for p in bundled_providers if p.id in ("openai", "azure")):
        for model in provider.models:
            for prompt, completion, cached, reasoning in mixes:
                tokens = {"prompt": prompt, "completion": completion, "cached": cached, "reasoning": reasoning}
                got = cost_usd(provider.id, model.id, tokens)
                usage = dict(input_tokens=prompt, output_tokens=completion, cache_read_tokens=cached, output_reasoning_tokens=reasoning)
                try:
                    expected = genai_cost(model.id, provider.id, **usage)
                except LookupError:  # a few ids do not match their own patterns (e.g. 'ft:gpt-4o')
                    expected = None
                # None also for models not priced per token (audio hours, characters), where calc_price gives 0
                assert got == expected or (got is None and expected == 0), (provider.id, model.id, tokens)
                checked += got is not None
    assert checked > 400


def test_override_wins_and_matches_dated_snapshots():
    """An override replaces genai-prices' price for the model and its -YYYY-MM-DD snapshots; cached_input defaults to input."""
    set_price_overrides({"gpt-4o": {"input": 1, "output": 2}})
    expected = (1000 * 1 + 500 * 2) / 1_000_000
    assert cost_usd("openai", "gpt-4o", CALL) == expected
    assert cost_usd("openai", "gpt-4o-2024-08-06", CALL) == expected
    assert cost_usd("openai", "gpt-4o-mini", CALL) == genai_cost("gpt-4o-mini", input_tokens=1000, cache_read_tokens=300, output_tokens=500)


def test_override_exact_name_before_undated_and_cached_rate():
    """An override of the exact dated name beats the undated one, and its cached_input rate prices cached tokens."""
    set_price_overrides({
        "my-model": {"input": 1.0, "output": 2.0},
        "my-model-2025-01-02": {"input": 10.0, "output": 20.0, "cached_input": 0.5},
    })
    assert cost_usd("openai", "my-model-2025-01-02", CALL) == (700 * 10 + 300 * 0.5 + 500 * 20) / 1_000_000
    assert cost_usd("my-proxy", "my-model-2024-12-31", CALL) == (1000 * 1 + 500 * 2) / 1_000_000


def test_setting_overrides_clears_the_cache():
    """A price cached before set_price_overrides is not used after it, nor after the overrides are removed."""
    original = cost_usd("openai", "gpt-4o", CALL)
    set_price_overrides({"gpt-4o": {"input": 0, "output": 0}})
    assert cost_usd("openai", "gpt-4o", CALL) == 0.0
    set_price_overrides(None)
    assert cost_usd("openai", "gpt-4o", CALL) == original


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"my-model": {"inptu": 1, "output": 2}}, "pricing['my-model']: unknown key 'inptu'; use input, output, cached_input"),
        ({"my-model": {"input": -1, "output": 2}}, "pricing['my-model']: 'input' must be a non-negative number"),
        ({"my-model": {"input": 1, "output": "2"}}, "pricing['my-model']: 'output' must be a non-negative number"),
        ({"my-model": {"input": 1, "output": True}}, "pricing['my-model']: 'output' must be a non-negative number"),
        ({"my-model": {"input": 1, "output": float("nan")}}, "pricing['my-model']: 'output' must be a non-negative number"),
        ({"my-model": {"input": 1}}, "pricing['my-model']: missing key 'output'; use input, output, cached_input"),
        ({"my-model": 2.5}, "pricing['my-model']: expected a mapping with keys input, output, cached_input"),
    ],
)
def test_invalid_override_raises_naming_model_and_key(overrides, message):
    """A bad override raises ValueError naming the model, the key and the valid keys, and keeps the old overrides."""
    set_price_overrides({"kept": {"input": 1, "output": 1}})
    with pytest.raises(ValueError, match=re.escape(message)):
        set_price_overrides(overrides)
    assert cost_usd("openai", "kept", {"prompt": 1_000_000}) == 1.0


@pytest.mark.parametrize(
    "tokens",
    [
        {"prompt": None, "completion": None, "total": 100},
        {},
        {"prompt": -1, "completion": 5},
        {"prompt": "10", "completion": 5},
        {"prompt": True, "completion": 5},
        {"prompt": 10, "completion": 5, "cached": 11},  # cached is a subset of prompt
    ],
)
def test_missing_or_invalid_token_counts_are_none(tokens):
    """No prompt and no completion count, or counts that are not sane whole numbers, give None without raising."""
    assert cost_usd("openai", "gpt-4o", tokens) is None


def test_result_is_a_plain_float():
    """The cost is a float, not a Decimal, int or string, even when it is zero."""
    assert type(cost_usd("openai", "gpt-4o", CALL)) is float
    set_price_overrides({"free": {"input": 0, "output": 0}})
    assert type(cost_usd("openai", "free", CALL)) is float


def test_repeated_call_is_served_from_the_cache():
    """A second call for the same (provider, model) does not look the model up in genai-prices again."""
    before = pricing._price_entry.cache_info()
    first = cost_usd("openai", "gpt-4o-mini", CALL)
    after_first = pricing._price_entry.cache_info()
    second = cost_usd("openai", "gpt-4o-mini", {"prompt": 2000, "completion": 1000, "cached": 600})
    after_second = pricing._price_entry.cache_info()
    assert after_first.misses == before.misses + 1
    assert after_second.misses == after_first.misses
    assert after_second.hits == after_first.hits + 1
    assert second == pytest.approx(2 * first)  # the arithmetic is still done per call


def test_bundled_snapshot_used_even_if_genai_prices_snapshot_is_replaced():
    """hilt keeps using the bundled prices when genai-prices' global snapshot is swapped (as UpdatePrices does)."""
    original = data_snapshot._custom_snapshot
    data_snapshot.set_custom_snapshot(data_snapshot.DataSnapshot(providers=[], from_auto_update=True))
    try:
        with pytest.raises(LookupError):
            calc_price(Usage(input_tokens=1), "gpt-4o", provider_id="openai")
        assert cost_usd("openai", "gpt-4o", CALL) == 0.007125
    finally:
        data_snapshot.set_custom_snapshot(original)


def test_no_network_access(monkeypatch):
    """Pricing a model never opens a socket."""

    def refuse(*args, **kwargs):
        raise AssertionError("pricing tried to use the network")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert cost_usd("openai", "gpt-4o-2024-11-20", CALL) == 0.007125


def test_unexpected_exception_is_reported_not_raised(monkeypatch):
    """A failure inside pricing returns None and goes to report_failure("pricing", exc)."""
    reported = []
    monkeypatch.setattr(pricing, "report_failure", lambda place, exc: reported.append((place, exc)))
    assert cost_usd("openai", "gpt-4o", None) is None  # type: ignore[arg-type]
    assert [place for place, _ in reported] == ["pricing"]
    assert isinstance(reported[0][1], AttributeError)


def test_unknown_model_is_not_reported(monkeypatch):
    """An unknown model is an ordinary None, not a failure."""
    reported = []
    monkeypatch.setattr(pricing, "report_failure", lambda place, exc: reported.append((place, exc)))
    assert cost_usd("openai", "no-such-model", CALL) is None
    assert reported == []

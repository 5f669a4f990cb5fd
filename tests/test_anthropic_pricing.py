"""Cost from genai-prices and the params.yaml override: token classes, defaults, batch discount."""

import pytest

from msmbuild.config import Params, Price
from msmbuild.errors import ParamsError
from msmbuild.generate.backends.base import Usage
from msmbuild.generate.backends.pricing import cost_usd, estimate_cost

PRICES = {"m": Price(input=10.0, output=50.0)}


def test_each_token_class_priced_with_default_cache_multipliers():
    usage = Usage(input_tokens=1_000_000, output_tokens=0)
    assert cost_usd("m", usage, PRICES, batch=False) == pytest.approx(10.0)
    assert cost_usd("m", Usage(output_tokens=1_000_000), PRICES, False) == pytest.approx(50.0)
    assert cost_usd("m", Usage(cache_creation_input_tokens=1_000_000), PRICES, False) == pytest.approx(12.5)
    assert cost_usd("m", Usage(cache_read_input_tokens=1_000_000), PRICES, False) == pytest.approx(1.0)


def test_explicit_cache_prices_and_batch_discount():
    prices = {"m": Price(input=10.0, output=50.0, cache_write=20.0, cache_read=2.0, batch_discount=0.4)}
    usage = Usage(input_tokens=100, output_tokens=200, cache_creation_input_tokens=300, cache_read_input_tokens=400)
    full = (100 * 10 + 200 * 50 + 300 * 20 + 400 * 2) / 1e6
    assert cost_usd("m", usage, prices, batch=False) == pytest.approx(full)
    assert cost_usd("m", usage, prices, batch=True) == pytest.approx(full * 0.4)


def test_estimate_matches_cost_of_summed_usage():
    est = estimate_cost("claude-haiku-4-5", 10, 1000, 500, Params().prices, batch=True)
    assert est == pytest.approx(10 * (1000 * 1.0 + 500 * 5.0) / 1e6 * 0.5)


def test_unknown_model_names_prices_key():
    with pytest.raises(ParamsError, match=r"'nope'.*'prices'"):
        cost_usd("nope", Usage(), PRICES, batch=False)


def test_maintained_prices_know_current_models_and_cache_prices():
    from msmbuild.generate.backends.pricing import price_for

    p = price_for("claude-opus-4-6", {})
    assert (p.input, p.output) == pytest.approx((5.0, 25.0))
    assert p.cache_read == pytest.approx(p.input * 0.1) and p.cache_write == pytest.approx(p.input * 1.25)
    override = {"claude-opus-4-6": Price(input=1.0, output=2.0)}
    assert price_for("claude-opus-4-6", override).input == 1.0  # prices: in params.yaml wins

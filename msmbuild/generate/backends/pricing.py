"""USD cost of model calls from the price table in params.yaml (``prices``).

Prices are USD per million tokens. Cache writes default to 1.25x the input price and
cache reads to 0.1x (the published multipliers for 5-minute prompt caching); Message
Batches usage is multiplied by the model's ``batch_discount`` (0.5 by default).
``msmbuild plan`` and the anthropic backend both use these two functions, so an estimate
and a recorded cost never disagree about the table.
"""

from __future__ import annotations

from collections.abc import Mapping

from msmbuild.config import Price
from msmbuild.errors import ParamsError
from msmbuild.generate.backends.base import Usage

__all__ = ["CACHE_READ_MULTIPLIER", "CACHE_WRITE_MULTIPLIER", "cost_usd", "estimate_cost", "price_for"]

CACHE_WRITE_MULTIPLIER = 1.25
CACHE_READ_MULTIPLIER = 0.1
PER_TOKEN = 1e-6


def price_for(model: str, prices: Mapping[str, Price]) -> Price:
    """The price entry for model; an unknown model is a ParamsError naming ``prices``."""
    try:
        return prices[model]
    except KeyError:
        known = ", ".join(sorted(prices)) or "none"
        raise ParamsError(
            f"params.yaml: key 'prices' has no entry for model {model!r} (known: {known}); "
            f"add prices.{model}.input and prices.{model}.output (USD per million tokens)"
        ) from None


def cost_usd(model: str, usage: Usage, prices: Mapping[str, Price], batch: bool) -> float:
    """USD for one call's usage: input, cache write, cache read and output tokens."""
    price = price_for(model, prices)
    cache_write = price.cache_write if price.cache_write is not None else price.input * CACHE_WRITE_MULTIPLIER
    cache_read = price.cache_read if price.cache_read is not None else price.input * CACHE_READ_MULTIPLIER
    total = (
        usage.input_tokens * price.input
        + usage.cache_creation_input_tokens * cache_write
        + usage.cache_read_input_tokens * cache_read
        + usage.output_tokens * price.output
    ) * PER_TOKEN
    return total * price.batch_discount if batch else total


def estimate_cost(
    model: str,
    n_requests: int,
    input_tokens: int,
    output_tokens: int,
    prices: Mapping[str, Price],
    batch: bool,
) -> float:
    """USD for n_requests calls of input_tokens in and output_tokens out each (no caching)."""
    usage = Usage(input_tokens=n_requests * input_tokens, output_tokens=n_requests * output_tokens)
    return cost_usd(model, usage, prices, batch)

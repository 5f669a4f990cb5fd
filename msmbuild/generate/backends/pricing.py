"""USD cost of model calls: the maintained ``genai-prices`` table, ``prices:`` overriding it.

Cache writes default to 1.25x input and reads to 0.1x; Message Batches usage is multiplied
by ``batch_discount``. ``msmbuild plan`` and the anthropic backend both price through here,
so an estimate and a recorded cost never disagree (docs/generate.md, "Cost").
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from msmbuild.config import Price
from msmbuild.errors import ParamsError
from msmbuild.generate.backends.base import Usage

__all__ = ["CACHE_READ_MULTIPLIER", "CACHE_WRITE_MULTIPLIER", "BATCH_DISCOUNT", "cache_saving_usd",
           "cost_usd", "estimate_cost", "price_for"]

CACHE_WRITE_MULTIPLIER = 1.25
CACHE_READ_MULTIPLIER = 0.1
BATCH_DISCOUNT = 0.5
PER_TOKEN = 1e-6
PROVIDER = "anthropic"


@functools.cache
def _maintained(model: str) -> Price | None:
    """The genai-prices entry of an Anthropic model as a Price, or None when it is unknown."""
    from genai_prices import Usage as GPUsage
    from genai_prices import calc_price

    def total(**usage: int) -> float:
        return float(calc_price(GPUsage(**usage), model_ref=model, provider_id=PROVIDER).total_price)

    m = 1_000_000
    try:
        inp = total(input_tokens=m)
    except LookupError:
        return None
    return Price(input=inp, output=total(output_tokens=m),
                 cache_write=total(input_tokens=m, cache_write_tokens=m),
                 cache_read=total(input_tokens=m, cache_read_tokens=m),
                 batch_discount=BATCH_DISCOUNT)


def price_for(model: str, prices: Mapping[str, Price]) -> Price:
    """The price of model: ``prices`` first, then genai-prices; unknown is a ParamsError."""
    if model in prices:
        return prices[model]
    try:
        found = _maintained(model)
    except Exception as exc:  # noqa: BLE001 - a genai-prices data problem is reported, not raised raw
        raise ParamsError(f"params.yaml: no price for model {model!r}: genai-prices failed ({exc}); "
                          f"add prices.{model}.input and prices.{model}.output") from None
    if found is None:
        raise ParamsError(
            f"params.yaml: model {model!r} is neither in genai-prices nor under key 'prices'; "
            f"add prices.{model}.input and prices.{model}.output (USD per million tokens)")
    return found


def _rates(price: Price) -> tuple[float, float]:
    write = price.cache_write if price.cache_write is not None else price.input * CACHE_WRITE_MULTIPLIER
    read = price.cache_read if price.cache_read is not None else price.input * CACHE_READ_MULTIPLIER
    return write, read


def cost_usd(model: str, usage: Usage, prices: Mapping[str, Price], batch: bool) -> float:
    """USD for one call's usage: input, cache write, cache read and output tokens."""
    price = price_for(model, prices)
    cache_write, cache_read = _rates(price)
    total = (
        usage.input_tokens * price.input
        + usage.cache_creation_input_tokens * cache_write
        + usage.cache_read_input_tokens * cache_read
        + usage.output_tokens * price.output
    ) * PER_TOKEN
    return total * price.batch_discount if batch else total


def cache_saving_usd(model: str, usage: Usage, prices: Mapping[str, Price], batch: bool) -> float:
    """USD that prompt caching saved on one call (negative when only cache writes were paid)."""
    price = price_for(model, prices)
    cache_write, cache_read = _rates(price)
    saved = (usage.cache_read_input_tokens * (price.input - cache_read)
             - usage.cache_creation_input_tokens * (cache_write - price.input)) * PER_TOKEN
    return saved * price.batch_discount if batch else saved


def estimate_cost(
    model: str,
    n_requests: int,
    input_tokens: int,
    output_tokens: int,
    prices: Mapping[str, Price],
    batch: bool,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> float:
    """USD for n_requests calls of the given per-request token counts."""
    usage = Usage(input_tokens=n_requests * input_tokens, output_tokens=n_requests * output_tokens,
                  cache_read_input_tokens=n_requests * cache_read_tokens,
                  cache_creation_input_tokens=cache_write_tokens)
    return cost_usd(model, usage, prices, batch)

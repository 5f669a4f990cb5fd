"""What a model call will cost before it is made: tokens from the real prompt, output by stage.

Shared by ``msmbuild plan`` and the spending cap (``budget_usd``), so the two agree.
Input tokens are measured on the request itself (about four characters a token); output
tokens are the mean of this stage's answers already in the store when there are some,
else the assumptions below.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from msmbuild.config import BatchConfig, Price
from msmbuild.generate.backends.base import GenRequest
from msmbuild.generate.backends.pricing import estimate_cost
from msmbuild.generate.caching import estimated_tokens, min_cacheable_tokens

CHARS_PER_TOKEN = 4
# Assumed output sizes: a list item is a sentence or two; a document is ~6k characters
# (mid-range of the paper's 0.7k-25k); a critique a paragraph.
ITEM_OUTPUT_TOKENS = 60
DOC_OUTPUT_TOKENS = 1500
CRITIQUE_OUTPUT_TOKENS = 300


def input_tokens(request: GenRequest) -> int:
    """Estimated input tokens of one request."""
    return (len(request.system_text) + len(request.user_text) + len(request.context)) // CHARS_PER_TOKEN


def list_size(request: GenRequest) -> int:
    """How many items a structured request asks for (1 for free text)."""
    if request.items_asked:
        return request.items_asked
    schema: dict[str, Any] = request.schema or {}
    for prop in (schema.get("properties") or {}).values():
        if isinstance(prop, dict) and prop.get("type") == "array":
            return int(prop.get("minItems") or 1)
    return 1


def assumed_output_tokens(request: GenRequest) -> int:
    """The assumed answer length of a request's stage."""
    if request.schema is not None:
        return ITEM_OUTPUT_TOKENS * list_size(request)
    return CRITIQUE_OUTPUT_TOKENS if request.stage == "critique" else DOC_OUTPUT_TOKENS


def cached_context_tokens(model: str, request: GenRequest, prompt_caching: bool) -> int:
    """Tokens of the request's shared context that are read from the prompt cache (0: none).

    The backend marks the context for caching when ``prompt_caching`` is on and it reaches
    the model's minimum cacheable length; below it, the context is plain input.
    """
    if not prompt_caching or not request.context:
        return 0
    tokens = estimated_tokens(request.context)
    return tokens if tokens >= min_cacheable_tokens(model) else 0


def stage_cost(model: str, new: Sequence[GenRequest], output_tokens: float, prices: Mapping[str, Price],
               batch: BatchConfig | None, prompt_caching: bool = False) -> float:
    """Estimated USD of the new requests of one stage (batch price when they would be batched).

    With a cacheable shared context, one request writes it to the cache and every request
    reads it at the cache-read price; the rest of each request is plain input.
    """
    if not new:
        return 0.0
    use_batch = batch is not None and batch.enabled and len(new) >= batch.threshold
    mean_in = sum(input_tokens(r) for r in new) / len(new)
    ctx = cached_context_tokens(model, new[0], prompt_caching)
    if not ctx:
        return estimate_cost(model, len(new), round(mean_in), round(output_tokens), prices, use_batch)
    return (estimate_cost(model, len(new), round(mean_in) - ctx, round(output_tokens), prices, use_batch,
                          cache_read_tokens=ctx, cache_write_tokens=ctx)
            - estimate_cost(model, 1, 0, 0, prices, use_batch, cache_read_tokens=ctx))


class SpendingCap:
    """``budget_usd`` of one corpus: refuse a stage whose new calls would cross the cap.

    Checked before each stage's requests are sent, on the same estimate as ``msmbuild
    plan``; what earlier stages received is already in the store, so stopping loses
    nothing. Spending counts from the start of the current build (the workflow's marker)
    or, without one, of the current command.
    """

    def __init__(self, corpus: str, cap_usd: float, model: str, prices: Mapping[str, Price],
                 batch: BatchConfig | None, spent_before_usd: float = 0.0, prompt_caching: bool = False):
        self.corpus, self.cap_usd, self.model = corpus, cap_usd, model
        self.prices, self.batch, self.prompt_caching = prices, batch, prompt_caching
        self.spent_before_usd = spent_before_usd

    def check(self, new: Sequence[GenRequest], output_tokens: float, spent_now_usd: float, what: str) -> None:
        """Raise BudgetError when sending these new requests could cross the cap."""
        from msmbuild.errors import BudgetError

        spent = self.spent_before_usd + spent_now_usd
        estimate = stage_cost(self.model, new, output_tokens, self.prices, self.batch, self.prompt_caching)
        if new and spent + estimate > self.cap_usd:
            raise BudgetError(
                f"params.yaml: corpora.{self.corpus}.budget_usd ${self.cap_usd:.2f} would be crossed: "
                f"${spent:.4f} spent in this build, and the next {len(new)} new {what} calls would "
                f"cost about ${estimate:.4f}. Nothing was sent for them; every answer received so far "
                f"is stored. See `msmbuild plan {self.corpus}`, raise budget_usd and run again.")

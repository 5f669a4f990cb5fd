"""What generating one AFT dataset will send and cost, before anything is sent.

The requests are those of a first round in which nothing falls short: per section one
``aft_domains`` call (``domains: model``), per domain its query batches, and per query
one reply and one judge call. They are built by the generator's own request builders
(msmbuild.generate.demonstrations), so prompts, contexts and schemas are the real ones;
what the model has not answered yet (domains, queries, replies) is stood in by text of
the assumed length. Judge rejections, malformed replies and near-duplicates add backfill
rounds that no estimate can count in advance.

Every AFT call sends the shared spec context (the whole spec under ``context:
full_incremental``). It is priced as ``msmbuild plan`` prices a corpus's: the calls that
share one cache prefix (the same context and tool schema) pay one cache write and then
cache reads of the context when the backend would mark it (``backends.anthropic
.prompt_caching`` and a prefix that reaches the model's minimum cacheable length), plain
input otherwise (``cached_context_tokens``, the rule the spending cap and corpus plans
use); a stage whose calls reach ``batch.threshold`` gets the batch price.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from msmbuild.generate.backends.base import GenRequest
from msmbuild.generate.demonstrations import (
    QUERIES_PER_CALL,
    domains_request,
    judge_request,
    queries_request,
    reply_request,
    section_contexts,
    sections_as_domains,
    stand_in_domains,
)
from msmbuild.generate.estimate import (
    CHARS_PER_TOKEN,
    ITEM_OUTPUT_TOKENS,
    assumed_output_tokens,
    cached_context_tokens,
    input_tokens,
)
from msmbuild.generate.stages import sampling_for
from msmbuild.spec import parse_spec

if TYPE_CHECKING:
    from msmbuild.config import Params

__all__ = ["JUDGE_OUTPUT_TOKENS", "QUERY_OUTPUT_TOKENS", "DemonstrationPlan", "plan_demonstrations"]

QUERY_OUTPUT_TOKENS = ITEM_OUTPUT_TOKENS  # one proposed user message
JUDGE_OUTPUT_TOKENS = 120  # a verdict and its reason


@dataclass
class Planned:
    """``count`` calls like ``request`` (same context and schema), each answering ``output_tokens``."""

    request: GenRequest
    count: int
    output_tokens: int


@dataclass
class DemonstrationPlan:
    """One generated AFT dataset: examples (before the judge), calls per stage, estimated USD."""

    examples: int
    sections: int
    domains: int
    calls: dict[str, int] = field(default_factory=dict)
    cost_usd: float = 0.0
    context_cached: bool = False  # the spec context is priced as cache reads (anthropic)
    cost_usd_no_batch: float = 0.0  # the same calls at the Messages API price
    batched_stages: list[str] = field(default_factory=list)  # stages priced as Message Batches
    input_tokens: dict[str, int] = field(default_factory=dict)  # mean input tokens per request, spec context included

    @property
    def requests(self) -> int:
        """All calls of the first round."""
        return sum(self.calls.values())


def _filler(tokens: int, what: str) -> str:
    """Stand-in text of about ``tokens`` tokens."""
    chars = tokens * CHARS_PER_TOKEN
    return (f"({what} not generated yet) " * (1 + chars // (len(what) + 20)))[:chars]


def planned_requests(params: Params, name: str) -> tuple[list[Planned], int, int]:
    """The first round's calls of ``aft.<name>``, the number of sections and of domains."""
    cfg = params.aft[name]
    sampling = sampling_for(params, cfg.backend)
    sections = section_contexts(parse_spec(cfg.spec, cfg.template_vars), cfg)
    per_example = params.plan.tokens_per_aft_example
    planned: list[Planned] = []
    if cfg.domains == "model":
        domains = []
        for section in sections:
            req = domains_request(cfg, section, sampling, cfg.n_domains)
            planned.append(Planned(req, 1, assumed_output_tokens(req)))
            domains += stand_in_domains(section, cfg.n_domains, ITEM_OUTPUT_TOKENS * CHARS_PER_TOKEN)
    else:
        domains = sections_as_domains(sections)
    query = _filler(QUERY_OUTPUT_TOKENS, "query")
    reply = _filler(per_example, "reply")
    for domain in domains:
        for batch in range(math.ceil(cfg.n_queries / QUERIES_PER_CALL)):
            n = min(QUERIES_PER_CALL, cfg.n_queries - batch * QUERIES_PER_CALL)
            req = queries_request(cfg, domain, sampling, batch, n)
            planned.append(Planned(req, 1, assumed_output_tokens(req)))
        planned.append(Planned(reply_request(cfg, domain, sampling, query), cfg.n_queries, per_example))
        planned.append(Planned(judge_request(cfg, domain, sampling, query, reply), cfg.n_queries,
                               JUDGE_OUTPUT_TOKENS))
    return planned, len(sections), len(domains)


def plan_demonstrations(params: Params, name: str) -> DemonstrationPlan:
    """Calls per stage and (anthropic backend) estimated USD of generating ``aft.<name>``."""
    cfg = params.aft[name]
    planned, n_sections, n_domains = planned_requests(params, name)
    plan = DemonstrationPlan(n_domains * cfg.n_queries, n_sections, n_domains)
    tokens: dict[str, int] = {}
    for p in planned:
        plan.calls[p.request.stage] = plan.calls.get(p.request.stage, 0) + p.count
        tokens[p.request.stage] = tokens.get(p.request.stage, 0) + input_tokens(p.request) * p.count
    plan.input_tokens = {stage: round(t / plan.calls[stage]) for stage, t in tokens.items()}
    if cfg.backend == "anthropic":
        plan.cost_usd, plan.context_cached = _price(params, planned)
        plan.cost_usd_no_batch, _ = _price(params, planned, batches=False)
        acfg = params.backends.anthropic
        plan.batched_stages = [s for s, n in plan.calls.items() if acfg.batch.enabled and n >= acfg.batch.threshold]
    return plan


def _price(params: Params, planned: list[Planned], batches: bool = True) -> tuple[float, bool]:
    """USD of the planned calls, with cache writes and reads of each shared prefix, and
    whether any context is priced as cached."""
    from msmbuild.generate.backends.pricing import estimate_cost
    from msmbuild.generate.caching import estimated_tokens

    acfg = params.backends.anthropic
    model, prices = acfg.model, params.prices
    per_stage: dict[str, int] = {}
    prefixes: dict[tuple[str, str, str], list[Planned]] = {}
    for p in planned:
        r = p.request
        per_stage[r.stage] = per_stage.get(r.stage, 0) + p.count
        prefix = (r.stage, r.context, json.dumps(r.schema, sort_keys=True))
        prefixes.setdefault(prefix, []).append(p)
    total, any_cached = 0.0, False
    for (stage, context, _schema), group in prefixes.items():
        k = sum(p.count for p in group)
        prompt_in = round(sum((len(p.request.system) + len(p.request.prompt)) // CHARS_PER_TOKEN * p.count
                              for p in group) / k)
        out = round(sum(p.output_tokens * p.count for p in group) / k)
        batch = batches and acfg.batch.enabled and per_stage[stage] >= acfg.batch.threshold
        # the backend marks a context long enough to cache when another request shares its prefix
        ctx = cached_context_tokens(model, group[0].request, acfg.prompt_caching) if k > 1 else 0
        if ctx:
            any_cached = True
            total += estimate_cost(model, k, prompt_in, out, prices, batch,
                                   cache_read_tokens=ctx, cache_write_tokens=ctx) \
                - estimate_cost(model, 1, 0, 0, prices, batch, cache_read_tokens=ctx)
        else:
            total += estimate_cost(model, k, prompt_in + estimated_tokens(context), out, prices, batch)
    return total, any_cached

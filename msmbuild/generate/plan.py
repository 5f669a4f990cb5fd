"""``msmbuild plan``: per stage, how many calls are cached, how many are new, and what the
new ones will cost, before anything is spent.

Counts come from walking the real cascade (tree → assertions, doc types → ideas →
documents → critique, revise) with the real request builders (CorpusRequests, the shared
spec context of the corpus's policy), looking every request up in the store instead of
sending it. A cached answer is read and feeds the next stage's requests, so a rebuild or a
one-section edit is priced exactly down to the new calls; where an answer is not cached,
the next stage is walked with a stand-in answer of the requested shape, whose requests are
new by construction. Input tokens are measured on the real prompts (about four characters
a token); output tokens are the mean of cached answers, else the assumptions in
msmbuild.generate.estimate. Prices come from genai-prices, or ``prices:`` in params.yaml;
the shared spec context is priced as one cache write per stage and cache reads after it
when the backend would mark it (its length reaches the model's minimum cacheable prefix),
as plain input otherwise. A model genai-prices flags deprecated is named in ``warnings``;
otherwise a note says the Models API checks it at build start (plan runs offline).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from msmbuild.config import Params, open_store
from msmbuild.errors import MsmbuildError
from msmbuild.generate.backends.base import GenRequest, GenResult
from msmbuild.generate.corpus import corpus_config
from msmbuild.generate.estimate import (
    DOC_OUTPUT_TOKENS,
    assumed_output_tokens,
    input_tokens,
    list_size,
    stage_cost,
)
from msmbuild.generate.identity import shared_context
from msmbuild.generate.stages import (
    StageRun,
    iter_subdomains,
    model_tree,
    plan_subdomains,
    sampling_for,
    structural_tree,
    write_documents,
)
from msmbuild.spec import parse_spec

__all__ = ["DOC_OUTPUT_TOKENS", "CorpusPlan", "StagePlan", "batch_line", "format_plan", "plan_corpus"]


@dataclass
class StagePlan:
    """One stage of one corpus: requests, how many are cached (None: unknown), tokens, cost of the new ones."""

    stage: str
    requests: int
    cached: int | None
    input_tokens: int  # mean per request
    output_tokens: int  # mean per request (measured on cached answers when there are some)
    cost_usd: float = 0.0
    new_requests: list[GenRequest] = field(default_factory=list, repr=False)
    cost_usd_no_batch: float = 0.0  # the same calls at the Messages API price
    batched: bool = False  # priced as Message Batches (the stage reaches batch.threshold)

    @property
    def new(self) -> int:
        """Requests that would be sent to the backend."""
        return self.requests - (self.cached or 0)


@dataclass
class CorpusPlan:
    """The plan of one corpus."""

    corpus: str
    backend: str
    model: str
    subdomains: int
    stages: list[StagePlan] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def cost_usd(self) -> float:
        """Estimated USD of the new calls (unknown cache counted as new)."""
        return sum(s.cost_usd for s in self.stages)

    @property
    def cost_usd_no_batch(self) -> float:
        """The same calls without Message Batches pricing."""
        return sum(s.cost_usd_no_batch for s in self.stages)


class _KeyOnly:
    """Stands in for a backend when only keys are needed (identity of the real one)."""

    def __init__(self, params: Params, name: str):
        self.name = name
        try:
            self._identity: dict | None = self._lookup(params, name)
        except MsmbuildError:  # e.g. an hf model not trained yet: cached counts unknown
            self._identity = None

    @staticmethod
    def _lookup(params: Params, name: str) -> dict:
        from msmbuild.generate.backends import make_backend

        backend = make_backend(name, params)
        try:
            return backend.identity()
        finally:
            backend.close()

    def identity(self) -> dict:
        return self._identity or {"backend": self.name, "unknown": True}


_STAND_IN = itertools.count()


def _stand_in(request: GenRequest) -> GenResult:
    """An answer of the requested shape for a call not made; its text names no real answer."""
    n = next(_STAND_IN)
    if request.schema is None:
        return GenResult(text=f"(answer {n} not generated yet)", produced_by_model=False)
    schema: dict[str, Any] = request.schema
    list_name = next(iter(schema.get("required") or ["items"]))
    item = schema.get("properties", {}).get(list_name, {}).get("items", {})
    props = item.get("properties", {}) if isinstance(item, dict) else {}
    items = [{name: True if spec.get("type") == "boolean" else f"({name} {n}.{k} not generated yet)"
              for name, spec in props.items()} for k in range(list_size(request))]
    return GenResult(text="", data={list_name: items}, produced_by_model=False)


class _PlanRun(StageRun):
    """A StageRun that looks every request up instead of sending it, and counts."""

    known: bool = True  # False when the backend's identity (so every key) is unknown
    counts: dict[str, dict[str, Any]]

    def call(self, requests: Sequence[GenRequest], tags: Sequence[str], desc: str  # type: ignore[override]
             ) -> list[GenResult]:
        results = []
        for request in requests:
            c = self.counts.setdefault(request.stage, {"requests": 0, "cached": 0, "in": 0,
                                                        "cached_out": [], "new": []})
            c["requests"] += 1
            c["in"] += input_tokens(request)  # the shared spec context included: it is priced
            key = self.key(request)
            found = self.store.lookup_json(key) if self.known else None
            if found is not None:
                res = GenResult.from_json(found.value)
                c["cached"] += 1
                c["cached_out"].append(res.usage.output_tokens)
            else:
                res = _stand_in(request)
                c["new"].append(request)
            self.rows.append({"key": key, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0,
                              "error": ""})
            results.append(res)
        return results


def plan_corpus(params: Params, corpus: str) -> CorpusPlan:
    """Per stage: requests, cached, new, tokens, estimated USD of the new calls."""
    cfg = corpus_config(params, corpus)
    spec = parse_spec(cfg.spec, cfg.spec_variables())
    store = open_store(params)
    context, context_key = shared_context(cfg, spec.full_text, spec.preamble)
    key_backend = _KeyOnly(params, cfg.backend)
    run = _PlanRun(store, key_backend, corpus, cfg, sampling_for(params, cfg.backend), False,  # type: ignore[arg-type]
                   context=context, context_key=context_key)
    run.known = key_backend._identity is not None
    run.counts = {}
    model = params.backends.anthropic.model if cfg.backend == "anthropic" else (
        params.backends.hf.model if cfg.backend == "hf" else "offline (not a model)")
    tree = model_tree(spec, run) if cfg.decomposition == "model" else structural_tree(spec)
    assertions, ideas = plan_subdomains(tree, run)
    write_documents(tree, assertions, ideas, run)
    plans: list[StagePlan] = []
    warnings: list[str] = []
    notes: list[str] = []
    for stage, c in run.counts.items():
        n = c["requests"]
        out = (sum(c["cached_out"]) / len(c["cached_out"]) if c["cached_out"]
               else sum(assumed_output_tokens(r) for r in c["new"]) / max(1, len(c["new"])))
        plans.append(StagePlan(stage, n, c["cached"] if run.known else None, round(c["in"] / max(1, n)),
                               round(out), 0.0, c["new"]))
    if cfg.decomposition == "model" and run.counts.get("subdomains", {}).get("new"):
        warnings.append(f"decomposition: model; the model chooses up to max_subdomains ({cfg.max_subdomains}) per "
                        "domain, counted here at that maximum (an upper bound)")
    if cfg.backend == "anthropic":
        _price(params, model, plans, warnings, notes)
    return CorpusPlan(corpus, cfg.backend, model, len(iter_subdomains(tree)), plans, warnings, notes)


def _price(params: Params, model: str, plans: list[StagePlan], warnings: list[str], notes: list[str]) -> None:
    """Fill each stage's estimated USD (the spending cap's estimate) and the model's deprecation line."""
    from msmbuild.generate.models import build_start_note, deprecation_warning

    acfg = params.backends.anthropic
    key = "backends.anthropic.model"
    if (warning := deprecation_warning(model, key)) is not None:
        warnings.append(warning)
    else:
        notes.append(build_start_note(model, key))
    for p in plans:
        p.cost_usd = stage_cost(model, p.new_requests, p.output_tokens, params.prices, acfg.batch,
                                acfg.prompt_caching)
        p.cost_usd_no_batch = stage_cost(model, p.new_requests, p.output_tokens, params.prices, None,
                                         acfg.prompt_caching)
        p.batched = acfg.batch.enabled and len(p.new_requests) >= acfg.batch.threshold


def format_plan(plans: list[CorpusPlan]) -> str:
    """A plain-text table per corpus, then the total of the new calls."""
    lines = []
    for cp in plans:
        note = " (offline backend: not a model, free)" if cp.backend == "offline" else ""
        lines.append(f"corpus {cp.corpus}: backend {cp.backend}, model {cp.model}{note}; "
                     f"{cp.subdomains} subdomains")
        lines.append(f"  {'stage':<11} {'requests':>9} {'cached':>7} {'new':>7} {'in tok/req':>10} "
                     f"{'out tok/req':>11} {'new USD':>10}")
        for s in cp.stages:
            cached = "-" if s.cached is None else str(s.cached)
            lines.append(f"  {s.stage:<11} {s.requests:>9} {cached:>7} {s.new:>7} {s.input_tokens:>10} "
                         f"{s.output_tokens:>11} {s.cost_usd:>10.4f}")
        lines.append(f"  {'total':<11} {sum(s.requests for s in cp.stages):>9} "
                     f"{sum(s.cached or 0 for s in cp.stages):>7} {sum(s.new for s in cp.stages):>7} "
                     f"{'':>10} {'':>11} {cp.cost_usd:>10.4f}")
        lines.extend(f"  warning: {w}" for w in cp.warnings)
        lines.extend(f"  note: {n}" for n in cp.notes)
    lines.append(f"new calls: ${sum(cp.cost_usd for cp in plans):.4f} estimated "
                 "(cached calls cost nothing; prices from genai-prices or params.yaml prices:; "
                 "tokens ~4 characters each, in tok/req includes the spec context sent with each request; "
                 "see msmbuild.generate.plan)")
    batched = [f"{cp.corpus}/{s.stage}" for cp in plans for s in cp.stages if s.batched]
    if batched:
        lines.append(batch_line(sum(cp.cost_usd for cp in plans), sum(cp.cost_usd_no_batch for cp in plans),
                                batched))
    return "\n".join(lines)


def batch_line(with_batch: float, without: float, stages: list[str]) -> str:
    """The line that says where Message Batches pricing is assumed, and the price without it."""
    shown = ", ".join(stages[:6]) + (f" and {len(stages) - 6} more" if len(stages) > 6 else "")
    return (f"  Message Batches pricing assumed (backends.anthropic.batch: enabled, stages of at least "
            f"batch.threshold new requests: {shown}): ${with_batch:.2f}; without batches: ${without:.2f}")

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
from msmbuild.generate.backends.base import GenRequest, GenResult, Usage
from msmbuild.generate.backends.pricing import cost_usd
from msmbuild.generate.calls import call_key, legacy_hit
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
    """One stage of one corpus: requests, how many are cached (None: unknown), tokens, cost of the new ones.

    With the anthropic backend, the new requests' input is split as the API would bill
    the layout a run sends (``AnthropicBackend.simulate_usage``): plain, cache-write and
    cache-read tokens (totals), and how many go in Message Batches.
    """

    stage: str
    requests: int
    cached: int | None
    input_tokens: int  # mean per request
    output_tokens: int  # mean per request (measured on cached answers when there are some)
    cost_usd: float = 0.0
    new_requests: list[GenRequest] = field(default_factory=list, repr=False)
    cost_usd_no_batch: float = 0.0  # the same calls at the Messages API price
    uncached_input_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    batched: int = 0  # new requests sent in Message Batches
    older_prompt: int = 0  # cached answers made by an older prompt version (kept until a refresh)
    split: dict[bool, list[int]] = field(default_factory=dict, repr=False)  # batched? -> [n, plain, write, read]

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
    refresh: CorpusPlan | None = None  # what `msmbuild generate refresh` would send, when it would remake anything

    @property
    def cost_usd(self) -> float:
        """Estimated USD of the new calls (unknown cache counted as new)."""
        return sum(s.cost_usd for s in self.stages)

    @property
    def cost_usd_no_batch(self) -> float:
        """The same calls without Message Batches pricing."""
        return sum(s.cost_usd_no_batch for s in self.stages)

    @property
    def older_prompt(self) -> int:
        """Cached answers made by an older prompt version, over all stages."""
        return sum(s.older_prompt for s in self.stages)


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
    simulator: Any = None  # an AnthropicBackend whose layout and cache accounting price the new requests
    batch: Any = None  # the anthropic batch settings
    cache: set[str]

    def call(self, requests: Sequence[GenRequest], tags: Sequence[str], desc: str  # type: ignore[override]
             ) -> list[GenResult]:
        results = []
        new: dict[str, GenRequest] = {}
        for request in requests:
            c = self.counts.setdefault(request.stage, {"requests": 0, "cached": 0, "in": 0, "older": 0,
                                                        "cached_out": [], "new": [], "split": {}})
            c["requests"] += 1
            c["in"] += input_tokens(request)  # the shared spec context included: it is priced
            key = call_key(self.store, self.backend, request)  # type: ignore[arg-type]
            found = self.store.lookup_json(key) if self.known else None
            if found is None and self.known and not self.refresh_stale \
                    and (old := legacy_hit(self.store, self.backend.identity(), request)) is not None:
                self.resolved[key], found = old
                request = request.legacy  # type: ignore[assignment]
                c["older"] += 1
            if found is not None and self.refresh_stale \
                    and found.value.get("meta", {}).get("context_digest", "") != self.context_digest():
                found = None  # made against an older spec: a refresh makes it again
            if found is not None:
                res = GenResult.from_json(found.value)
                c["cached"] += 1
                c["cached_out"].append(res.usage.output_tokens)
            else:
                res = _stand_in(request)
                if key not in new:
                    c["new"].append(request)
                    new[key] = request
            self.rows.append({"key": self.resolved.get(key, key), "input_tokens": 0, "output_tokens": 0,
                              "cost_usd": 0.0, "error": "", "prompt_version": request.prompt_version})
            results.append(res)
        if new and self.simulator is not None:
            batched = self.batch.enabled and len(new) >= self.batch.threshold
            for req, split in zip(new.values(), self.simulator.simulate_usage(list(new.values()), self.cache),
                                  strict=True):
                total = self.counts[req.stage]["split"].setdefault(batched, [0, 0, 0, 0])
                for i, v in enumerate((1, split.plain, split.write, split.read)):
                    total[i] += v
        return results


def plan_corpus(params: Params, corpus: str, *, refresh: bool = False) -> CorpusPlan:
    """Per stage: requests, cached, new, tokens, estimated USD of the new calls.

    When answers made by an older prompt version (or, under full_incremental, against an
    older spec) stand in for current ones, ``refresh`` of the result is the plan of
    ``msmbuild generate refresh``, which makes them again.
    """
    cfg = corpus_config(params, corpus)
    spec = parse_spec(cfg.spec, cfg.spec_variables())
    store = open_store(params)
    context, context_key = shared_context(cfg, spec.context_text, spec.preamble)
    key_backend = _KeyOnly(params, cfg.backend)
    run = _PlanRun(store, key_backend, corpus, cfg, sampling_for(params, cfg.backend), False,  # type: ignore[arg-type]
                   context=context, context_key=context_key, refresh_stale=refresh,
                   legacy_context=shared_context(cfg, spec.full_text, spec.preamble)[0])
    run.known = key_backend._identity is not None
    run.counts, run.cache = {}, set()
    if cfg.backend == "anthropic":
        from msmbuild.generate.backends.anthropic_backend import AnthropicBackend

        run.simulator = AnthropicBackend(params.backends.anthropic, params.prices)
        run.batch = params.backends.anthropic.batch
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
        split = c["split"]
        plans.append(StagePlan(stage, n, c["cached"] if run.known else None, round(c["in"] / max(1, n)),
                               round(out), 0.0, c["new"],
                               uncached_input_tokens=sum(t[1] for t in split.values()),
                               cache_write_tokens=sum(t[2] for t in split.values()),
                               cache_read_tokens=sum(t[3] for t in split.values()),
                               batched=split.get(True, [0])[0], older_prompt=c["older"], split=split))
    if cfg.decomposition == "model" and run.counts.get("subdomains", {}).get("new"):
        warnings.append(f"decomposition: model; the model chooses up to max_subdomains ({cfg.max_subdomains}) per "
                        "domain, counted here at that maximum (an upper bound)")
    if cfg.backend == "anthropic":
        _price(params, model, plans, warnings, notes)
    plan = CorpusPlan(corpus, cfg.backend, model, len(iter_subdomains(tree)), plans, warnings, notes)
    if not refresh and run.known and (plan.older_prompt or _older_spec(params, corpus)):
        plan.refresh = plan_corpus(params, corpus, refresh=True)
    return plan


def _older_spec(params: Params, corpus: str) -> bool:
    """True when some built documents of the corpus were made against an older spec."""
    from msmbuild.generate.corpus import stale_documents

    counts = stale_documents(params, corpus) if params.corpora[corpus].context == "full_incremental" else None
    return bool(counts and counts[0])


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
        if p.split:  # the layout's own split of the new requests' input
            p.cost_usd = sum(cost_usd(model, Usage(input_tokens=t[1], cache_creation_input_tokens=t[2],
                                                   cache_read_input_tokens=t[3], output_tokens=t[0] * p.output_tokens),
                                      params.prices, batched) for batched, t in p.split.items())
        else:
            p.cost_usd = stage_cost(model, p.new_requests, p.output_tokens, params.prices, acfg.batch,
                                    acfg.prompt_caching)
        if p.split:
            p.cost_usd_no_batch = sum(
                cost_usd(model, Usage(input_tokens=t[1], cache_creation_input_tokens=t[2],
                                      cache_read_input_tokens=t[3], output_tokens=t[0] * p.output_tokens),
                         params.prices, False) for t in p.split.values())
        else:
            p.cost_usd_no_batch = stage_cost(model, p.new_requests, p.output_tokens, params.prices, None,
                                             acfg.prompt_caching)


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
        if any(s.uncached_input_tokens or s.cache_read_tokens for s in cp.stages):
            lines.append(f"  {'stage':<11} {'batched':>9} {'uncached in':>12} {'cache write':>12} {'cache read':>12}"
                         "   (input tokens of the new requests, as the request layout is billed)")
            for s in cp.stages:
                lines.append(f"  {s.stage:<11} {s.batched:>9} {s.uncached_input_tokens:>12} "
                             f"{s.cache_write_tokens:>12} {s.cache_read_tokens:>12}")
        if cp.refresh is not None:
            older = cp.older_prompt
            what = f"{older} cached answers were made by an older prompt version" if older else \
                "some documents were made against an older spec"
            lines.append(f"  refresh: {what} (kept and used); `msmbuild generate refresh {cp.corpus}` would "
                         f"send {sum(s.new for s in cp.refresh.stages)} requests, ${cp.refresh.cost_usd:.4f} estimated")
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

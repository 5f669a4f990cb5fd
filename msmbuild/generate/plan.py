"""``msmbuild plan``: requests per stage and an estimated cost, before anything is spent.

Counts follow from the spec and the corpus settings (subdomains × doc types × ideas ×
samples). Input tokens are measured on the real prompts of the first stages (about four
characters a token); output tokens are assumptions written down below. Prices come from
genai-prices, or ``prices:`` in params.yaml; the shared spec context is priced as one
cache write per stage and cache reads after it when the backend would mark it (its
length reaches the model's minimum cacheable prefix), as plain input otherwise. A model
the SDK lists as deprecated is named in ``warnings``; a retired one is an error. Where a stage's
requests can be built without calling the generator (the structural tree's first
assertions calls, the model tree's decomposition calls) the plan also counts how many are
already in the store; later stages depend on earlier answers and show "-".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from msmbuild.config import Params, open_store
from msmbuild.errors import MsmbuildError
from msmbuild.generate.calls import request_key
from msmbuild.generate.corpus import corpus_config
from msmbuild.generate.identity import shared_context
from msmbuild.generate.stages import (
    CorpusRequests,
    assertion_requests,
    iter_subdomains,
    sampling_for,
    structural_tree,
    subdomain_requests,
)
from msmbuild.spec import parse_spec

CHARS_PER_TOKEN = 4
# Assumed output sizes: a list item is a sentence or two; a document is ~6k characters
# (mid-range of the paper's 0.7k-25k); a critique a paragraph.
ITEM_OUTPUT_TOKENS = 60
DOC_OUTPUT_TOKENS = 1500
CRITIQUE_OUTPUT_TOKENS = 300


@dataclass
class StagePlan:
    """One stage of one corpus: requests, how many are cached (None: unknown), tokens, cost."""

    stage: str
    requests: int
    cached: int | None
    input_tokens: int
    output_tokens: int
    cost_usd: float = 0.0


@dataclass
class CorpusPlan:
    """The plan of one corpus."""

    corpus: str
    backend: str
    model: str
    subdomains: int
    stages: list[StagePlan] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def cost_usd(self) -> float:
        """Estimated USD of the uncached part (unknown cache counted as uncached)."""
        return sum(s.cost_usd for s in self.stages)


def _backend_identity(params: Params, name: str) -> dict | None:
    """The backend's identity (what its keys hold); None when it cannot be made yet."""
    from msmbuild.generate.backends import make_backend

    try:
        backend = make_backend(name, params)
        try:
            return backend.identity()
        finally:
            backend.close()
    except MsmbuildError:  # e.g. an hf model not trained yet: cached counts unknown
        return None


def _tokens(requests) -> int:
    """Mean tokens per request of system text and prompt (the shared context is counted apart)."""
    if not requests:
        return 0
    chars = sum(len(r.system) + len(r.prompt) for r in requests)
    return chars // CHARS_PER_TOKEN // len(requests)


def plan_corpus(params: Params, corpus: str) -> CorpusPlan:
    """Counts, cached counts and estimated cost of every stage of one corpus."""
    cfg = corpus_config(params, corpus)
    spec = parse_spec(cfg.spec, cfg.spec_variables())
    store = open_store(params)
    identity = _backend_identity(params, cfg.backend)
    context, context_key = shared_context(cfg, spec.full_text, spec.preamble)
    build = CorpusRequests(cfg, sampling_for(params, cfg.backend), context, context_key)
    model = params.backends.anthropic.model if cfg.backend == "anthropic" else (
        params.backends.hf.model if cfg.backend == "hf" else "offline (not a model)")
    plans: list[StagePlan] = []
    warnings: list[str] = []

    def cached(reqs) -> int | None:
        if identity is None:
            return None
        return sum(store.lookup_json(request_key(store, identity, r)) is not None for r in reqs)

    if cfg.decomposition == "model":
        reqs = subdomain_requests(spec, build)
        plans.append(StagePlan("subdomains", len(reqs), cached(reqs), _tokens(reqs),
                               ITEM_OUTPUT_TOKENS * cfg.max_subdomains))
        # the model chooses how many; the plan assumes half the cap
        n_sub = len(reqs) * max(1, cfg.max_subdomains // 2)
        sample: list = []
    else:
        tree = structural_tree(spec)
        n_sub = len(iter_subdomains(tree))
        sample = assertion_requests(tree, build)
    prompt_tokens = _tokens(sample) if sample else 500
    docs = n_sub * cfg.n_doc_types * cfg.n_doc_ideas * cfg.n_samples
    assertion_tokens = cfg.n_assertions * ITEM_OUTPUT_TOKENS
    plans += [
        StagePlan("assertions", n_sub, cached(sample) if sample else None, prompt_tokens,
                  ITEM_OUTPUT_TOKENS * cfg.n_assertions),
        StagePlan("doc_types", n_sub, None, prompt_tokens + assertion_tokens, ITEM_OUTPUT_TOKENS * cfg.n_doc_types),
        StagePlan("ideas", n_sub * cfg.n_doc_types, None, prompt_tokens + assertion_tokens + 100,
                  ITEM_OUTPUT_TOKENS * cfg.n_doc_ideas),
        StagePlan("document", docs, None, prompt_tokens + assertion_tokens + 200, DOC_OUTPUT_TOKENS),
    ]
    if cfg.revise:
        plans += [StagePlan("critique", docs, None, prompt_tokens + DOC_OUTPUT_TOKENS, CRITIQUE_OUTPUT_TOKENS),
                  StagePlan("revise", docs, None, prompt_tokens + DOC_OUTPUT_TOKENS + CRITIQUE_OUTPUT_TOKENS,
                            DOC_OUTPUT_TOKENS)]
    if cfg.backend == "anthropic":
        _price(params, model, context, plans, warnings)
    return CorpusPlan(corpus, cfg.backend, model, n_sub, plans, warnings)


def _price(params: Params, model: str, context: str, plans: list[StagePlan], warnings: list[str]) -> None:
    """Fill each stage's estimated USD (genai-prices or prices:) and the model's deprecation warning."""
    from msmbuild.generate.backends.anthropic_backend import AnthropicBackend
    from msmbuild.generate.backends.pricing import estimate_cost
    from msmbuild.generate.caching import estimated_tokens
    from msmbuild.generate.models import check_not_retired

    acfg = params.backends.anthropic
    if (note := check_not_retired(model, "backends.anthropic.model")) is not None:
        warnings.append(note)
    marks = acfg.prompt_caching and AnthropicBackend(acfg, params.prices).cacheable(context)
    ctx = estimated_tokens(context)
    for p in plans:
        todo = p.requests - (p.cached or 0)
        batch = acfg.batch.enabled and todo >= acfg.batch.threshold
        if marks and todo:
            p.cost_usd = estimate_cost(model, todo, p.input_tokens, p.output_tokens, params.prices, batch,
                                       cache_read_tokens=ctx, cache_write_tokens=ctx) \
                - estimate_cost(model, 1, 0, 0, params.prices, batch, cache_read_tokens=ctx)
        else:
            p.cost_usd = estimate_cost(model, todo, p.input_tokens + ctx, p.output_tokens, params.prices, batch)


def format_plan(plans: list[CorpusPlan]) -> str:
    """A plain-text table per corpus, then the total."""
    lines = []
    for cp in plans:
        note = " (offline backend: not a model, free)" if cp.backend == "offline" else ""
        lines.append(f"corpus {cp.corpus}: backend {cp.backend}, model {cp.model}{note}; "
                     f"{cp.subdomains} subdomains")
        lines.append(f"  {'stage':<11} {'requests':>9} {'cached':>7} {'in tok/req':>10} "
                     f"{'out tok/req':>11} {'est. USD':>10}")
        for s in cp.stages:
            cached = "-" if s.cached is None else str(s.cached)
            lines.append(f"  {s.stage:<11} {s.requests:>9} {cached:>7} {s.input_tokens:>10} "
                         f"{s.output_tokens:>11} {s.cost_usd:>10.2f}")
        lines.append(f"  {'total':<11} {sum(s.requests for s in cp.stages):>9} {'':>7} {'':>10} "
                     f"{'':>11} {cp.cost_usd:>10.2f}")
        lines.extend(f"  warning: {w}" for w in cp.warnings)
    lines.append(f"estimated total: ${sum(cp.cost_usd for cp in plans):.2f} "
                 "(uncached requests; prices from genai-prices or params.yaml prices:; "
                 "tokens ~4 characters each; see msmbuild.generate.plan)")
    return "\n".join(lines)

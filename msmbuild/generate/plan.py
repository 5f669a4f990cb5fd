"""``msmbuild plan``: requests per stage and an estimated cost, before anything is spent.

Counts follow from the spec and the corpus settings (subdomains × doc types × ideas ×
samples). Input tokens are measured on the real prompts of the first stages (about four
characters a token); output tokens are assumptions written down below. Where a stage's
requests can be built without calling the generator (the structural tree's assertions
and doc types, the model tree's decomposition calls) the plan also counts how many are
already in the store; later stages depend on earlier answers and show "-".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from msmbuild.config import Params, open_store
from msmbuild.errors import MsmbuildError
from msmbuild.generate.calls import request_key
from msmbuild.generate.corpus import corpus_config
from msmbuild.generate.stages import (
    iter_subdomains,
    planning_requests,
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
    if not requests:
        return 0
    chars = sum(len(r.system) + len(r.prompt) + len(r.context) for r in requests)
    return chars // CHARS_PER_TOKEN // len(requests)


def plan_corpus(params: Params, corpus: str) -> CorpusPlan:
    """Counts, cached counts and estimated cost of every stage of one corpus."""
    cfg = corpus_config(params, corpus)
    spec = parse_spec(cfg.spec, cfg.template_vars)
    store = open_store(params)
    identity = _backend_identity(params, cfg.backend)
    sampling = sampling_for(params, cfg.backend)
    model = params.backends.anthropic.model if cfg.backend == "anthropic" else (
        params.backends.hf.model if cfg.backend == "hf" else "offline (not a model)")
    plans: list[StagePlan] = []

    def cached(reqs) -> int | None:
        if identity is None:
            return None
        return sum(store.lookup_json(request_key(store, identity, r)) is not None for r in reqs)

    known: dict[str, list] = {}  # stages whose requests are known without any call
    if cfg.decomposition == "model":
        reqs = subdomain_requests(spec, cfg, sampling)
        plans.append(StagePlan("subdomains", len(reqs), None, _tokens(reqs),
                               ITEM_OUTPUT_TOKENS * cfg.n_subdomains))
        n_sub = len(reqs) * cfg.n_subdomains
        sample = []
    else:
        tree = structural_tree(spec)
        n_sub = len(iter_subdomains(tree))
        known["assertions"], known["doc_types"] = planning_requests(tree, cfg, sampling)
        sample = known["assertions"]
    ctx_tokens = _tokens(sample) if sample else 1000
    docs = n_sub * cfg.n_doc_types * cfg.n_doc_ideas * cfg.n_samples
    plans += [
        StagePlan("assertions", n_sub, None, ctx_tokens, ITEM_OUTPUT_TOKENS * cfg.n_assertions),
        StagePlan("doc_types", n_sub, None, ctx_tokens, ITEM_OUTPUT_TOKENS * cfg.n_doc_types),
        StagePlan("ideas", n_sub * cfg.n_doc_types, None, ctx_tokens, ITEM_OUTPUT_TOKENS * cfg.n_doc_ideas),
        StagePlan("document", docs, None, ctx_tokens + 200, DOC_OUTPUT_TOKENS),
    ]
    if cfg.context == "full":
        plans[-1].input_tokens = len(spec.full_text) // CHARS_PER_TOKEN + 200
    if cfg.revise:
        plans += [StagePlan("critique", docs, None, ctx_tokens + DOC_OUTPUT_TOKENS, CRITIQUE_OUTPUT_TOKENS),
                  StagePlan("revise", docs, None, ctx_tokens + DOC_OUTPUT_TOKENS + CRITIQUE_OUTPUT_TOKENS,
                            DOC_OUTPUT_TOKENS)]
    for p in plans:
        if p.stage in known:
            p.cached = cached(known[p.stage])
    if cfg.backend == "anthropic":
        from msmbuild.generate.backends.pricing import estimate_cost

        batch_cfg = params.backends.anthropic.batch
        for p in plans:
            todo = p.requests - (p.cached or 0)
            batch = batch_cfg.enabled and todo >= batch_cfg.threshold
            p.cost_usd = estimate_cost(model, todo, p.input_tokens, p.output_tokens, params.prices, batch)
    return CorpusPlan(corpus, cfg.backend, model, n_sub, plans)


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
    lines.append(f"estimated total: ${sum(cp.cost_usd for cp in plans):.2f} "
                 "(uncached requests; tokens ~4 characters each; see msmbuild.generate.plan)")
    return "\n".join(lines)

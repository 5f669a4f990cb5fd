"""The corpus builder: params.yaml corpus → files under ``build/corpora/<corpus>/``.

Three steps, each one Snakemake rule / DVC stage and one CLI command:

- ``generate_tree``: spec → sections.json, tree.json, calls/tree.parquet
- ``generate_ideas``: tree → assertions.json, ideas.parquet, calls/ideas.parquet
- ``generate_documents``: tree + ideas → documents.parquet, calls/documents.parquet and
  calls.parquet (the three call tables together)

Each writes atomically, only when bytes change, and records its action keys as gc roots
(``build/refs/corpus-<corpus>-<step>.json``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msmbuild.config import CorpusConfig, Params, open_store
from msmbuild.errors import MsmbuildError, SpecError
from msmbuild.fsutil import json_bytes, write_bytes_if_changed
from msmbuild.generate.backends import Backend, make_backend
from msmbuild.generate.calls import CallStats
from msmbuild.generate.estimate import SpendingCap
from msmbuild.generate.identity import shared_context
from msmbuild.generate.stages import (
    FilterReport,
    StageRun,
    filter_documents,
    iter_subdomains,
    model_tree,
    plan_subdomains,
    sampling_for,
    structural_tree,
    write_documents,
)
from msmbuild.hashing import digest_text
from msmbuild.layout import CORPUS_STEPS, Layout
from msmbuild.spec import Spec, parse_spec
from msmbuild.store import Store, write_roots
from msmbuild.tables import SCHEMAS, read_parquet_rows, write_table_if_changed

_COMMAND_STARTED = time.time()


@dataclass
class StageReport:
    """What one step did: calls (hits/misses/cost), counts and the files it changed."""

    corpus: str
    step: str
    backend: str
    produced_by_model: bool
    stats: CallStats = field(default_factory=CallStats)
    counts: dict[str, int] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One human line, naming the backend and whether it is a model."""
        s = self.stats
        counts = ", ".join(f"{v} {k}" for k, v in self.counts.items())
        note = "" if self.produced_by_model else " [offline backend: not a model; text is recombined spec text]"
        cache = (f" (prompt cache: {s.cache_read_input_tokens} tokens read, "
                 f"${s.cache_saving_usd:.4f} saved)") if s.cache_read_input_tokens else ""
        return (f"{self.corpus} {self.step}: {counts}; calls: {s.requests} ({s.hits} cached, "
                f"{s.misses} new, {s.errors} failed), ${s.cost_usd:.4f}{cache}; backend {self.backend}{note}")


def corpus_config(params: Params, corpus: str) -> CorpusConfig:
    """The corpus's settings, or an error naming the known corpora."""
    if corpus not in params.corpora:
        known = ", ".join(sorted(params.corpora)) or "none"
        raise MsmbuildError(f"params.yaml: no corpus {corpus!r} under 'corpora' (known: {known})")
    return params.corpora[corpus]


def spending_cap(params: Params, corpus: str, step: str | None = None) -> SpendingCap | None:
    """The corpus's budget_usd as a cap, minus what its other steps spent in this build."""
    cfg = corpus_config(params, corpus)
    if cfg.budget_usd is None:
        return None
    from msmbuild.buildmark import build_started

    started = build_started() or _COMMAND_STARTED  # without a recorded build: this command
    layout = Layout.of(params)
    spent = 0.0
    for other in CORPUS_STEPS:
        path = layout.step_calls(corpus, other)
        if other != step and path.is_file():
            spent += sum(r["cost_usd"] or 0.0 for r in read_parquet_rows(path)
                         if not r["cache_hit"] and (r.get("made_at") or 0.0) >= started)
    model = params.backends.anthropic.model if cfg.backend == "anthropic" else cfg.backend
    anthropic = cfg.backend == "anthropic"
    batch = params.backends.anthropic.batch if anthropic else None
    caching = anthropic and params.backends.anthropic.prompt_caching
    return SpendingCap(corpus, cfg.budget_usd, model, params.prices, batch, spent, caching)


def _read_json(path: Path, step: str, corpus: str) -> Any:
    if not path.is_file():
        raise MsmbuildError(f"{path}: missing; run `msmbuild generate {step} {corpus}` first")
    return json.loads(path.read_text(encoding="utf-8"))


def _require(path: Path, step: str, corpus: str) -> Path:
    if not path.is_file():
        raise MsmbuildError(f"{path}: missing; run `msmbuild generate {step} {corpus}` first")
    return path


class _Session:
    """Store, backend and run state of one step; closes the backend at the end."""

    def __init__(self, params: Params, corpus: str, max_concurrency: int | None,
                 progress: bool, store: Store | None, backend: Backend | None,
                 refresh: bool | None = None):
        self.params = params
        self.cfg = corpus_config(params, corpus)
        self.layout = Layout.of(params)
        self.store = store or open_store(params)
        self._own_backend = backend is None
        self.backend = backend or make_backend(self.cfg.backend, params, max_concurrency)
        self.run = StageRun(self.store, self.backend, corpus, self.cfg,
                            sampling_for(params, self.cfg.backend), progress,
                            refresh_stale=self.cfg.refresh_stale if refresh is None else refresh)
        self.run.cap = spending_cap(params, corpus)

    def use_spec(self, spec: Spec) -> None:
        """Send the spec context of the corpus's policy first in every call."""
        self.run.context, self.run.context_key = shared_context(self.cfg, spec.full_text, spec.preamble)

    def use_recorded_spec(self) -> None:
        """use_spec with the spec as the tree step recorded it (sections.json)."""
        sections = self.layout.sections(self.run.corpus)
        self.use_spec(Spec.from_json(_read_json(sections, "tree", self.run.corpus)))

    def report(self, step: str, counts: dict[str, int], changed: list[str]) -> StageReport:
        produced = all(r["model"] != "offline (not a model)" for r in self.run.rows) \
            and self.backend.name != "offline"
        return StageReport(self.run.corpus, step, self.backend.name, produced,
                           self.run.stats, counts, changed)

    def write(self, path: Path, data: bytes, changed: list[str]) -> None:
        if write_bytes_if_changed(path, data):
            changed.append(str(path))

    def write_table(self, path: Path, rows: list[dict[str, Any]], schema, changed: list[str]) -> None:
        if write_table_if_changed(path, rows, schema):
            changed.append(str(path))

    def roots(self, step: str, extra: list[str] = ()) -> None:
        keys = [r["key"] for r in self.run.rows if not r["error"]] + list(extra)
        write_roots(self.params.build_dir, f"corpus-{self.run.corpus}-{step}", keys)

    def close(self) -> None:
        if self._own_backend:
            self.backend.close()


def generate_tree(params: Params, corpus: str, *, max_concurrency: int | None = None,
                  progress: bool = True, store: Store | None = None,
                  backend: Backend | None = None, refresh: bool | None = None) -> StageReport:
    """Parse the corpus's spec and build its subdomain tree."""
    cfg = corpus_config(params, corpus)
    spec = parse_spec(cfg.spec, cfg.spec_variables())  # a bad spec fails before anything is written
    s = _Session(params, corpus, max_concurrency, progress, store, backend, refresh)
    try:
        s.use_spec(spec)
        tree = model_tree(spec, s.run) if cfg.decomposition == "model" else structural_tree(spec)
        if not iter_subdomains(tree):
            raise SpecError(f"{cfg.spec}: the {cfg.decomposition} decomposition gave 0 subdomains; "
                            "there is nothing to generate documents from")
        changed: list[str] = []
        s.write(s.layout.sections(corpus), json_bytes(spec.to_json()), changed)
        s.write(s.layout.tree(corpus), json_bytes(tree), changed)
        s.write_table(s.layout.step_calls(corpus, "tree"), s.run.rows, SCHEMAS["calls"], changed)
        s.roots("tree")
        return s.report("tree", {"sections": len(spec.sections), "domains": len(tree["domains"]),
                                 "subdomains": len(iter_subdomains(tree))}, changed)
    finally:
        s.close()


def generate_ideas(params: Params, corpus: str, *, max_concurrency: int | None = None,
                   progress: bool = True, store: Store | None = None,
                   backend: Backend | None = None, refresh: bool | None = None) -> StageReport:
    """Assertions per subdomain, doc types seeing them, ideas per doc type."""
    s = _Session(params, corpus, max_concurrency, progress, store, backend, refresh)
    try:
        s.use_recorded_spec()
        tree = _read_json(s.layout.tree(corpus), "tree", corpus)
        assertions, ideas = plan_subdomains(tree, s.run)
        changed: list[str] = []
        s.write(s.layout.assertions(corpus), json_bytes(assertions), changed)
        s.write_table(s.layout.ideas(corpus), ideas, SCHEMAS["ideas"], changed)
        s.write_table(s.layout.step_calls(corpus, "ideas"), s.run.rows, SCHEMAS["calls"], changed)
        s.roots("ideas")
        return s.report("ideas", {"subdomains": len(assertions), "ideas": len(ideas),
                                  "unsuitable": sum(not r["suitable"] for r in ideas)}, changed)
    finally:
        s.close()


def generate_documents(params: Params, corpus: str, *, max_concurrency: int | None = None,
                       progress: bool = True, store: Store | None = None,
                       backend: Backend | None = None, refresh: bool | None = None) -> StageReport:
    """Documents per suitable idea and sample, optional revision, then filters."""
    s = _Session(params, corpus, max_concurrency, progress, store, backend, refresh)
    try:
        s.use_recorded_spec()
        tree = _read_json(s.layout.tree(corpus), "tree", corpus)
        assertions = _read_json(s.layout.assertions(corpus), "ideas", corpus)
        ideas = read_parquet_rows(_require(s.layout.ideas(corpus), "ideas", corpus))
        docs = write_documents(tree, assertions, ideas, s.run)
        kept, filtered = filter_documents(docs, s.cfg.filters)
        changed: list[str] = []
        s.write_table(s.layout.documents(corpus), kept, SCHEMAS["documents"], changed)
        s.write_table(s.layout.step_calls(corpus, "documents"), s.run.rows, SCHEMAS["calls"], changed)
        all_calls = []
        for step in CORPUS_STEPS:
            path = s.layout.step_calls(corpus, step)
            if path.is_file():
                all_calls.extend(read_parquet_rows(path))
        s.write_table(s.layout.corpus_calls(corpus), all_calls, SCHEMAS["calls"], changed)
        s.roots("documents")
        current = digest_text(s.run.context) if s.run.context else ""
        counts = _filter_counts(len(docs), filtered)
        if s.cfg.context == "full_incremental":
            counts["made against an older spec"] = sum(d["spec_digest"] != current for d in kept)
        return s.report("documents", counts, changed)
    finally:
        s.close()


def _filter_counts(generated: int, f: FilterReport) -> dict[str, int]:
    return {"documents generated": generated, "kept": f.kept, "too short": f.too_short,
            "too long": f.too_long, "near-duplicates": f.near_duplicate}


def generate_corpus(params: Params, corpus: str, *, max_concurrency: int | None = None,
                    progress: bool = True, store: Store | None = None,
                    backend: Backend | None = None, refresh: bool | None = None) -> list[StageReport]:
    """All three steps in order (refresh: regenerate what an older spec made; default: the setting)."""
    store = store or open_store(params)
    return [fn(params, corpus, max_concurrency=max_concurrency, progress=progress,
               store=store, backend=backend, refresh=refresh)
            for fn in (generate_tree, generate_ideas, generate_documents)]


def stale_documents(params: Params, corpus: str) -> tuple[int, int] | None:
    """(documents made against an older revision of the spec, all documents); None if unbuilt.

    Compares each document's recorded spec_digest with the digest of the context the
    corpus's policy would send now; only full_incremental keeps such documents (full
    regenerates them, section never sends the rest of the spec).
    """
    cfg = corpus_config(params, corpus)
    path = Layout.of(params).documents(corpus)
    if not path.is_file():
        return None
    spec = parse_spec(cfg.spec, cfg.spec_variables())
    context, _ = shared_context(cfg, spec.full_text, spec.preamble)
    current = digest_text(context) if context else ""
    rows = read_parquet_rows(path)
    return sum(r.get("spec_digest") not in (None, current) for r in rows), len(rows)

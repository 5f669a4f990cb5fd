"""The corpus builder: params.yaml corpus → files under ``build/corpora/<corpus>/``.

Three steps, each one Snakemake rule / DVC stage and one CLI command:

- ``generate_tree``: spec → sections.json, tree.json, calls/tree.parquet
- ``generate_ideas``: tree → ideas/<file>.parquet, calls/ideas/<file>.parquet (partition files),
  assertions.json and ideas.json (the partitions' index; see msmbuild.generate.idea_partitions)
- ``generate_documents``: tree + ideas.json → documents/<file>.parquet,
  calls/documents/<file>.parquet and documents.json (the partitions' index; see
  msmbuild.generate.partitions)

Each writes atomically, only when bytes change, and records its action keys as gc roots
(``build/refs/corpus-<corpus>-<step>.json``; the ideas and documents steps record their
per-subdomain actions, each of which keeps its calls).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from msmbuild.config import CorpusConfig, Params, open_store
from msmbuild.errors import MsmbuildError, SpecError, StoreError
from msmbuild.fsutil import json_bytes, write_bytes_if_changed
from msmbuild.generate.adoption import adopt_documents, adopt_ideas
from msmbuild.generate.backends import Backend, make_backend
from msmbuild.generate.calls import CallStats
from msmbuild.generate.dedup import DedupIndex, decide, load_signatures, signature_bytes, signatures
from msmbuild.generate.estimate import SpendingCap
from msmbuild.generate.idea_partitions import INDEX_META as IDEAS_INDEX_META
from msmbuild.generate.idea_partitions import (
    batches,
    ideas_partition_keys,
    place_ideas,
    save_idea_partitions,
    trusted_ideas,
)
from msmbuild.generate.identity import shared_context
from msmbuild.generate.partition_files import Member, file_of, remove_unnamed, table_from_bytes
from msmbuild.generate.partitions import (
    VerifiedFiles,
    entry_files,
    indexed_files,
    merge_files,
    old_place,
    old_places,
    old_rows,
    partition_name,
    place_kind,
    read_ideas_index,
    read_index,
    require_ideas_index,
    stored_member,
    trusted_entries,
    write_index,
)
from msmbuild.generate.prompts import load_prompt
from msmbuild.generate.stages import (
    StageRun,
    document_request,
    filter_documents,
    iter_subdomains,
    model_tree,
    plan_subdomains,
    sampling_for,
    structural_tree,
    write_documents,
)
from msmbuild.hashing import digest_bytes, digest_text
from msmbuild.layout import Layout
from msmbuild.spec import Spec, parse_spec
from msmbuild.store import ActionResult, Store, write_roots
from msmbuild.tables import SCHEMAS, parquet_bytes, read_parquet_rows, write_table_if_changed

_COMMAND_STARTED = time.time()
# Subdomains are built in batches of about this many documents (ideas, in the ideas step):
# a batch's calls are sent together, so it must be large enough to keep a backend's
# concurrency full, and its rows are dropped once its partitions are saved.
BATCH_SIZE = 20_000
PARTITION_FORMAT = 2  # bump when a partition's content changes for the same inputs
# What documents.json says of each partition (from its action's meta): counts for status,
# the catalog's corpora row and the report, without reading a partition.
INDEX_META = ("n_docs", "n_chars", "kept_cost_usd", "n_calls", "calls_cost_usd", "new_cost_usd", "made_at",
              "spec_digests", "n_generated", "too_short", "too_long", "near_duplicate", "prompt_versions")


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
    files = [layout.step_calls(corpus, "tree")] if step != "tree" else []
    for what, skip in (("idea_calls", "ideas"), ("document_calls", "documents")):
        if step != skip:  # the ledgers the indexes name (a stray file is not a call)
            try:
                files += [path for path, _ in indexed_files(layout, corpus, what)]
            except MsmbuildError:
                pass  # an unreadable index is rewritten by its step; it names no spending
    for path in files:
        if path.is_file():
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
        self.offline_answers = False  # whether a dropped batch held an answer made offline

    def drop_rows(self) -> None:
        """Forget the calls rows of a saved batch (their partitions hold them)."""
        self.offline_answers |= any(r["model"] == "offline (not a model)" for r in self.run.rows)
        self.run.rows.clear()

    def use_spec(self, spec: Spec) -> None:
        """Send the spec context of the corpus's policy first in every call."""
        self.run.context, self.run.context_key = shared_context(self.cfg, spec.context_text, spec.preamble)
        self.run.legacy_context = shared_context(self.cfg, spec.full_text, spec.preamble)[0]

    def use_recorded_spec(self) -> None:
        """use_spec with the spec as the tree step recorded it (sections.json)."""
        sections = self.layout.sections(self.run.corpus)
        self.use_spec(Spec.from_json(_read_json(sections, "tree", self.run.corpus)))

    def report(self, step: str, counts: dict[str, int], changed: list[str]) -> StageReport:
        produced = all(r["model"] != "offline (not a model)" for r in self.run.rows) \
            and not self.offline_answers and self.backend.name != "offline"
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
                   backend: Backend | None = None, refresh: bool | None = None,
                   batch_size: int | None = None) -> StageReport:
    """Assertions per subdomain, doc types seeing them, ideas per doc type; per subdomain.

    Each subdomain is one ``ideas-partition`` action (``ideas_partition_key``): an
    unchanged subdomain costs one store lookup and none of its requests is keyed. The
    changed ones are planned in batches of about ``batch_size`` ideas (default
    BATCH_SIZE), so memory stays bounded; only their partition files are written.
    """
    s = _Session(params, corpus, max_concurrency, progress, store, backend, refresh)
    try:
        s.use_recorded_spec()
        tree = _read_json(s.layout.tree(corpus), "tree", corpus)
        subs = iter_subdomains(tree)
        keys = ideas_partition_keys(s.run, subs)
        old = read_ideas_index(s.layout, corpus, strict=False)  # a corrupt index is rewritten
        records: dict[str, ActionResult] = trusted_ideas(s.store, s.layout, corpus, keys, old)
        trusted = set(records)
        records.update(_lookup(s.store, {k: v for k, v in keys.items() if k not in records}))
        adopted = adopt_ideas(s.store, s.layout, corpus, {k: v for k, v in keys.items() if k not in records},
                              IDEAS_INDEX_META)
        records.update(adopted)
        todo = [sub for sub in subs if sub["id"] not in records]
        per_sub = s.cfg.n_doc_types * s.cfg.n_doc_ideas
        for batch in batches(todo, [per_sub] * len(todo), batch_size or BATCH_SIZE):
            ids = {sub["id"] for sub in batch}
            part = {**tree, "domains": [{**d, "subdomains": [x for x in d["subdomains"] if x["id"] in ids]}
                                        for d in tree["domains"]]}
            assertions, ideas = plan_subdomains(part, s.run)
            records.update(save_idea_partitions(s.store, s.run, batch, keys, assertions, ideas, s.run.rows))
            s.drop_rows()
        changed = place_ideas(s.store, s.layout, corpus, subs, keys, records, old, trusted)
        write_roots(params.build_dir, f"corpus-{corpus}-ideas", list(keys.values()))
        metas = [records[sub["id"]].meta for sub in subs]
        return s.report("ideas", {"subdomains": len(subs), "ideas": sum(m["n_ideas"] for m in metas),
                                  "unsuitable": sum(m["n_unsuitable"] for m in metas),
                                  "subdomains rebuilt": len(todo),
                                  "subdomains unchanged": len(subs) - len(todo),
                                  **({"of them adopted from pulled files": len(adopted)} if adopted else {})},
                        changed)
    finally:
        s.close()


def _lookup(store: Store, keys: dict[str, str]) -> dict[str, ActionResult]:
    """The stored record of each key that has one."""
    records: dict[str, ActionResult] = {}
    for sid, key in keys.items():
        found = store.get_action(key)
        if found is not None:
            records[sid] = found[0]
    return records


def generate_documents(params: Params, corpus: str, *, max_concurrency: int | None = None,
                       progress: bool = True, store: Store | None = None,
                       backend: Backend | None = None, refresh: bool | None = None,
                       batch_size: int | None = None) -> StageReport:
    """Documents per suitable idea and sample, optional revision, then filters; per subdomain.

    Each subdomain is one partition action whose key covers everything its documents
    depend on (``partition_key``): an unchanged subdomain costs one store lookup and its
    partition files are not touched. Only the changed subdomains' documents are keyed,
    sent and filtered, in batches of about ``batch_size`` documents (default BATCH_SIZE):
    a batch's calls go together (they share the backend's concurrency), its partitions
    are saved and its rows dropped before the next, so memory does not grow with the corpus.
    """
    s = _Session(params, corpus, max_concurrency, progress, store, backend, refresh)
    try:
        s.use_recorded_spec()
        tree = _read_json(s.layout.tree(corpus), "tree", corpus)
        subs = iter_subdomains(tree)
        planned = _ideas_entries(s.layout, corpus, subs)
        keys = partition_keys(s.run, subs, planned)
        old = read_index(s.layout, corpus, strict=False)  # a corrupt index is rewritten
        records: dict[str, ActionResult] = _trusted_documents(s.store, s.layout, corpus, keys, old)
        trusted = set(records)
        records.update(_lookup(s.store, {k: v for k, v in keys.items() if k not in records}))
        adopted = adopt_documents(s.store, s.layout, corpus, {k: v for k, v in keys.items() if k not in records},
                                  INDEX_META, s.cfg.filters.dedup_threshold < 1.0)
        records.update(adopted)
        todo = [sub for sub in subs if sub["id"] not in records]
        weights = [planned[sub["id"]]["n_ideas"] * s.cfg.n_samples for sub in todo]
        for batch in batches(todo, weights, batch_size or BATCH_SIZE):
            assertions, ideas = _planned_ideas(s.store, s.layout, corpus, [planned[sub["id"]] for sub in batch])
            docs = write_documents(tree, assertions, ideas, s.run)
            records.update(_save_partitions(s, batch, keys, docs))
            del docs, ideas
            s.drop_rows()
        changed, entries = _place_partitions(s.store, s.layout, corpus, subs, keys, records,
                                             s.cfg.filters.dedup_threshold, old, trusted)
        write_roots(params.build_dir, f"corpus-{corpus}-documents", list(keys.values()))
        metas = [records[sub["id"]].meta for sub in subs]
        counts = {"documents generated": sum(m["n_generated"] for m in metas),
                  "kept": sum(e["n_docs"] for e in entries),
                  "too short": sum(m["too_short"] for m in metas),
                  "too long": sum(m["too_long"] for m in metas),
                  "cut off": sum(m.get("cut_off", 0) for m in metas),
                  "near-duplicates": sum(m["near_duplicate"] for m in metas)
                  + sum(len(e["dropped"]) for e in entries),
                  "subdomains rebuilt": len(todo), "subdomains unchanged": len(subs) - len(todo),
                  **({"of them adopted from pulled files": len(adopted)} if adopted else {})}
        if counts["documents generated"] and not counts["kept"]:
            for sid in trusted:  # their records were not read: the count of empty answers is in them
                found = s.store.get_action(keys[sid])
                records[sid] = found[0] if found else records[sid]
            metas = [records[sub["id"]].meta for sub in subs]
            raise MsmbuildError(_nothing_kept(corpus, counts, sum(m.get("empty", 0) for m in metas),
                                              s.cfg.filters.min_chars, s.cfg.filters.max_chars,
                                              s.cfg.filters.dedup_threshold))
        if s.cfg.context == "full_incremental":
            current = digest_text(s.run.context) if s.run.context else ""
            counts["made against an older spec"] = sum(n for e in entries for d, n in e["spec_digests"].items()
                                                       if d != current)
        counts["made by an older prompt"] = older_prompt_count(s.cfg, entries)
        return s.report("documents", counts, changed)
    finally:
        s.close()


def _nothing_kept(corpus: str, counts: dict[str, int], empty: int, min_chars: int, max_chars: int,
                  dedup_threshold: float) -> str:
    """The error of a corpus whose filters kept no document: the filter that dropped most,
    and its most common reason (answers with no <content> show as empty documents)."""
    dropped = {"cut off": counts.get("cut off", 0), "too short": counts["too short"],
               "too long": counts["too long"], "near-duplicates": counts["near-duplicates"]}
    worst = max(dropped, key=lambda k: dropped[k])
    if worst == "cut off":
        why = (f"{dropped['cut off']} answers were cut off (stopped at max_tokens or left <content> "
               "open); most common reason: max_tokens too small for the documents asked for")
    elif worst == "too short" and empty * 2 >= counts["too short"]:
        why = (f"filters.min_chars ({min_chars}) dropped {counts['too short']}; most common reason: "
               f"{empty} answers had no <content>…</content> block, so their documents are empty "
               "(check the generator's answers in the calls table: msmbuild query)")
    elif worst == "too short":
        why = (f"filters.min_chars ({min_chars}) dropped {counts['too short']}; most common reason: "
               f"documents shorter than {min_chars} characters")
    elif worst == "too long":
        why = (f"filters.max_chars ({max_chars}) dropped {counts['too long']}; most common reason: "
               f"documents longer than {max_chars} characters")
    else:
        why = (f"filters.dedup_threshold ({dedup_threshold}) dropped {counts['near-duplicates']}; most "
               "common reason: near-duplicate documents")
    shown = ", ".join(f"{n} {k}" for k, n in dropped.items() if n)
    return (f"corpus {corpus!r}: the filters kept no document ({counts['documents generated']} generated, "
            f"0 kept: {shown}); {why}. The answers are stored: after fixing the cause, a rerun "
            "pays only for what changes")


def _ideas_entries(layout: Layout, corpus: str, subs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ideas.json entry of each subdomain of the tree (an error if the ideas step is behind)."""
    entries = {p["subdomain"]: p for p in require_ideas_index(layout, corpus)["partitions"]}
    missing = [sub["id"] for sub in subs if sub["id"] not in entries]
    if missing:
        raise MsmbuildError(f"{layout.ideas_index(corpus)}: no ideas for subdomain {missing[0]!r} of the tree "
                            f"({len(missing)} missing); run `msmbuild generate ideas {corpus}` first")
    return entries


def _planned_ideas(store: Store, layout: Layout, corpus: str, entries: list[dict[str, Any]]
                   ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(assertions by subdomain, idea rows) of some subdomains, from their ideas actions
    (a pulled ideas partition that verifies is adopted as its action first)."""
    import pyarrow.parquet as pq

    assertions, ideas = {}, []
    for e in entries:
        found = store.get_action(e["key"])
        if found is None:
            adopted = adopt_ideas(store, layout, corpus, {e["subdomain"]: e["key"]}, IDEAS_INDEX_META)
            found = (adopted[e["subdomain"]], "adopted") if adopted else None
        if found is None or found[0].outputs["ideas"] != e["ideas"]["digest"]:
            raise MsmbuildError(f"ideas.json: the ideas of subdomain {e['subdomain']!r} are no longer in "
                                f"the store (action {e['key'][:12]}); run `msmbuild generate ideas` for "
                                "this corpus again")
        assertions[e["subdomain"]] = found[0].meta["assertions"]
        ideas += pq.ParquetFile(io.BytesIO(store.get_bytes(e["ideas"]["digest"]))).read(use_threads=False).to_pylist()
    return assertions, ideas


# Stands in for an idea in the request whose key ``partition_key`` takes: its prompt is the
# document prompt of the subdomain, so its key covers everything but the ideas and assertions.
_PROBE_IDEA = {"doc_type": "", "doc_type_description": "", "idea": ""}


def partition_key(run: StageRun, sub: dict[str, Any], ideas: dict[str, Any]) -> str:
    """The action key of one subdomain's documents: everything they depend on.

    The subdomain (its section text and hash), the digests of its assertions and idea rows
    (its ideas.json entry), the sample count, revision and filter settings, and the key of
    a document request of the subdomain built with a fixed probe idea (_PROBE_IDEA), which covers the
    prompt and its version, the model and backend, the sampling settings, the identity and
    the spec context as the corpus's policy keys it. With refresh_stale the current
    context is in the key too (stale answers are remade). Neither the idea rows nor the
    key of any real document request is read or computed: that is the per-document work an
    unchanged subdomain skips.
    """
    return partition_keys(run, [sub], {sub["id"]: ideas})[sub["id"]]


def partition_keys(run: StageRun, subs: list[dict[str, Any]], planned: dict[str, dict[str, Any]]) -> dict[str, str]:
    """``partition_key`` of each subdomain, with what they share (settings, revision prompt
    versions, the request builder) built once."""
    cfg = run.cfg
    revision = {stage: load_prompt(stage, cfg.spec_type).tag for stage in ("critique", "revise")} if cfg.revise else None
    shared = {"format": PARTITION_FORMAT, "corpus": run.corpus, "n_samples": cfg.n_samples, "revision": revision,
              "filters": cfg.filters.model_dump(), "refresh": run.refresh_digest()}
    requests = replace(run.requests, legacy_twins=False)  # twins are never keyed
    keys = {}
    for sub in subs:
        ideas = planned[sub["id"]]
        keys[sub["id"]] = run.store.key("documents-partition", {
            **shared, "subdomain": sub, "assertions": ideas["assertions_digest"], "ideas": ideas["ideas"]["digest"],
            "request": run.key(document_request(requests, sub, _PROBE_IDEA, {}))})
    return keys


def _save_partitions(s: _Session, subs: list[dict[str, Any]], keys: dict[str, str],
                     docs: list[dict[str, Any]]) -> dict[str, ActionResult]:
    """Filter each changed subdomain's documents and record its partition action."""
    docs_by: dict[str, list[dict[str, Any]]] = {sub["id"]: [] for sub in subs}
    for d in docs:
        docs_by[d["subdomain"]].append(d)
    calls_by: dict[str, list[dict[str, Any]]] = {sub["id"]: [] for sub in subs}
    for row in s.run.rows:
        if row.get("subdomain") in calls_by:
            calls_by[row["subdomain"]].append(row)
    records = {}
    for sub in subs:
        sid = sub["id"]
        kept, report = filter_documents(docs_by[sid], s.cfg.filters)
        doc_bytes = parquet_bytes(kept, SCHEMAS["documents"])
        call_bytes = parquet_bytes(calls_by[sid], SCHEMAS["calls"])
        made = [r for r in calls_by[sid] if not r["cache_hit"]]
        digests: dict[str, int] = {}
        for d in kept:
            digests[d["spec_digest"]] = digests.get(d["spec_digest"], 0) + 1
        meta = {"prompt_versions": _prompt_versions(kept),"kind": "documents-partition", "corpus": s.run.corpus, "subdomain": sid,
                "n_generated": len(docs_by[sid]), "n_docs": report.kept, "too_short": report.too_short,
                "empty": report.empty, "too_long": report.too_long, "near_duplicate": report.near_duplicate,
                "cut_off": report.cut_off,
                "n_chars": sum(d["n_chars"] for d in kept), "spec_digests": digests,
                # not "cost_usd": store stats sums that key over actions, and the calls carry it
                "kept_cost_usd": float(sum(d["cost_usd"] for d in kept)), "n_calls": len(calls_by[sid]),
                "calls_cost_usd": float(sum(r["cost_usd"] or 0.0 for r in calls_by[sid])),
                "new_cost_usd": float(sum(r["cost_usd"] or 0.0 for r in made)),
                "made_at": max((r["made_at"] or 0.0 for r in made), default=None),
                "sizes": {"documents": len(doc_bytes), "calls": len(call_bytes)},
                "keeps": sorted({r["key"] for r in calls_by[sid] if not r["error"]})}
        outputs = {"documents": s.store.put_bytes(doc_bytes), "calls": s.store.put_bytes(call_bytes)}
        if s.cfg.filters.dedup_threshold < 1.0:  # for near-duplicates across subdomains
            outputs["signatures"] = s.store.put_bytes(signature_bytes(signatures(d["text"] for d in kept)))
        records[sid] = s.store.save_action(keys[sid], outputs, meta, durable=False)
    s.store.sync()
    return records


def _trusted_documents(store: Store, layout: Layout, corpus: str, keys: dict[str, str],
                       old: dict[str, Any] | None) -> dict[str, ActionResult]:
    """The unchanged subdomains recognised from documents.json without a store lookup
    (``trusted_entries``), each with a record rebuilt from its entry. Only an entry that
    lost no row to a near-duplicate of an earlier subdomain qualifies: its placed file is its
    action's candidates, so the entry holds everything the record says (the number cut off
    is what the other counts leave of the generated documents)."""
    placed = entry_files(layout, corpus, old, ("documents", "document_calls"))

    def files(e: dict[str, Any]) -> list[tuple[str, str]] | None:
        named = placed(e)
        if named is None or e.get("dropped") != [] or e.get("candidates") != e["documents"].get("digest") \
                or any(k not in e for k in INDEX_META):
            return None
        return named

    out = {}
    for sid, e in trusted_entries(store, layout.documents_index(corpus), old, keys, files).items():
        cut = e["n_generated"] - e["n_docs"] - e["too_short"] - e["too_long"] - e["near_duplicate"]
        out[sid] = ActionResult(key=e["key"], outputs={"documents": e["candidates"], "calls": e["calls"]["digest"]},
                                meta={"kind": "documents-partition", "corpus": corpus, "subdomain": sid,
                                      **{k: e[k] for k in INDEX_META}, "cut_off": max(cut, 0),
                                      "sizes": {"documents": e["documents"]["size"], "calls": e["calls"]["size"]}})
    return out


def _place_partitions(store: Store, layout: Layout, corpus: str, subs: list[dict[str, Any]],
                      keys: dict[str, str], records: dict[str, ActionResult], threshold: float,
                      old: dict[str, Any] | None = None, trusted: Collection[str] = ()
                      ) -> tuple[list[str], list[dict[str, Any]]]:
    """Place every partition whose file is not already right; write the index.

    A partition's file is its candidates (the action's documents) less the rows that are
    near-duplicates of an earlier subdomain's (``msmbuild.generate.dedup``); only the
    partitions the persisted index names are decided again, and only a partition whose
    candidates or dropped rows changed is read again. A partition file is written only when
    the partitions it holds change (msmbuild.generate.partition_files). ``old`` is
    documents.json as the step read it, ``trusted`` the subdomains ``_trusted_documents``
    recognised (their files were found untouched and right). Returns (paths changed, entries).
    """
    known = {p["partition"]: p for p in old["partitions"]} if old else {}
    names = [partition_name(sub["id"]) for sub in subs]
    recs = {name: records[sub["id"]] for name, sub in zip(names, subs, strict=True)}
    was_docs, was_calls = old_places(layout, corpus, "documents", old), old_places(layout, corpus, "document_calls", old)
    drops = _cross_partition_drops(store, layout, corpus, names, recs, known, threshold, was_docs)
    changed: list[str] = []
    entries = []
    docs, calls = {}, {}
    for name, sub in zip(names, subs, strict=True):
        rec, was = recs[name], known.get(name, {})
        entry: dict[str, Any] = {"partition": name, "subdomain": sub["id"], "domain": sub["domain"],
                                 "file": file_of(sub["id"]), "key": keys[sub["id"]],
                                 "candidates": rec.outputs["documents"], "dropped": drops[name],
                                 **{k: rec.meta.get(k, {}) for k in INDEX_META}}
        entry["calls"] = {"digest": rec.outputs["calls"], "size": rec.meta["sizes"]["calls"]}
        calls[name] = stored_member(store, name, rec.outputs["calls"], SCHEMAS["calls"],
                                    *old_place(was_calls, name, rec.outputs["calls"]))
        if not drops[name]:
            entry["documents"] = {"digest": rec.outputs["documents"], "size": rec.meta["sizes"]["documents"]}
            docs[name] = stored_member(store, name, rec.outputs["documents"], SCHEMAS["documents"],
                                       *old_place(was_docs, name, rec.outputs["documents"]))
        elif (was.get("candidates"), was.get("dropped")) == (entry["candidates"], drops[name]) \
                and name in was_docs and layout.dropped_rows(corpus, name).is_file():
            entry.update({k: was.get(k, {}) for k in ("documents", "n_docs", "n_chars", "kept_cost_usd", "spec_digests",
                                                      "prompt_versions")})
            entry["documents"] = {k: entry["documents"][k] for k in ("digest", "size")}
            docs[name] = Member(name, was_docs[name][2], _kept_rows(store, rec, was_docs[name], drops[name], entry))
        else:
            entry.update(_without_rows(_candidates(store, rec.outputs["documents"], was_docs.get(name)), drops[name]))
            data, gone = entry.pop("data"), entry.pop("gone")
            docs[name] = Member(name, entry["documents"]["digest"],
                                lambda data=data: table_from_bytes(data, SCHEMAS["documents"]))
            if write_bytes_if_changed(layout.dropped_rows(corpus, name), gone):
                changed.append(str(layout.dropped_rows(corpus, name)))
        entries.append(entry)
    trusted_files = {e["file"] for e in entries if e["subdomain"] in trusted and not e["dropped"]}
    doc_files, written = place_kind(layout, corpus, "documents", entries, docs, old, trusted_files)
    call_files, written_calls = place_kind(layout, corpus, "document_calls", entries, calls, old, trusted_files)
    changed += written + written_calls
    changed += remove_unnamed(layout.dropped_rows(corpus, "_").parent, [n for n in names if drops[n]])
    inputs = [layout.sections(corpus), layout.tree(corpus), layout.assertions(corpus), layout.ideas_index(corpus),
              layout.step_calls(corpus, "tree")]
    if write_index(layout, corpus, entries, merge_files(("documents", doc_files), ("calls", call_files)),
                   inputs, old):
        changed.append(str(layout.documents_index(corpus)))
    VerifiedFiles.save_all()
    return changed, entries


def _kept_rows(store: Store, rec: ActionResult, placed: tuple[Path, tuple[int, int], str], dropped: list[int],
               entry: dict[str, Any]):
    """Loads a partition that dropped rows and whose candidates and drops are unchanged: its
    rows where the old index placed them, or (a file that no longer holds them) its
    candidates less the dropped rows again, with the entry's fields made from those."""
    def load():
        try:
            return old_rows(placed[0], placed[1], placed[2], SCHEMAS["documents"], "its kept rows")
        except MsmbuildError:
            made = _without_rows(_candidates(store, rec.outputs["documents"], None), dropped)
            data = made.pop("data")
            made.pop("gone")
            entry.update(made)
            return table_from_bytes(data, SCHEMAS["documents"])
    return load


def _candidates(store: Store, digest: str, placed: tuple[Path, tuple[int, int], str] | None) -> bytes:
    """A partition's candidates from the store, or (an object the store lost) from where the
    old index placed it when those rows encode to exactly these bytes (a partition that
    dropped no row)."""
    try:
        return store.get_bytes(digest)
    except StoreError:
        if placed is None or placed[2] != digest:
            raise
        return parquet_bytes(old_rows(placed[0], placed[1], digest, SCHEMAS["documents"],
                                      "the store lost its candidates").to_pylist(), SCHEMAS["documents"])


def _cross_partition_drops(store: Store, layout: Layout, corpus: str, names: list[str],
                           recs: dict[str, ActionResult], known: dict[str, dict[str, Any]],
                           threshold: float, placed: dict[str, tuple[Path, tuple[int, int], str]]
                           ) -> dict[str, list[int]]:
    """Rows of each partition that near-duplicate an earlier subdomain's (none when dedup is off)."""
    if threshold >= 1.0:
        return {name: [] for name in names}
    import pyarrow.parquet as pq

    cache: dict[str, Any] = {}

    def sigs(name: str):
        if name not in cache:
            digest = recs[name].outputs.get("signatures")
            if digest is None:  # a record rebuilt from the index (_trusted_documents): its action's
                found = store.get_action(recs[name].key)
                digest = found[0].outputs.get("signatures") if found else None
            try:
                cache[name] = load_signatures(store.get_bytes(digest)) if digest else None
            except StoreError:
                cache[name] = None
            if cache[name] is None:  # made again from the candidates, as the action made them
                rows = pq.read_table(io.BytesIO(_candidates(store, recs[name].outputs["documents"],
                                                            placed.get(name)))).to_pylist()
                cache[name] = signatures(r["text"] for r in rows)
        return cache[name]

    previous = {name: known[name].get("dropped") if known.get(name, {}).get("candidates")
                == recs[name].outputs["documents"] else None for name in names}
    index = DedupIndex(layout.dedup_index(corpus), threshold)
    try:
        return decide(index, names, {n: recs[n].outputs["documents"] for n in names}, sigs, previous,
                      list(known))
    finally:
        index.close()


def _without_rows(candidates: bytes, dropped: list[int]) -> dict[str, Any]:
    """A partition's bytes and index fields: its candidates less the dropped rows."""
    import pyarrow.parquet as pq

    rows = pq.read_table(io.BytesIO(candidates)).to_pylist()
    gone = set(dropped)
    kept = [r for i, r in enumerate(rows) if i not in gone]
    data = parquet_bytes(kept, SCHEMAS["documents"])
    dropped_bytes = parquet_bytes([rows[i] for i in sorted(gone)], SCHEMAS["documents"])
    digests: dict[str, int] = {}
    for d in kept:
        digests[d["spec_digest"]] = digests.get(d["spec_digest"], 0) + 1
    return {"data": data, "gone": dropped_bytes, "documents": {"digest": digest_bytes(data), "size": len(data)},
            "n_docs": len(kept), "n_chars": sum(d["n_chars"] for d in kept),
            "kept_cost_usd": float(sum(d["cost_usd"] for d in kept)), "spec_digests": digests,
            "prompt_versions": _prompt_versions(kept)}


def _prompt_versions(docs: list[dict[str, Any]]) -> dict[str, int]:
    """How many of the documents each prompt version made."""
    counts: dict[str, int] = {}
    for d in docs:
        counts[d["prompt_version"]] = counts.get(d["prompt_version"], 0) + 1
    return counts


def generate_corpus(params: Params, corpus: str, *, max_concurrency: int | None = None,
                    progress: bool = True, store: Store | None = None,
                    backend: Backend | None = None, refresh: bool | None = None) -> list[StageReport]:
    """All three steps in order (refresh: regenerate what an older spec made; default: the setting)."""
    store = store or open_store(params)
    return [fn(params, corpus, max_concurrency=max_concurrency, progress=progress,
               store=store, backend=backend, refresh=refresh)
            for fn in (generate_tree, generate_ideas, generate_documents)]


def current_document_prompt(cfg: CorpusConfig) -> str:
    """The prompt version that makes a corpus's final document text now (revise when revising)."""
    return load_prompt("revise" if cfg.revise else "document", cfg.spec_type).tag


def older_prompt_count(cfg: CorpusConfig, entries: list[dict[str, Any]]) -> int:
    """Documents of index entries made by another prompt version than the current one."""
    current = current_document_prompt(cfg)
    # an entry without the field was written before prompt version 3 (by version 2's code)
    return sum(n for e in entries for v, n in (e["prompt_versions"] if "prompt_versions" in e
                                                else {"document@2": e["n_docs"]}).items() if v != current)


def older_prompt_documents(params: Params, corpus: str) -> tuple[int, int] | None:
    """(documents made by an older prompt version, all documents); None if unbuilt.

    They are kept and used (an upgrade of the prompts re-pays nothing); ``msmbuild
    generate refresh`` makes them again with the current prompts.
    """
    cfg = corpus_config(params, corpus)
    index = read_index(Layout.of(params), corpus)
    if index is None:
        return None
    return older_prompt_count(cfg, index["partitions"]), index["n_documents"]


def stale_documents(params: Params, corpus: str) -> tuple[int, int] | None:
    """(documents made against an older revision of the spec, all documents); None if unbuilt.

    Compares each document's recorded spec_digest with the digest of the context the
    corpus's policy would send now; only full_incremental keeps such documents (full
    regenerates them, section never sends the rest of the spec).
    """
    cfg = corpus_config(params, corpus)
    index = read_index(Layout.of(params), corpus)
    if index is None:
        return None
    spec = parse_spec(cfg.spec, cfg.spec_variables())
    context, _ = shared_context(cfg, spec.context_text, spec.preamble)
    current = digest_text(context) if context else ""
    stale = sum(n for p in index["partitions"] for d, n in p["spec_digests"].items() if d != current)
    return stale, index["n_documents"]

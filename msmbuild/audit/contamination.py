"""The contamination audit: does any eval item leak from the training inputs of its arm?

For every arm that runs a suite with local items (preference, qa), every item is compared
with every training input of that arm: the corpus's spec (one unit per section), its
documents (one unit per subdomain) and the AFT data (one unit per dataset). Per item and
arm it reports the longest run of shared consecutive words, the embedding cosine (when a
model is configured) and the content-word cosine to the closest training text, and for
``held_out`` items the mentions of the words that discuss the item's domain.

Each (unit, item set) comparison is one store action (docs/decisions.md); thresholds are
applied afterwards. A ``held_out`` item at or above one fails the stage with a message
naming the item and the matching text, unless ``audit.accept`` names it or its domain.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from msmbuild.audit.lexical import LexicalIndex, chunk_text, term_mentions
from msmbuild.config import AuditConfig, Params, open_store
from msmbuild.errors import AuditError, ContaminationError
from msmbuild.evaluate.suite import EvalSuite, suite_named, suites
from msmbuild.experiments import Arm, expand_arms
from msmbuild.fsutil import write_bytes_if_changed
from msmbuild.generate.partitions import read_documents, read_index
from msmbuild.hashing import canonical_json, digest_bytes, digest_text
from msmbuild.layout import Layout
from msmbuild.store import Store, write_roots
from msmbuild.tables import SCHEMAS, write_parquet

# Bump when what an audit action computes changes meaning; old results stop matching.
AUDIT_VERSION = 1
# Longest shared run the index looks for (reported values are capped here).
MAX_RUN = 32
SNIPPET_CHARS = 240


@dataclass(frozen=True)
class TrainingUnit:
    """One piece of training input, audited as one action."""

    source: str  # spec | documents | aft
    name: str  # e.g. "pro_america §hard-cheeses", "pro_america documents of hard-cheeses", "aft cheese"
    text: str

    @property
    def digest(self) -> str:
        """Digest of the unit's text (what its audit action depends on)."""
        return digest_text(self.text)


@dataclass(frozen=True)
class EvalItem:
    """One eval item as the audit sees it."""

    suite: str
    item_id: str
    role: str
    domain: str
    texts: tuple[str, ...]  # the whole item first, then each option alone

    @property
    def uid(self) -> str:
        """suite:id, unique across the audited suites."""
        return f"{self.suite}:{self.item_id}"


@dataclass
class AuditOutcome:
    """The audit of every arm: per-(arm, item) rows and per-(arm, suite, role) summaries."""

    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    measures: list[str]
    keys: list[str] = field(default_factory=list)
    computed: int = 0

    @property
    def leaks(self) -> list[dict[str, Any]]:
        """held_out rows over a threshold and not accepted."""
        return [r for r in self.rows if r["role"] == "held_out" and r["leak"] and not r["accepted"]]


# -- inputs -----------------------------------------------------------------------------
def eval_items(params: Params, suite_names: Sequence[str]) -> list[EvalItem]:
    """The items of every audited suite that some arm runs (each suite says what its items are)."""
    items: list[EvalItem] = []
    for name in suite_names:
        items += [EvalItem(name, i.item_id, i.role, i.domain, i.texts)
                  for i in suite_named(name).audit_items(params)]
    return items


def corpus_units(params: Params, corpus: str) -> list[TrainingUnit]:
    """A midtraining corpus as audit units: each spec section, each subdomain's documents."""
    from msmbuild.spec import parse_spec

    cfg = params.corpora[corpus]
    if not Path(cfg.spec).is_file():
        raise AuditError(f"{cfg.spec}: spec file not found (params.yaml: corpora.{corpus}.spec)")
    spec = parse_spec(cfg.spec, cfg.spec_variables())  # as the corpus renders it
    units = []
    if spec.preamble.strip():
        units.append(TrainingUnit("spec", f"{corpus} preamble", spec.preamble))
    units += [TrainingUnit("spec", f"{corpus} §{s.id}", f"{s.title}\n\n{s.text}") for s in spec.sections]
    layout = Layout.of(params)
    if read_index(layout, corpus) is None:
        raise AuditError(f"{layout.documents_index(corpus)}: documents of corpus {corpus!r} are not built "
                         f"yet (run `msmbuild generate documents {corpus}` first)")
    docs = read_documents(layout, corpus, ["section_id", "doc_id", "text"]).to_pandas()
    for section_id, group in sorted(docs.groupby("section_id"), key=lambda kv: str(kv[0])):
        group = group.sort_values("doc_id")
        units.append(TrainingUnit("documents", f"{corpus} documents of {section_id}",
                                  "\n\n".join(group["text"].astype(str))))
    return units


def aft_units(params: Params, name: str) -> list[TrainingUnit]:
    """An AFT dataset as one audit unit: every message of every demonstration."""
    from msmbuild.train.aft_data import read_demonstrations

    cfg = params.aft[name]
    if cfg.source == "file":
        path = Path(cfg.path or "")
    else:
        path = Layout.of(params).aft_data(name)
        if not path.is_file():
            raise AuditError(f"{path}: generated AFT dataset {name!r} is not built yet "
                             f"(run `msmbuild aft` for an arm that uses it first)")
    rows = read_demonstrations(path)
    text = "\n\n".join(m["content"] for r in rows for m in r["messages"])
    return [TrainingUnit("aft", f"aft {name}", text)]


def arm_units(params: Params, arm: Arm, cache: dict[str, list[TrainingUnit]]) -> list[TrainingUnit]:
    """Every training input of one arm (the whole AFT dataset, whatever fraction the arm uses)."""
    units: list[TrainingUnit] = []
    for kind, name, make in (("corpus", arm.midtrain, corpus_units), ("aft", arm.aft, aft_units)):
        if name:
            if f"{kind}:{name}" not in cache:
                cache[f"{kind}:{name}"] = make(params, name)
            units += cache[f"{kind}:{name}"]
    return units


def read_domain_terms(cfg: AuditConfig, domains: set[str]) -> dict[str, list[str]]:
    """The words of each held_out domain; every held_out domain must have some."""
    if not domains:
        return {}
    if cfg.domain_terms is None:
        raise AuditError("params.yaml: key 'audit.domain_terms' is null but there are held_out items "
                         f"(domains: {', '.join(sorted(domains))}); the domain check needs their words")
    path = Path(cfg.domain_terms)
    if not path.is_file():
        raise AuditError(f"{path}: file not found (params.yaml: audit.domain_terms)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise AuditError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(raw, dict) or not all(isinstance(v, list) and all(isinstance(t, str) for t in v)
                                            for v in raw.values()):
        raise AuditError(f"{path}: expected a mapping of domain -> list of words")
    missing = sorted(domains - set(raw))
    if missing:
        raise AuditError(f"{path}: no words for held_out domain(s) {', '.join(missing)}")
    return {d: [str(t) for t in raw[d]] for d in sorted(domains)}


# -- one action ---------------------------------------------------------------------------
def _snippet(text: str, around: str | None = None) -> str:
    text = " ".join(text.split())
    if around:
        at = text.lower().find(around.lower())
        if at > SNIPPET_CHARS // 2:
            text = "…" + text[at - SNIPPET_CHARS // 3:]
    return text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS] + "…"


def measure_unit(unit: TrainingUnit, items: Sequence[EvalItem], terms: dict[str, list[str]],
                 cfg: AuditConfig, embedder: Any | None) -> dict[str, Any]:
    """Compare every item with one training unit (the body of one audit action)."""
    chunks = chunk_text(unit.text, cfg.chunk_words)
    index = LexicalIndex(chunks, MAX_RUN)
    out: dict[str, Any] = {}
    chunk_vectors = embedder.encode(chunks) if embedder is not None and chunks else None
    item_vectors = None
    if chunk_vectors is not None:
        flat = [t for item in items for t in item.texts]
        item_vectors = embedder.encode(flat)
    offset = 0
    for item in items:
        run, run_text, run_chunk = max((index.longest_run(t) for t in item.texts), key=lambda r: r[0])
        result: dict[str, Any] = {
            "shared_words": run,
            "shared_text": run_text,
            "shared_chunk": _snippet(chunks[run_chunk], run_text) if run_chunk is not None else "",
        }
        if cfg.lexical:
            score, at = max((index.most_similar(t) for t in item.texts), key=lambda r: r[0])
            result["lexical"] = round(score, 6)
            result["lexical_chunk"] = _snippet(chunks[at]) if at is not None else ""
        if item_vectors is not None:
            block = item_vectors[offset: offset + len(item.texts)] @ chunk_vectors.T
            i, j = divmod(int(block.argmax()), block.shape[1])
            result["embedding"] = round(float(block[i, j]), 6)
            result["embedding_chunk"] = _snippet(chunks[j])
        offset += len(item.texts)
        out[item.uid] = result
    domains: dict[str, Any] = {}
    for domain, words in terms.items():
        hits = term_mentions(unit.text, words)
        if hits:
            term, at = hits[0]
            domains[domain] = {"mentions": len(hits), "term": term,
                               "text": _snippet(unit.text[max(0, at - 80): at + 160], term)}
    return {"items": out, "domains": domains}


def _items_digest(items: Sequence[EvalItem]) -> str:
    return digest_bytes(canonical_json([[i.uid, i.role, i.domain, list(i.texts)] for i in items]))


def _measure_settings(cfg: AuditConfig, embedding_id: dict[str, str] | None) -> dict[str, Any]:
    """What changes an action's result (thresholds do not: they are applied afterwards)."""
    return {"chunk_words": cfg.chunk_words, "max_run": MAX_RUN, "lexical": cfg.lexical,
            "embedding": embedding_id}


# -- the stage ----------------------------------------------------------------------------
def audited_suites(params: Params) -> set[str]:
    """Suites whose items can be audited (those with local item texts)."""
    return {name for name, suite in suites().items()
            if type(suite).audit_items is not EvalSuite.audit_items}


def audited_arms(params: Params) -> list[Arm]:
    """Arms that run at least one audited suite."""
    audited = audited_suites(params)
    return [a for a in expand_arms(params) if any(s in audited for s in a.evals)]


def _measures(cfg: AuditConfig) -> list[str]:
    out = [f"shared_words: longest run of consecutive words shared with a training text "
           f"(leak at >= {cfg.max_shared_words})"]
    if cfg.embedding.path:
        out.append(f"embedding: cosine by the {cfg.embedding.kind} model at {cfg.embedding.path} "
                   f"(leak at >= {cfg.embedding.threshold})")
    if cfg.lexical:
        role = "fallback semantic measure, no embedding model configured" if not cfg.embedding.path else "alongside the embedding"
        out.append(f"lexical: content-word cosine ({role}; leak at >= {cfg.lexical_threshold})")
    out.append(f"domain: mentions of a held_out domain's words in the training inputs "
               f"(leak above {cfg.max_domain_mentions})")
    return out


def _verdict(row: dict[str, Any], cfg: AuditConfig) -> list[str]:
    reasons = []
    if row["shared_words"] >= cfg.max_shared_words:
        reasons.append(f"shares {row['shared_words']} consecutive words with {row['shared_source']}: "
                       f"\"{row['shared_chunk']}\"")
    if cfg.embedding.path and row["embedding"] is not None and row["embedding"] >= cfg.embedding.threshold:
        reasons.append(f"embedding cosine {row['embedding']:.2f} with {row['embedding_source']}: "
                       f"\"{row['embedding_chunk']}\"")
    if cfg.lexical and row["lexical"] is not None and row["lexical"] >= cfg.lexical_threshold:
        reasons.append(f"content-word cosine {row['lexical']:.2f} with {row['lexical_source']}: "
                       f"\"{row['lexical_chunk']}\"")
    if row["role"] == "held_out" and row["domain_mentions"] > cfg.max_domain_mentions:
        reasons.append(f"its domain '{row['domain']}' is discussed in {row['domain_source']} "
                       f"({row['domain_mentions']} mention(s), e.g. '{row['domain_term']}': "
                       f"\"{row['domain_text']}\")")
    return reasons


def _best(results: list[tuple[TrainingUnit, dict[str, Any]]], metric: str) -> tuple[Any, str, str]:
    """(value, unit name, chunk) of the unit with the highest value of metric."""
    best: tuple[Any, str, str] = (None, "", "")
    for unit, res in results:
        v = res.get(metric)
        if v is not None and (best[0] is None or v > best[0]):
            chunk_key = "shared_chunk" if metric == "shared_words" else f"{metric}_chunk"
            best = (v, unit.name, res.get(chunk_key, ""))
    return best


def run_audit(params: Params, store: Store | None = None, progress: bool = True) -> AuditOutcome:
    """Audit every audited arm; returns the rows without judging them (see ``audit``)."""
    cfg = params.audit
    arms = audited_arms(params)
    audited = audited_suites(params)
    suite_names = sorted({s for a in arms for s in a.evals if s in audited})
    items = eval_items(params, suite_names) if arms else []
    trained = any(a.midtrain or a.aft for a in arms)
    terms = read_domain_terms(cfg, {i.domain for i in items if i.role == "held_out"} if trained else set())
    embedding_id = embedder = None
    if cfg.embedding.path:
        from msmbuild.audit.embeddings import model_identity

        embedding_id = model_identity(cfg.embedding.kind, cfg.embedding.path)
    store = store or open_store(params)
    unit_cache: dict[str, list[TrainingUnit]] = {}
    per_arm = {a.name: arm_units(params, a, unit_cache) for a in arms}
    units = {u.digest + u.name: u for us in per_arm.values() for u in us}
    by_suite = {s: [i for i in items if i.suite == s] for s in suite_names}
    results: dict[tuple[str, str], dict[str, Any]] = {}  # (unit id, suite) -> measured
    keys: list[str] = []
    computed = 0
    jobs = [(uid, u, s) for uid, u in sorted(units.items()) for s in suite_names]
    for uid, unit, suite in tqdm(jobs, desc="audit", unit="unit", disable=not progress):
        suite_items = by_suite[suite]
        inputs = {"version": AUDIT_VERSION, "unit": unit.digest, "items": _items_digest(suite_items),
                  "terms": terms, "settings": _measure_settings(cfg, embedding_id)}

        def compute(unit=unit, suite_items=suite_items):
            nonlocal embedder
            if cfg.embedding.path and embedder is None:
                from msmbuild.audit.embeddings import load_embedder

                embedder = load_embedder(cfg.embedding.kind, cfg.embedding.path)
            return (measure_unit(unit, suite_items, terms, cfg, embedder),
                    {"unit": unit.name, "n_items": len(suite_items)})

        memo = store.memo_json("contamination", inputs, compute)
        computed += not memo.hit
        keys.append(memo.key)
        results[(uid, suite)] = memo.value
    rows = []
    for arm in arms:
        arm_unit_ids = [u.digest + u.name for u in per_arm[arm.name]]
        for item in items:
            if item.suite not in arm.evals:
                continue
            per_unit = [(units[uid], results[(uid, item.suite)]["items"][item.uid]) for uid in arm_unit_ids]
            shared, shared_src, shared_chunk = _best(per_unit, "shared_words")
            lexical, lexical_src, lexical_chunk = _best(per_unit, "lexical")
            emb, emb_src, emb_chunk = _best(per_unit, "embedding")
            mentions, d_term, d_src, d_text = 0, "", "", ""
            if item.role == "held_out":
                for uid in arm_unit_ids:
                    hit = results[(uid, item.suite)]["domains"].get(item.domain)
                    if hit:
                        if not mentions:
                            d_term, d_src, d_text = hit["term"], units[uid].name, hit["text"]
                        mentions += hit["mentions"]
            row = {"arm": arm.name, "experiment": arm.experiment, "midtrain": arm.midtrain, "aft": arm.aft,
                   "suite": item.suite, "item_id": item.item_id, "role": item.role, "domain": item.domain,
                   "item_text": item.texts[0], "shared_words": int(shared or 0),
                   "shared_text": next((r["shared_text"] for u, r in per_unit if u.name == shared_src), ""),
                   "shared_source": shared_src, "shared_chunk": shared_chunk,
                   "lexical": lexical, "lexical_source": lexical_src, "lexical_chunk": lexical_chunk,
                   "embedding": emb, "embedding_source": emb_src, "embedding_chunk": emb_chunk,
                   "domain_mentions": mentions, "domain_term": d_term, "domain_source": d_src,
                   "domain_text": d_text}
            reasons = _verdict(row, cfg)
            row["leak"] = bool(reasons)
            row["reasons"] = "; ".join(reasons)
            row["accepted"] = cfg.accept.get(item.item_id) or cfg.accept.get(item.domain) or ""
            rows.append(row)
    return AuditOutcome(rows, summarize(rows), _measures(cfg), keys, computed)


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (arm, suite, role): items, flagged items, worst values, and whether the set passed."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["arm"], r["suite"], r["role"]), []).append(r)
    out = []
    for (arm, suite, role), rs in sorted(groups.items()):
        flagged = [r for r in rs if r["leak"]]
        unaccepted = [r for r in flagged if not r["accepted"]]
        def worst(col: str, rs: list[dict[str, Any]] = rs) -> float | None:
            vals = [r[col] for r in rs if r[col] is not None]
            return max(vals) if vals else None
        out.append({"arm": arm, "suite": suite, "role": role, "n_items": len(rs),
                    "n_flagged": len(flagged), "n_accepted": len(flagged) - len(unaccepted),
                    "max_shared_words": worst("shared_words"), "max_lexical": worst("lexical"),
                    "max_embedding": worst("embedding"),
                    "domains_discussed": ", ".join(sorted({r["domain"] for r in rs if r["domain_mentions"]})),
                    # Only held_out sets are judged: in_distribution and recall items are meant
                    # to match the training inputs.
                    "passed": (not unaccepted) if role == "held_out" else None})
    return out


def _leak_message(leaks: list[dict[str, Any]]) -> str:
    # one example per domain first, so a message shows how widespread the leak is
    firsts = list({r["domain"]: r for r in reversed(leaks)}.values())[::-1]
    shown = (firsts + [r for r in leaks if r not in firsts])[:3]
    domains = sorted({r["domain"] for r in leaks})
    lines = [f"contamination audit: {len(leaks)} held_out item(s) in {len(domains)} domain(s) "
             f"({', '.join(domains)}) match their arm's training inputs"]
    for r in shown:
        lines.append(f"  {r['suite']} item {r['item_id']!r} (domain {r['domain']}, arm {r['arm']}): {r['reasons']}")
    if len(leaks) > len(shown):
        lines.append(f"  ... and {len(leaks) - len(shown)} more (build/audit/contamination.parquet, "
                     "or `msmbuild query \"SELECT * FROM contamination WHERE leak\"`)")
    lines.append("  Fix the eval item or the training text, or accept it explicitly in params.yaml "
                 "(audit.accept: {<item id or domain>: <reason>}).")
    return "\n".join(lines)


def audit(params: Params, store: Store | None = None, progress: bool = True) -> AuditOutcome:
    """``msmbuild audit``: run the audit, write build/audit/, fail on a held_out leak.

    The outputs are written before the verdict, so a failing audit leaves its evidence.
    """
    if not params.audit.enabled:
        outcome = AuditOutcome([], [], ["disabled (params.yaml audit.enabled: false)"])
    else:
        outcome = run_audit(params, store, progress)
    layout = Layout.of(params)
    layout.audit_dir.mkdir(parents=True, exist_ok=True)
    write_parquet(outcome.rows, layout.contamination, SCHEMAS["contamination"])
    doc = {"format": "msmbuild-audit/1", "measures": outcome.measures, "sets": outcome.summary,
           "passed": not outcome.leaks, "n_leaks": len(outcome.leaks)}
    write_bytes_if_changed(layout.audit_summary, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
    write_roots(params.build_dir, "audit", outcome.keys)
    if outcome.leaks:
        raise ContaminationError(_leak_message(outcome.leaks))
    return outcome


def _pre_generation_units(params: Params, arm: Arm) -> list[TrainingUnit]:
    """The training inputs of an arm that exist before anything is generated: its corpus's
    spec sections and its AFT files (a file dataset, or a mix's file datasets and local jsonl)."""
    from msmbuild.spec import parse_spec
    from msmbuild.train.aft_data import read_demonstrations

    units: list[TrainingUnit] = []
    if arm.midtrain and Path(params.corpora[arm.midtrain].spec).is_file():
        cfg = params.corpora[arm.midtrain]
        spec = parse_spec(cfg.spec, cfg.spec_variables())  # as the corpus renders it
        if spec.preamble.strip():
            units.append(TrainingUnit("spec", f"{arm.midtrain} preamble", spec.preamble))
        units += [TrainingUnit("spec", f"{arm.midtrain} §{s.id}", f"{s.title}\n\n{s.text}") for s in spec.sections]
    files: list[tuple[str, str]] = []
    todo = [arm.aft] if arm.aft else []
    while todo:
        name = todo.pop()
        cfg = params.aft[name]
        if cfg.source == "file" and cfg.path:
            files.append((f"aft {name}", cfg.path))
        todo += [s.aft for s in cfg.sources if s.aft]
        files += [(f"aft {name} ({s.path})", s.path) for s in cfg.sources
                  if s.path and s.path.endswith(".jsonl") and s.messages_field == "messages"]
    for label, path in files:
        if Path(path).is_file():
            rows = read_demonstrations(path)
            units.append(TrainingUnit("aft", label, "\n\n".join(m["content"] for r in rows for m in r["messages"])))
    return units


def preflight_leaks(params: Params) -> list[dict[str, Any]]:
    """held_out items that already leak from the inputs that exist before generation (spec
    sections, AFT files), by the audit's own measures and thresholds (embedding excepted: no
    model is loaded before a build); the full audit stays a build stage."""
    cfg = params.audit
    arms = audited_arms(params)
    audited = audited_suites(params)
    suite_names = sorted({s for a in arms for s in a.evals if s in audited})
    from msmbuild.hubdata import local_only

    with local_only("before a build (released sets are audited when the build reads them)"):
        items = [i for i in (eval_items(params, suite_names) if arms else []) if i.role == "held_out"]
    if not items:
        return []
    terms = read_domain_terms(cfg, {i.domain for i in items})
    measured: dict[tuple[str, str], dict[str, Any]] = {}
    leaks = []
    for arm in arms:
        results = []
        for unit in _pre_generation_units(params, arm):
            if (unit.digest, unit.name) not in measured:
                measured[(unit.digest, unit.name)] = measure_unit(unit, items, terms, cfg, None)
            results.append((unit, measured[(unit.digest, unit.name)]))
        if not results:
            continue
        for item in items:
            if item.suite not in arm.evals or cfg.accept.get(item.item_id) or cfg.accept.get(item.domain):
                continue
            per_unit = [(u, r["items"][item.uid]) for u, r in results]
            shared, shared_src, shared_chunk = _best(per_unit, "shared_words")
            lexical, lexical_src, lexical_chunk = _best(per_unit, "lexical")
            hits = [(u.name, r["domains"][item.domain]) for u, r in results if item.domain in r["domains"]]
            row = {"arm": arm.name, "suite": item.suite, "item_id": item.item_id, "role": item.role,
                   "domain": item.domain, "shared_words": int(shared or 0), "shared_source": shared_src,
                   "shared_chunk": shared_chunk, "lexical": lexical, "lexical_source": lexical_src,
                   "lexical_chunk": lexical_chunk, "embedding": None,
                   "domain_mentions": sum(h["mentions"] for _n, h in hits),
                   "domain_source": hits[0][0] if hits else "", "domain_term": hits[0][1]["term"] if hits else "",
                   "domain_text": hits[0][1]["text"] if hits else ""}
            reasons = _verdict(row, cfg.model_copy(update={"embedding": cfg.embedding.model_copy(update={"path": None})}))
            if reasons:
                leaks.append({**row, "reasons": "; ".join(reasons)})
    return leaks


def audit_input_files(params: Params) -> list[str]:
    """Files the audit reads (the workflow's inputs of the audit job)."""
    arms = audited_arms(params) if params.audit.enabled else []
    files: set[str] = set()
    for arm in arms:
        if arm.midtrain:
            files.add(params.corpora[arm.midtrain].spec)
            files.add(str(Layout.of(params).documents_index(arm.midtrain)))
        if arm.aft and params.aft[arm.aft].source == "file" and params.aft[arm.aft].path:
            files.add(str(params.aft[arm.aft].path))
        elif arm.aft:  # generated, mixed or stripped: the whole dataset the aft_data stage writes
            files.add(str(Layout.of(params).aft_data(arm.aft)))
        for suite in arm.evals:
            files.update(suite_named(suite).data_files(params))
    trained = any(a.midtrain or a.aft for a in arms)  # arms without training inputs need no words
    if trained and params.audit.domain_terms:
        files.add(params.audit.domain_terms)
    if trained and params.audit.embedding.path:
        files.add(params.audit.embedding.path)
    return sorted(files)

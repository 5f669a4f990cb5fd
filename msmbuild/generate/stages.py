"""The spec-to-documents stages as plain functions over in-memory values.

tree → assertions, doc types → ideas → documents → (revision) → filters. Every model
call goes through ``run_requests``, so each is an action in the store. What a call sees is
chosen so that an edit reaches only what it should:

- planning calls (assertions, doc types, ideas) see the subdomain's own context (the spec
  preamble plus the subdomain's heading path and excerpt), never its neighbours;
- documents see that same ``section`` context, or the whole spec with ``context: full``
  (then every edit changes every document's key, by design).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from msmbuild.config import CorpusConfig, FilterConfig, Params
from msmbuild.generate.backends.base import Backend, GenRequest, GenResult
from msmbuild.generate.calls import CallRun
from msmbuild.generate.prompts import load_prompt
from msmbuild.hashing import digest_text
from msmbuild.spec import Spec, slugify
from msmbuild.store import Store


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of the corpus's backend; they are part of every request key."""

    temperature: float = 0.8
    max_tokens: int = 8192
    max_tokens_structured: int = 4096


def sampling_for(params: Params, backend_name: str) -> Sampling:
    """The sampling settings a backend's requests carry."""
    if backend_name == "anthropic":
        a = params.backends.anthropic
        return Sampling(a.temperature, a.max_tokens, a.max_tokens_structured)
    if backend_name == "hf":
        h = params.backends.hf
        return Sampling(h.temperature, h.max_new_tokens, h.max_new_tokens)
    return Sampling()


class StageRun(CallRun):
    """The calls of one corpus step: each calls row is tagged with its corpus and subdomain."""

    def __init__(self, store: Store, backend: Backend, corpus: str, cfg: CorpusConfig,
                 sampling: Sampling | None = None, progress: bool = True) -> None:
        super().__init__(store, backend, corpus, progress)
        self.corpus, self.cfg, self.sampling = corpus, cfg, sampling or Sampling()

    def call(self, requests: Sequence[GenRequest], tags: Sequence[str], desc: str  # type: ignore[override]
             ) -> list[GenResult]:
        """Run requests, tag each calls row with its subdomain, accumulate stats."""
        return super().call(requests, desc, [{"corpus": self.corpus, "subdomain": t} for t in tags])


def list_schema(item: dict[str, Any], list_name: str, n: int) -> dict[str, Any]:
    """A JSON schema: an object holding exactly n items of the given shape."""
    return {"type": "object", "additionalProperties": False, "required": [list_name],
            "properties": {list_name: {"type": "array", "minItems": n, "maxItems": n,
                                       "items": item}}}


def object_schema(*names: str, booleans: Sequence[str] = ()) -> dict[str, Any]:
    """A JSON schema: an object of required string (and boolean) fields."""
    props: dict[str, Any] = {n: {"type": "string"} for n in names}
    props.update({b: {"type": "boolean"} for b in booleans})
    return {"type": "object", "additionalProperties": False, "required": [*names, *booleans],
            "properties": props}


def build_request(stage: str, context: str, sampling: Sampling, *, structured: bool | None = None,
                  schema: dict[str, Any] | None = None, sample_index: int = 0,
                  **values: object) -> GenRequest:
    """The request of one call: the stage's prompt template rendered with values.

    ``structured`` (default: whether there is a schema) picks the structured token cap.
    """
    tpl = load_prompt(stage)
    structured = schema is not None if structured is None else structured
    return GenRequest(stage=stage, prompt=tpl.render(**values), context=context,
                      system=tpl.system, schema=schema,
                      max_tokens=sampling.max_tokens_structured if structured else sampling.max_tokens,
                      temperature=sampling.temperature, sample_index=sample_index,
                      prompt_version=tpl.tag)


def _items(result: GenResult, list_name: str, stage: str) -> list[dict[str, Any]]:
    data = result.data
    if isinstance(data, dict) and isinstance(data.get(list_name), list):
        return [d for d in data[list_name] if isinstance(d, dict)]
    from msmbuild.errors import BackendError

    raise BackendError(f"{stage}: answer has no '{list_name}' list: {result.text[:200]!r}")


# -- tree ---------------------------------------------------------------------------------
def section_context(preamble: str, path: Sequence[str], excerpt: str) -> str:
    """The spec context of one subdomain: the preamble plus its heading path and excerpt."""
    head = " > ".join(path)
    return "\n\n".join(p for p in (preamble, f"# {head}", excerpt) if p).strip() + "\n"


def structural_tree(spec: Spec) -> dict[str, Any]:
    """Domains = top-level sections; subdomains = every section of a domain with text."""
    domains: list[dict[str, Any]] = []
    for sec in spec.sections:
        if sec.parent is None:
            domains.append({"id": sec.id, "title": sec.title, "subdomains": []})
        if not sec.text.strip():
            continue
        domains[-1]["subdomains"].append({
            "id": sec.id, "title": sec.title, "path": list(sec.path),
            "context": " > ".join(sec.path), "excerpt": sec.text,
            "section_id": sec.id, "section_hash": sec.hash,
            "domain": domains[-1]["id"],
        })
    return {"decomposition": "structural", "preamble": spec.preamble,
            "domains": [d for d in domains if d["subdomains"]]}


def domain_text(spec: Spec, section_id: str) -> str:
    """A top-level section and everything under it, headings included."""
    return "\n\n".join(f"{'#' * s.level} {s.title}\n\n{s.text}".strip()
                       for s in spec.subtree(section_id))


def subdomain_requests(spec: Spec, cfg: CorpusConfig, sampling: Sampling) -> list[GenRequest]:
    """The decomposition request of every top-level section (model-decomposed trees)."""
    schema = list_schema(object_schema("title", "context", "excerpt"), "subdomains", cfg.n_subdomains)
    return [build_request("subdomains", section_context(spec.preamble, (), domain_text(spec, sec.id)),
                          sampling, schema=schema, domain_title=sec.title, n=cfg.n_subdomains)
            for sec in spec.children(None)]


def model_tree(spec: Spec, run: StageRun) -> dict[str, Any]:
    """One generator call per top-level section proposes its subdomains."""
    tops = spec.children(None)
    requests = subdomain_requests(spec, run.cfg, run.sampling)
    domain_info = [(sec, digest_text(domain_text(spec, sec.id))) for sec in tops]
    results = run.call(requests, [s.id for s in tops], "subdomains")
    domains = []
    for (sec, text_hash), res in zip(domain_info, results, strict=True):
        subs, used = [], set()
        for item_ in _items(res, "subdomains", "subdomains"):
            slug = slugify(str(item_.get("title", ""))) or "subdomain"
            sid, n = f"{sec.id}/{slug}", 2
            while sid in used:
                sid, n = f"{sec.id}/{slug}-{n}", n + 1
            used.add(sid)
            subs.append({"id": sid, "title": str(item_.get("title", "")),
                         "path": [sec.title, str(item_.get("title", ""))],
                         "context": str(item_.get("context", "")),
                         "excerpt": str(item_.get("excerpt", "")),
                         "section_id": sec.id, "section_hash": text_hash, "domain": sec.id})
        domains.append({"id": sec.id, "title": sec.title, "subdomains": subs})
    return {"decomposition": "model", "preamble": spec.preamble, "domains": domains}


def iter_subdomains(tree: dict[str, Any]) -> list[dict[str, Any]]:
    """Every subdomain of a tree, in order."""
    return [s for d in tree["domains"] for s in d["subdomains"]]


def subdomain_context(tree: dict[str, Any], sub: dict[str, Any]) -> str:
    """The context a subdomain's calls see: the tree's preamble, its heading path, its excerpt."""
    return section_context(tree.get("preamble", ""), sub["path"], sub["excerpt"])


def planning_requests(tree: dict[str, Any], cfg: CorpusConfig, sampling: Sampling
                      ) -> tuple[list[GenRequest], list[GenRequest]]:
    """The assertions and doc-types requests of every subdomain (known before any call)."""
    subs = iter_subdomains(tree)
    a_schema = list_schema(object_schema("name", "claim", "explanation"), "assertions", cfg.n_assertions)
    t_schema = list_schema(object_schema("doc_type", "description"), "doc_types", cfg.n_doc_types)
    a_req = [build_request("assertions", subdomain_context(tree, s), sampling, schema=a_schema,
                           n=cfg.n_assertions, subdomain=s["title"], domain=s["domain"]) for s in subs]
    t_req = [build_request("doc_types", subdomain_context(tree, s), sampling, schema=t_schema,
                           n=cfg.n_doc_types, subdomain=s["title"], domain=s["domain"]) for s in subs]
    return a_req, t_req


# -- assertions, doc types, ideas ----------------------------------------------------------------
def plan_subdomains(tree: dict[str, Any], run: StageRun) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Assertions and doc types per subdomain, then ideas per doc type.

    Returns (assertions by subdomain id, idea rows in tree order).
    """
    cfg = run.cfg
    subs = iter_subdomains(tree)
    i_schema = list_schema(object_schema("idea", booleans=["suitable"]), "ideas", cfg.n_doc_ideas)
    common = [{"subdomain": s["title"], "domain": s["domain"]} for s in subs]
    a_req, t_req = planning_requests(tree, cfg, run.sampling)
    ids = [s["id"] for s in subs]
    a_res = run.call(a_req, ids, "assertions")
    t_res = run.call(t_req, ids, "doc types")
    assertions = {s["id"]: _items(r, "assertions", "assertions") for s, r in zip(subs, a_res, strict=True)}
    i_req, i_meta = [], []
    for s, c, res in zip(subs, common, t_res, strict=True):
        for ti, t in enumerate(_items(res, "doc_types", "doc_types")):
            doc_type = str(t.get("doc_type", "")).strip() or f"document {ti + 1}"
            i_req.append(build_request("ideas", subdomain_context(tree, s), run.sampling, schema=i_schema,
                                  n=cfg.n_doc_ideas, doc_type=doc_type, **c))
            i_meta.append((s, ti, doc_type))
    i_res = run.call(i_req, [m[0]["id"] for m in i_meta], "ideas")
    rows = []
    for (s, ti, doc_type), req, res in zip(i_meta, i_req, i_res, strict=True):
        for ii, idea in enumerate(_items(res, "ideas", "ideas")):
            rows.append({
                "corpus": run.corpus, "subdomain": s["id"], "subdomain_title": s["title"],
                "domain": s["domain"], "section_id": s["section_id"],
                "section_hash": s["section_hash"], "doc_type_index": ti, "doc_type": doc_type,
                "idea_index": ii, "idea": str(idea.get("idea", "")).strip(),
                "suitable": bool(idea.get("suitable", True)), "key": run.key(req),
            })
    return assertions, rows


# -- documents ---------------------------------------------------------------------------------
def _assertion_lines(items: list[dict[str, Any]]) -> str:
    return "\n".join(f"- {a.get('claim', '')}" for a in items) or "- (none)"


def write_documents(tree: dict[str, Any], assertions: dict[str, Any], ideas: list[dict[str, Any]],
                    run: StageRun, full_text: str = "") -> list[dict[str, Any]]:
    """One document per suitable (subdomain, type, idea) and sample; optional revision.

    Returns document rows (the documents.parquet schema) before filtering.
    """
    cfg = run.cfg
    subs = {s["id"]: s for s in iter_subdomains(tree)}
    todo = [r for r in ideas if r["suitable"] or not cfg.filters.drop_unsuitable]
    requests, meta = [], []
    for row in todo:
        sub = subs[row["subdomain"]]
        context = full_text if cfg.context == "full" else subdomain_context(tree, sub)
        for k in range(cfg.n_samples):
            requests.append(build_request("document", context, run.sampling, sample_index=k, subdomain=sub["title"],
                domain=sub["domain"], doc_type=row["doc_type"], idea=row["idea"],
                assertions=_assertion_lines(assertions.get(sub["id"], []))))
            meta.append((row, sub, context, k))
    tags = [m[0]["subdomain"] for m in meta]
    results = run.call(requests, tags, "documents")
    rows_by_key = {r["key"]: r for r in run.rows[-len(requests):]} if requests else {}
    chain: list[list[tuple[GenRequest, GenResult]]] = [[(q, r)] for q, r in zip(requests, results, strict=True)]
    if cfg.revise and requests:
        crit_req = [build_request("critique", m[2], run.sampling, sample_index=m[3], subdomain=m[1]["title"],
                             doc_type=m[0]["doc_type"], idea=m[0]["idea"], draft=r.text.strip())
                    for m, r in zip(meta, results, strict=True)]
        crit = run.call(crit_req, tags, "critiques")
        rev_req = [build_request("revise", m[2], run.sampling, sample_index=m[3], subdomain=m[1]["title"],
                            doc_type=m[0]["doc_type"], idea=m[0]["idea"], draft=r.text.strip(),
                            critique=c.text.strip())
                   for m, r, c in zip(meta, results, crit, strict=True)]
        revised = run.call(rev_req, tags, "revisions")
        rows_by_key.update({r["key"]: r for r in run.rows[-2 * len(requests):]})
        for links, cq, cr, rq, rr in zip(chain, crit_req, crit, rev_req, revised, strict=True):
            links += [(cq, cr), (rq, rr)]
    docs = []
    for (row, _sub, _ctx, k), links in zip(meta, chain, strict=True):
        final_req, final = links[-1]
        call_rows = [rows_by_key[run.key(q)] for q, _ in links]
        text = final.text.strip() + "\n"
        docs.append({
            "doc_id": run.key(final_req), "corpus": run.corpus, "section_id": row["section_id"],
            "section_hash": row["section_hash"], "domain": row["domain"],
            "subdomain": row["subdomain"], "doc_type": row["doc_type"], "idea": row["idea"],
            "sample_index": k, "text": text, "n_chars": len(text),
            "backend": final.backend or run.backend.name, "model": final.model,
            "prompt_version": final_req.prompt_version,
            "produced_by_model": all(r.produced_by_model for _, r in links),
            "input_tokens": sum(c["input_tokens"] for c in call_rows),
            "output_tokens": sum(c["output_tokens"] for c in call_rows),
            "cost_usd": float(sum(c["cost_usd"] for c in call_rows)),
        })
    return docs


# -- filters ------------------------------------------------------------------------------------
@dataclass
class FilterReport:
    """How many documents each filter dropped."""

    kept: int = 0
    too_short: int = 0
    too_long: int = 0
    near_duplicate: int = 0


def _shingles(text: str, n: int = 5) -> set[str]:
    words = text.lower().split()
    return {" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def filter_documents(docs: list[dict[str, Any]], filters: FilterConfig
                     ) -> tuple[list[dict[str, Any]], FilterReport]:
    """Length bounds, then MinHash near-duplicate removal (a later near-duplicate goes).

    Order is the tree order, so inserting a section never changes which of two older
    near-duplicates is kept.
    """
    report = FilterReport()
    sized = []
    for d in docs:
        if d["n_chars"] < filters.min_chars:
            report.too_short += 1
        elif d["n_chars"] > filters.max_chars:
            report.too_long += 1
        else:
            sized.append(d)
    kept = sized
    if filters.dedup_threshold < 1.0 and sized:
        from datasketch import MinHash, MinHashLSH

        lsh = MinHashLSH(threshold=max(filters.dedup_threshold, 1e-6), num_perm=128)
        hashes: dict[str, Any] = {}
        kept = []
        for d in sized:
            if d["doc_id"] in hashes:  # the very same call twice: an exact duplicate
                report.near_duplicate += 1
                continue
            mh = MinHash(num_perm=128, seed=1)
            mh.update_batch([s.encode("utf-8") for s in _shingles(d["text"])])
            if any(mh.jaccard(hashes[c]) >= filters.dedup_threshold for c in lsh.query(mh)):
                report.near_duplicate += 1
                continue
            lsh.insert(d["doc_id"], mh)
            hashes[d["doc_id"]] = mh
            kept.append(d)
    report.kept = len(kept)
    return kept, report

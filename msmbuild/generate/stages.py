"""The spec-to-documents stages as plain functions over in-memory values.

The chain follows the paper's reference generator: tree → assertions per subdomain →
doc types (seeing the assertions) → ideas per type (seeing the assertions with their
explanations, the type's description, the subdomain's context and excerpt, the whole
spec and the model identity) → one document per idea, planned in a ``<scratchpad>`` with
only its ``<content>`` kept (the scratchpad stays in the call's stored answer). A list
stage that returns fewer items than asked is topped up by follow-up calls that list what
exists and ask for the rest ("do not repeat these"); each follow-up's prompt holds the
earlier answers, so a rerun finds every one of them in the store.

Every model call goes through ``run_requests`` (``CallRun``), so each is an action in the
store. Every call's prompt holds the section it is about; the shared context sent first
(the whole spec, or the preamble under ``context: section``) is ``CorpusRequests.context``,
and under ``context: full_incremental`` it is left out of the key and recorded as
provenance. ``build_request`` is the one request builder: corpus stages reach it through
``CorpusRequests`` (identity, shared context, every stage's tool), AFT demonstrations
directly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from msmbuild.config import CorpusConfig, FilterConfig, Params
from msmbuild.errors import BackendError
from msmbuild.generate.backends.base import Backend, GenRequest, GenResult
from msmbuild.generate.calls import CallRun, cut_off, unclosed_content
from msmbuild.generate.estimate import SpendingCap, assumed_output_tokens
from msmbuild.generate.identity import identity_for
from msmbuild.generate.prompts import LEGACY_VERSION, load_prompt
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
    """The calls of one corpus step: each calls row is tagged with its corpus and subdomain.

    ``context`` is sent first in every call (and cached); ``context_key`` stands in for it
    in keys under full_incremental ("" keys the context itself). With ``refresh_stale`` a
    stored answer made against another context is made again.
    """

    def __init__(self, store: Store, backend: Backend, corpus: str, cfg: CorpusConfig,
                 sampling: Sampling | None = None, progress: bool = True, *, context: str = "",
                 context_key: str = "", refresh_stale: bool = False, legacy_context: str | None = None) -> None:
        super().__init__(store, backend, corpus, progress, refresh_stale=refresh_stale)
        self.corpus, self.cfg, self.sampling = corpus, cfg, sampling or Sampling()
        self.context, self.context_key = context, context_key
        self.legacy_context = legacy_context  # the context as the previous prompt version sent it
        self.cap: SpendingCap | None = None  # the corpus's budget_usd, checked before each stage is sent
        self._digest: tuple[str, str] = ("", "")

    def context_digest(self) -> str:
        """digest_text of the shared context ("" without one), hashed once per context."""
        if self._digest[0] is not self.context:
            self._digest = (self.context, digest_text(self.context) if self.context else "")
        return self._digest[1]

    def refresh_digest(self) -> str | None:
        """What partition keys take for refresh_stale: the context's digest with it, else None."""
        return self.context_digest() if self.refresh_stale and self.context else None

    @property
    def requests(self) -> CorpusRequests:
        """The builder of this run's requests (its settings and current shared context)."""
        return CorpusRequests(self.cfg, self.sampling, self.context, self.context_key, self.legacy_context)

    def call(self, requests: Sequence[GenRequest], tags: Sequence[str], desc: str  # type: ignore[override]
             ) -> list[GenResult]:
        """Run requests, tag each calls row with its subdomain, accumulate stats."""
        if self.cap is not None:
            new = list({k: r for r in requests if self.store.lookup_json(k := self.key(r)) is None
                        and not self.legacy_answer(r)}.values())
            out = sum(assumed_output_tokens(r) for r in new) / len(new) if new else 0.0
            self.cap.check(new, out, self.stats.cost_usd, desc)
        return super().call(requests, desc, [{"corpus": self.corpus, "subdomain": t} for t in tags])


def list_schema(item: dict[str, Any], list_name: str, n: int | None = None) -> dict[str, Any]:
    """A JSON schema: an object holding a list of items, exactly n of them when n is given.

    The corpus stages leave n out (the count asked for is in the prompt): that keeps the
    tool definition, the first part of the cached prefix, the same for every call of a
    stage, top-ups included.
    """
    array: dict[str, Any] = {"type": "array", "minItems": 1 if n is None else n, "items": item}
    if n is not None:
        array["maxItems"] = n
    return {"type": "object", "additionalProperties": False, "required": [list_name],
            "properties": {list_name: array}}


def object_schema(*names: str, booleans: Sequence[str] = ()) -> dict[str, Any]:
    """A JSON schema: an object of required string (and boolean) fields."""
    props: dict[str, Any] = {n: {"type": "string"} for n in names}
    props.update({b: {"type": "boolean"} for b in booleans})
    return {"type": "object", "additionalProperties": False, "required": [*names, *booleans],
            "properties": props}


ASSERTIONS_SCHEMA = list_schema(object_schema("name", "claim", "explanation"), "assertions")
DOC_TYPES_SCHEMA = list_schema(object_schema("doc_type", "description"), "doc_types")
IDEAS_SCHEMA = list_schema(object_schema("name", "idea", booleans=["suitable"]), "ideas")
SUBDOMAINS_SCHEMA = list_schema(object_schema("title", "context", "excerpt"), "subdomains")
# Every structured stage's schema, sent with every call that has a shared context: the
# tools lead the API's cache prefix, so one list for all stages means one cached prefix.
STAGE_SCHEMAS = {"subdomains": SUBDOMAINS_SCHEMA, "assertions": ASSERTIONS_SCHEMA,
                 "doc_types": DOC_TYPES_SCHEMA, "ideas": IDEAS_SCHEMA}


def build_request(stage: str, context: str, sampling: Sampling, *, structured: bool | None = None,
                  schema: dict[str, Any] | None = None, sample_index: int = 0, context_key: str = "",
                  shared_schemas: dict[str, dict[str, Any]] | None = None, variant: str = "default",
                  legacy: GenRequest | None = None, **values: object) -> GenRequest:
    """The request of one call: the stage's prompt template (of a spec-type variant) rendered with values.

    A template laid out for caching fills ``instructions``, ``shared`` and ``prompt``; any
    other fills ``prompt`` alone. ``structured`` (default: whether there is a schema) picks
    the structured token cap; ``context_key``, ``shared_schemas`` and ``legacy`` are as in
    ``GenRequest``.
    """
    tpl = load_prompt(stage, variant)
    structured = schema is not None if structured is None else structured
    instructions, shared, prompt = tpl.render_parts(**values)
    return GenRequest(stage=stage, prompt=prompt, context=context, instructions=instructions, shared=shared,
                      context_key=context_key, shared_schemas=shared_schemas,
                      system=tpl.system, schema=schema,
                      max_tokens=sampling.max_tokens_structured if structured else sampling.max_tokens,
                      temperature=sampling.temperature, sample_index=sample_index,
                      prompt_version=tpl.tag, items_asked=_items_asked(values), legacy=legacy)


def _items_asked(values: dict[str, object]) -> int:
    """The list length a stage's prompt asks for: its ``n`` (or ``max`` for subdomains)."""
    for name in ("n", "max"):
        if isinstance(value := values.get(name), int) and not isinstance(value, bool):
            return value
    return 0


@dataclass(frozen=True)
class CorpusRequests:
    """How a corpus's requests are built: its settings, sampling and shared spec context.

    Needs no backend or store, so ``msmbuild plan`` builds the same requests (and keys)
    that a run would send.
    """

    cfg: CorpusConfig
    sampling: Sampling = Sampling()
    context: str = ""
    context_key: str = ""
    legacy_context: str | None = None  # None: answers of the previous prompt version are not looked up
    # False: requests that are only keyed (a partition's key) skip building the previous
    # version's twin, which is a lookup and never part of a key
    legacy_twins: bool = True

    def request(self, stage: str, structured: bool, sample_index: int = 0,
                schema: dict[str, Any] | None = None, legacy_values: dict[str, object] | None = None,
                **values: object) -> GenRequest:
        """A request of a stage: the shared context first, the identity in every prompt.

        With a legacy context (and the default spec type), the request carries the same call
        as the previous prompt version built it, from ``values`` updated by ``legacy_values``.
        """
        ident = identity_for(self.cfg).values()
        common = {"structured": structured, "schema": schema, "sample_index": sample_index,
                  "context_key": self.context_key}
        legacy = None
        if self.legacy_twins and self.legacy_context is not None and self.cfg.spec_type == "default":
            legacy = build_request(stage, self.legacy_context, self.sampling, variant=LEGACY_VERSION,
                                   shared_schemas=STAGE_SCHEMAS if self.legacy_context else None,
                                   **common, **ident, **{**values, **(legacy_values or {})})
        return build_request(stage, self.context, self.sampling, variant=self.cfg.spec_type,
                             shared_schemas=STAGE_SCHEMAS if self.context else None, legacy=legacy,
                             **common, **ident, **values)


def _items(result: GenResult, list_name: str, stage: str) -> list[dict[str, Any]]:
    data = result.data
    if isinstance(data, dict) and isinstance(data.get(list_name), list):
        return [d for d in data[list_name] if isinstance(d, dict)]
    raise BackendError(f"{stage}: answer has no '{list_name}' list: {result.text[:200]!r}")


def _existing_note(existing: list[dict[str, Any]], label: Callable[[dict[str, Any]], str]) -> str:
    """The top-up paragraph: what exists already, and not to repeat it."""
    if not existing:
        return ""
    lines = "\n".join(f"- {label(e)}" for e in existing)
    return ("\n\nThese were given already; do not repeat or closely rephrase any of them, "
            f"and give only new ones:\n{lines}")


def ask_lists(run: StageRun, stage: str, list_name: str, schema: dict[str, Any], n: int,
              metas: Sequence[Any], tags: Sequence[str], values: Callable[[Any], dict[str, object]],
              label: Callable[[dict[str, Any]], str], desc: str,
              legacy: Callable[[Any], dict[str, object]] | None = None) -> list[list[dict[str, Any]]]:
    """n items per meta: one call each, then top-up calls for the ones that came back short.

    Each item carries ``_key``, the key of the call that produced it. Top-ups run at
    most ``max_topups`` rounds; a list still short after them is kept as it is. ``legacy``
    gives the values the previous prompt version filled differently (``CorpusRequests.request``).
    """
    items: list[list[dict[str, Any]]] = [[] for _ in metas]
    pending = list(range(len(metas)))
    for round_ in range(run.cfg.max_topups + 1):
        if not pending:
            break
        reqs = [run.requests.request(stage, True, schema=schema, n=n - len(items[i]),
                                     existing=_existing_note(items[i], label),
                                     legacy_values=legacy(metas[i]) if legacy else None, **values(metas[i]))
                for i in pending]
        results = run.call(reqs, [tags[i] for i in pending],
                           desc if round_ == 0 else f"{desc} (top-up {round_})")
        for i, req, res in zip(pending, reqs, results, strict=True):
            key = run.key(req)
            seen = {label(e).casefold() for e in items[i]}
            for item in _items(res, list_name, stage):
                if label(item).casefold() not in seen and len(items[i]) < n:
                    seen.add(label(item).casefold())
                    items[i].append({**item, "_key": key})
        pending = [i for i in pending if len(items[i]) < n]
    return items


# -- tree ---------------------------------------------------------------------------------
def section_context(preamble: str, path: Sequence[str], excerpt: str) -> str:
    """The spec context of one part of a spec: the preamble plus its heading path and text."""
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


def domain_text(spec: Spec, section_id: str, attributes: bool = True) -> str:
    """A top-level section and everything under it, headings (and their attributes) included."""
    if attributes:
        return spec.render(section_ids={s.id for s in spec.subtree(section_id)}).strip()
    return "\n\n".join(f"{'#' * s.level} {s.title}\n\n{s.text}".strip() for s in spec.subtree(section_id))


def subdomain_requests(spec: Spec, requests: CorpusRequests) -> list[GenRequest]:
    """One decomposition call per top-level section (the model chooses how many, up to the cap)."""
    return [requests.request("subdomains", True, schema=SUBDOMAINS_SCHEMA, domain_title=sec.title,
                             domain_text=domain_text(spec, sec.id), max=requests.cfg.max_subdomains,
                             legacy_values={"domain_text": domain_text(spec, sec.id, attributes=False)})
            for sec in spec.children(None)]


def model_tree(spec: Spec, run: StageRun) -> dict[str, Any]:
    """One generator call per top-level section proposes its subdomains."""
    tops = spec.children(None)
    results = run.call(subdomain_requests(spec, run.requests), [s.id for s in tops], "subdomains")
    domains = []
    for sec, res in zip(tops, results, strict=True):
        text_hash = digest_text(domain_text(spec, sec.id))
        subs, used = [], set()
        for item_ in _items(res, "subdomains", "subdomains")[:run.cfg.max_subdomains]:
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


def _sub_values(sub: dict[str, Any]) -> dict[str, object]:
    """What every per-subdomain prompt says about its subdomain (its own section included).

    The domain is named by its title (the first title of the subdomain's path).
    """
    path = sub.get("path") or []
    return {"domain": path[0] if path else sub["domain"], "subdomain": " > ".join(path) or sub["title"],
            "subdomain_context": sub.get("context") or sub["title"], "excerpt": sub["excerpt"].strip()}


def _legacy_values(sub: dict[str, Any]) -> dict[str, object]:
    """What the previous prompt version said differently about a subdomain: its domain's id."""
    return {"domain": sub["domain"]}


def assertion_request(sub: dict[str, Any], requests: CorpusRequests) -> GenRequest:
    """The first assertions request of a subdomain (known before any call; top-ups are not)."""
    return requests.request("assertions", True, schema=ASSERTIONS_SCHEMA, n=requests.cfg.n_assertions,
                            existing=_existing_note([], str), legacy_values=_legacy_values(sub),
                            **_sub_values(sub))


def assertion_requests(tree: dict[str, Any], requests: CorpusRequests) -> list[GenRequest]:
    """The first assertions request of every subdomain."""
    return [assertion_request(s, requests) for s in iter_subdomains(tree)]


def _assertion_lines(items: list[dict[str, Any]], explanations: bool = True) -> str:
    if not items:
        return "- (none)"
    if explanations:
        return "\n".join(f"- {a.get('claim', '')} (Why: {a.get('explanation', '')})" for a in items)
    return "\n".join(f"- {a.get('claim', '')}" for a in items)


def _public(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if not k.startswith("_")}


# -- assertions, doc types, ideas ----------------------------------------------------------------
def plan_subdomains(tree: dict[str, Any], run: StageRun) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Assertions per subdomain, then doc types seeing them, then ideas per doc type.

    Returns (assertions by subdomain id, idea rows in tree order).
    """
    cfg = run.cfg
    subs = iter_subdomains(tree)
    ids = [s["id"] for s in subs]
    assertion_lists = ask_lists(
        run, "assertions", "assertions", ASSERTIONS_SCHEMA, cfg.n_assertions, subs, ids,
        _sub_values, lambda a: str(a.get("claim", "")), "assertions", _legacy_values)
    assertions = {s["id"]: [_public(a) for a in items] for s, items in zip(subs, assertion_lists, strict=True)}
    type_lists = ask_lists(
        run, "doc_types", "doc_types", DOC_TYPES_SCHEMA, cfg.n_doc_types, subs, ids,
        lambda s: {**_sub_values(s), "assertions": _assertion_lines(assertions[s["id"]])},
        lambda t: str(t.get("doc_type", "")), "doc types", _legacy_values)
    metas = []
    for s, types in zip(subs, type_lists, strict=True):
        for ti, t in enumerate(types):
            doc_type = str(t.get("doc_type", "")).strip() or f"document {ti + 1}"
            metas.append((s, ti, doc_type, str(t.get("description", "")).strip()))
    idea_lists = ask_lists(
        run, "ideas", "ideas", IDEAS_SCHEMA, cfg.n_doc_ideas, metas, [m[0]["id"] for m in metas],
        lambda m: {**_sub_values(m[0]), "assertions": _assertion_lines(assertions[m[0]["id"]]),
                   "doc_type": m[2], "doc_type_description": m[3] or m[2]},
        lambda i: str(i.get("idea", "")), "ideas", lambda m: _legacy_values(m[0]))
    rows = []
    for (s, ti, doc_type, description), ideas in zip(metas, idea_lists, strict=True):
        for ii, idea in enumerate(ideas):
            rows.append({
                "corpus": run.corpus, "subdomain": s["id"], "subdomain_title": s["title"],
                "domain": s["domain"], "section_id": s["section_id"],
                "section_hash": s["section_hash"], "doc_type_index": ti, "doc_type": doc_type,
                "doc_type_description": description, "idea_index": ii,
                "idea": str(idea.get("idea", "")).strip(),
                "suitable": bool(idea.get("suitable", True)), "key": idea["_key"],
            })
    return assertions, rows


# -- documents ---------------------------------------------------------------------------------
_CONTENT_RE = re.compile(r"<content>\s*(.*?)\s*</content>", re.S)
_SCRATCHPAD_RE = re.compile(r"<scratchpad>.*?(?:</scratchpad>|\Z)", re.S)


def document_content(answer: str) -> str:
    """The text inside <content>...</content> (the scratchpad is dropped); "" when there is
    no closed <content>: an unclosed one is an answer that was cut off (``unclosed_content``)."""
    m = _CONTENT_RE.search(_SCRATCHPAD_RE.sub("", answer))
    return m.group(1).strip() if m else ""


def document_request(build: CorpusRequests, sub: dict[str, Any], idea: dict[str, Any],
                     assertions: dict[str, Any], sample_index: int = 0) -> GenRequest:
    """The request that writes one document: an idea of a subdomain, one sample of it."""
    values = {**_sub_values(sub), "doc_type": idea["doc_type"],
              "doc_type_description": idea.get("doc_type_description") or idea["doc_type"],
              "idea": idea["idea"], "assertions": _assertion_lines(assertions.get(sub["id"], []))}
    return build.request("document", False, sample_index=sample_index, legacy_values=_legacy_values(sub), **values)


def documents_to_write(ideas: list[dict[str, Any]], filters: FilterConfig) -> list[dict[str, Any]]:
    """The idea rows that get documents (unsuitable ones go when the filters say so)."""
    return [r for r in ideas if r["suitable"] or not filters.drop_unsuitable]


def write_documents(tree: dict[str, Any], assertions: dict[str, Any], ideas: list[dict[str, Any]],
                    run: StageRun) -> list[dict[str, Any]]:
    """One document per suitable (subdomain, type, idea) and sample; optional revision.

    Returns document rows (the documents schema) before filtering; a document
    whose answer has no <content> gets empty text (the length filter drops it).
    """
    cfg = run.cfg
    subs = {s["id"]: s for s in iter_subdomains(tree)}
    todo = documents_to_write(ideas, cfg.filters)
    build = run.requests
    requests, meta = [], []
    for row in todo:
        sub = subs[row["subdomain"]]
        for k in range(cfg.n_samples):
            requests.append(document_request(build, sub, row, assertions, k))
            meta.append((row, sub, k))
    tags = [m[0]["subdomain"] for m in meta]
    results = run.call(requests, tags, "documents")
    rows_by_key = {r["key"]: r for r in run.rows[-len(requests):]} if requests else {}
    contents = [document_content(r.text) for r in results]
    # cut off: stopped at max_tokens (a stored answer from before those were refused) or an
    # unclosed <content>; dropped and counted, never kept as a document
    cut = [cut_off(r) or unclosed_content(r.text) for r in results]
    contents = ["" if c else text for text, c in zip(contents, cut, strict=True)]
    chain: list[list[tuple[GenRequest, GenResult]]] = [[(q, r)] for q, r in zip(requests, results, strict=True)]
    if cfg.revise and requests:
        common = [{"subdomain": m[1]["title"], "doc_type": m[0]["doc_type"], "idea": m[0]["idea"],
                   "excerpt": m[1]["excerpt"].strip()} for m in meta]
        crit_req = [build.request("critique", False, sample_index=m[2], draft=c, **v)
                    for m, c, v in zip(meta, contents, common, strict=True)]
        crit = run.call(crit_req, tags, "critiques")
        rev_req = [build.request("revise", False, sample_index=m[2], draft=c, critique=cr.text.strip(), **v)
                   for m, c, cr, v in zip(meta, contents, crit, common, strict=True)]
        revised = run.call(rev_req, tags, "revisions")
        rows_by_key.update({r["key"]: r for r in run.rows[-2 * len(requests):]})
        contents = [r.text.strip() if c else "" for r, c in zip(revised, contents, strict=True)]
        for links, cq, cr, rq, rr in zip(chain, crit_req, crit, rev_req, revised, strict=True):
            links += [(cq, cr), (rq, rr)]
    docs = []
    for (row, _sub, k), links, content, was_cut in zip(meta, chain, contents, cut, strict=True):
        final_req, final = links[-1]
        first = links[0][1]
        call_rows = [rows_by_key[run.key(q)] for q, _ in links]
        text = content + "\n" if content else ""
        docs.append({
            "doc_id": run.key(final_req), "corpus": run.corpus, "section_id": row["section_id"],
            "section_hash": row["section_hash"], "domain": row["domain"],
            "subdomain": row["subdomain"], "doc_type": row["doc_type"], "idea": row["idea"],
            "sample_index": k, "text": text, "n_chars": len(text),
            "backend": final.backend or run.backend.name, "model": final.model,
            "prompt_version": call_rows[-1]["prompt_version"],
            "produced_by_model": all(r.produced_by_model for _, r in links),
            "input_tokens": sum(c["input_tokens"] for c in call_rows),
            "output_tokens": sum(c["output_tokens"] for c in call_rows),
            "cost_usd": float(sum(c["cost_usd"] for c in call_rows)),
            "spec_digest": str(first.meta.get("context_digest", "")),
            "stop_reason": str(first.meta.get("stop_reason") or "") or None, "cut_off": was_cut,
        })
    return docs


# -- filters ------------------------------------------------------------------------------------
@dataclass
class FilterReport:
    """How many documents each filter dropped."""

    kept: int = 0
    too_short: int = 0
    empty: int = 0  # of too_short: no text at all (the answer had no <content>)
    too_long: int = 0
    near_duplicate: int = 0
    cut_off: int = 0  # the answer stopped at max_tokens or left <content> open


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
        if d.get("cut_off"):
            report.cut_off += 1
        elif d["n_chars"] < filters.min_chars:
            report.too_short += 1
            report.empty += int(d["n_chars"] == 0)
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

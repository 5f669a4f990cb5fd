"""AFT demonstrations generated from a spec: conversation domains → queries by type →
near-duplicate removal → replies with reasoning → judge against configurable criteria →
backfill rounds.

Sections are the spec's top-level sections (``structural_tree``). With ``domains: model``
(the default, as in the paper's generator) one ``aft_domains`` call per section asks the
model for ``n_domains`` conversation domains (areas of life, kinds of task or
conversation where that section decides a good reply), each a title and a description;
a section whose answer holds fewer new domains gets up to ``DOMAIN_TOPUPS`` follow-up
calls listing the ones it has. With ``domains: sections`` the sections are the domains.
Under ``context: full_incremental`` (the default) every call sees the whole rendered
spec, opened by the model's identity (``template_vars`` model_name / provider_name), and
is keyed by its own section's text in place of the whole spec; under ``section`` a call
sees the preamble and its section's text only. Either way an edit to one section changes
the keys of that section's domain call and so of every call fed by its domains, and no
others. Per domain, query calls (``aft_domain_queries`` naming the domain and its
description, or ``aft_queries`` naming the section) propose user messages spread over
``question_types`` (at most ``QUERIES_PER_CALL`` per call; a prompt names its batch, not
the batch count); near-duplicates of an earlier query of the domain are dropped
(msmbuild.generate.neardup); an ``aft_response`` call answers each (a ``<think>`` block
in ``response_style`` value or rule first when ``think``); an ``aft_consistency`` call
judges each well-formed reply against ``judge_criteria``. A domain short of
``n_queries`` kept examples gets up to ``backfill_rounds`` more rounds of new query
batches (10% headroom), and each domain keeps its first ``n_queries``. All calls go
through ``run_requests``: a rerun is lookups only, and a run killed halfway pays only for
what it had not finished. The request builders (``domains_request``, ``queries_request``,
``reply_request``, ``judge_request``) are public so that ``msmbuild plan`` prices the
requests a run would send (msmbuild.generate.demonstration_plan). The no-CoT twin of a
CoT set is ``source: strip_think`` (msmbuild.train.aft_data).
"""

from __future__ import annotations

import math
import re
import sys
from typing import TYPE_CHECKING, Any

from msmbuild.errors import TrainingInputError
from msmbuild.generate.backends import make_backend
from msmbuild.generate.backends.base import GenRequest, GenResult
from msmbuild.generate.calls import CallRun
from msmbuild.generate.stages import (
    Sampling,
    build_request,
    domain_text,
    list_schema,
    object_schema,
    sampling_for,
    section_context,
    structural_tree,
)
from msmbuild.hashing import digest_text
from msmbuild.spec import Spec, parse_spec, slugify

if TYPE_CHECKING:
    from msmbuild.config import AftDataConfig, Params
    from msmbuild.store import Store

QUERIES_PER_CALL = 20
DOMAIN_TOPUPS = 2  # follow-up calls for a section that got fewer than n_domains new domains
THINK_RE = re.compile(r"\A\s*<think>(.*?)</think>(.*)\Z", re.S)
THINK_INSTRUCTIONS = {
    "value": (
        "First reason privately inside one <think>...</think> block: work out which values "
        "and reasons of the specification bear on this message and what they imply here, "
        "weighing them the way the specification explains them. Then, after </think>, write "
        "your reply to the user. The reply acts on those values without mentioning the "
        "specification."),
    "rule": (
        "First reason privately inside one <think>...</think> block: name the rules of the "
        "specification that apply to this message, quoting them where it helps, and what "
        "complying with them requires. Then, after </think>, write your reply to the user. "
        "The reply complies without mentioning the specification."),
}
PLAIN_INSTRUCTIONS = (
    "Write your reply to the user. It follows the specification without mentioning it. "
    "Give only the reply: no reasoning preamble and no <think> block.")


def section_contexts(spec: Spec, cfg: AftDataConfig) -> list[dict[str, str]]:
    """One entry per top-level section with text: id, title, text, the context its calls
    are sent, the key text standing in for it ("" = the context itself) and its digest."""
    by_id = spec.by_id()
    name, provider = _identity(cfg)
    whole = (f"The complete specification of {name}, developed by {provider}. Every request shares it; "
             f"each request says which section it is about.\n\n<specification>\n{spec.full_text.strip()}\n"
             "</specification>\n")
    out = []
    for d in structural_tree(spec)["domains"]:
        text = domain_text(spec, d["id"])
        own = section_context(spec.preamble, (), text)
        context, key = (whole, f"whole spec sent; keyed by this domain (context: full_incremental)\n{own}") \
            if cfg.context == "full_incremental" else (own, "")
        out.append({"id": d["id"], "title": by_id[d["id"]].title, "text": text, "context": context,
                    "context_key": key, "digest": digest_text(own)})
    return out


def _domain(section: dict[str, str], domain_id: str, title: str, description: str) -> dict[str, str]:
    """A conversation domain: its own id, title and description, its section's context."""
    return {"id": domain_id, "title": title, "description": description, "section": section["id"],
            "section_title": section["title"], "context": section["context"],
            "context_key": section["context_key"], "digest": section["digest"]}


def sections_as_domains(sections: list[dict[str, str]]) -> list[dict[str, str]]:
    """``domains: sections``: each section is one domain (no description)."""
    return [_domain(s, s["id"], s["title"], "") for s in sections]


def stand_in_domains(section: dict[str, str], n: int, description_chars: int) -> list[dict[str, str]]:
    """n domains of a section whose answer is not known yet (for estimates): a description
    of the assumed length stands in for the model's."""
    filler = ("conversation domain not generated yet " * (1 + description_chars // 38))[:description_chars]
    return [_domain(section, f"{section['id']}/domain-{k}", f"(domain {k} not generated yet)", filler)
            for k in range(1, n + 1)]


def _identity(cfg: AftDataConfig) -> tuple[str, str]:
    return (cfg.template_vars.get("model_name", "the assistant"),
            cfg.template_vars.get("provider_name", "the developer"))


def identity_line(cfg: AftDataConfig) -> str:
    """Who the replies speak as: the model the spec describes."""
    name, provider = _identity(cfg)
    return f"You are {name}, the AI model developed by {provider} that the specification describes."


def _instructions(cfg: AftDataConfig) -> str:
    return THINK_INSTRUCTIONS[cfg.response_style] if cfg.think else PLAIN_INSTRUCTIONS


def split_reply(text: str, think: bool) -> tuple[str, str] | None:
    """(reasoning, answer) of a reply, or None when it is malformed for the think setting."""
    m = THINK_RE.match(text)
    if think:
        if m is None or not m.group(1).strip() or not m.group(2).strip():
            return None
        return m.group(1).strip(), m.group(2).strip()
    if m is not None or not text.strip():  # a reasoning block where none was asked for
        return None
    return "", text.strip()


def _queries_schema(n: int, types: list[str]) -> dict[str, Any]:
    item = object_schema("query", "type")
    item["properties"]["type"]["enum"] = types
    return list_schema(item, "queries", n)


def _domains_schema(n: int) -> dict[str, Any]:
    return list_schema(object_schema("title", "description"), "domains", n)


def _existing_domains(existing: list[dict[str, str]]) -> str:
    """The follow-up paragraph of a domain call: the domains given already."""
    if not existing:
        return ""
    lines = "\n".join(f"- {d['title']}: {d['description']}" for d in existing)
    return ("\n\nThese domains were given already; do not repeat or closely rephrase any of "
            f"them, and give only new ones:\n{lines}")


def domains_request(cfg: AftDataConfig, section: dict[str, str], sampling: Sampling, n: int,
                    existing: list[dict[str, str]] | None = None, attempt: int = 0) -> GenRequest:
    """The call asking for n conversation domains of one section (``attempt`` > 0: a follow-up)."""
    return build_request("aft_domains", section["context"], sampling, context_key=section["context_key"],
                         schema=_domains_schema(n), sample_index=attempt, section=section["title"],
                         section_text=section["text"].strip(), n=n,
                         existing=_existing_domains(existing or []))


def queries_request(cfg: AftDataConfig, domain: dict[str, str], sampling: Sampling, batch_index: int,
                    n: int) -> GenRequest:
    """Query batch ``batch_index`` of a domain: ``aft_domain_queries`` for an invented domain
    (naming it and its description), ``aft_queries`` for a section."""
    common: dict[str, Any] = {"context_key": domain["context_key"], "sample_index": batch_index,
                              "schema": _queries_schema(n, list(cfg.question_types)),
                              "batch": batch_index + 1, "n": n, "types": _bullets(cfg.question_types)}
    if cfg.domains == "model":
        return build_request("aft_domain_queries", domain["context"], sampling, section=domain["section_title"],
                             domain=domain["title"], description=domain["description"], **common)
    return build_request("aft_queries", domain["context"], sampling, domain=domain["section_title"], **common)


def reply_request(cfg: AftDataConfig, domain: dict[str, str], sampling: Sampling, query: str) -> GenRequest:
    """The reply to one query, as the model the spec describes."""
    return build_request("aft_response", domain["context"], sampling, context_key=domain["context_key"],
                         identity=identity_line(cfg), domain=domain["section_title"],
                         think="yes" if cfg.think else "no", style=cfg.response_style, query=query,
                         instructions=_instructions(cfg))


def judge_request(cfg: AftDataConfig, domain: dict[str, str], sampling: Sampling, query: str,
                  reply: str) -> GenRequest:
    """The judge's call on one well-formed reply."""
    return build_request("aft_consistency", domain["context"], sampling, schema=JUDGE_SCHEMA,
                         context_key=domain["context_key"], domain=domain["section_title"], query=query,
                         reply=reply, criteria=_numbered(cfg.judge_criteria))


JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["consistent", "reason"],
    "properties": {"consistent": {"type": "boolean"}, "reason": {"type": "string"}}}


def _query_texts(result: GenResult, n: int) -> list[tuple[str, str]]:
    """(query, type) pairs of one query call's answer, at most n."""
    data = result.data
    items = data.get("queries") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return []
    pairs = [(str(q.get("query", "")).strip(), str(q.get("type", ""))) for q in items if isinstance(q, dict)]
    return [(t, k) for t, k in pairs if t][:n]


def _domain_items(result: GenResult) -> list[tuple[str, str]]:
    """(title, description) pairs of one domain call's answer."""
    data = result.data
    items = data.get("domains") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return []
    pairs = [(str(d.get("title", "")).strip(), str(d.get("description", "")).strip())
             for d in items if isinstance(d, dict)]
    return [(t, d) for t, d in pairs if t]


def invent_domains(cfg: AftDataConfig, sections: list[dict[str, str]], sampling: Sampling, calls: CallRun
                   ) -> tuple[list[dict[str, str]], dict[str, int]]:
    """``n_domains`` conversation domains per section from the model, and the sections left short.

    A domain repeating an earlier title of its section is dropped; a section with fewer
    than ``n_domains`` gets follow-up calls (``sample_index`` = attempt) listing what it
    has. A domain's id is ``<section id>/<slug of its title>``: stable across reruns (the
    calls are store hits) and unique across sections.
    """
    found: dict[str, list[dict[str, str]]] = {s["id"]: [] for s in sections}
    pending = list(sections)
    for attempt in range(1 + DOMAIN_TOPUPS):
        if not pending:
            break
        reqs = [domains_request(cfg, s, sampling, cfg.n_domains - len(found[s["id"]]), found[s["id"]], attempt)
                for s in pending]
        results = calls.call(reqs, "domains" if attempt == 0 else f"domains (follow-up {attempt})")
        for section, res in zip(pending, results, strict=True):
            have = found[section["id"]]
            seen = {d["title"].casefold() for d in have}
            for title, description in _domain_items(res):
                if title.casefold() not in seen and len(have) < cfg.n_domains:
                    seen.add(title.casefold())
                    have.append({"title": title, "description": description})
        pending = [s for s in pending if len(found[s["id"]]) < cfg.n_domains]
    domains = []
    for section in sections:
        ids: set[str] = set()
        for d in found[section["id"]]:
            base = f"{section['id']}/{slugify(d['title']) or 'domain'}"
            domain_id, k = base, 2
            while domain_id in ids:
                domain_id, k = f"{base}-{k}", k + 1
            ids.add(domain_id)
            domains.append(_domain(section, domain_id, d["title"], d["description"]))
    short = {s["id"]: cfg.n_domains - len(found[s["id"]]) for s in pending}
    return domains, short


def generate_demonstrations(params: Params, name: str, store: Store
                            ) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """The consistent demonstrations of ``aft.<name>`` (source: generated), a report of
    counts, and one calls-ledger row per call (hits included)."""
    cfg: AftDataConfig = params.aft[name]
    if not cfg.spec:
        raise TrainingInputError(f"params.yaml: key 'aft.{name}.spec' is required for source: generated")
    spec = parse_spec(cfg.spec, cfg.template_vars)  # a bad spec fails before any call
    sections = section_contexts(spec, cfg)
    if not sections:
        raise TrainingInputError(f"{cfg.spec}: no section with text to generate AFT data from")
    sampling = sampling_for(params, cfg.backend)
    backend = make_backend(cfg.backend, params)
    calls = CallRun(store, backend, f"aft {name}")
    try:
        if cfg.domains == "model":
            domains, short = invent_domains(cfg, sections, sampling, calls)
            if not domains:
                raise TrainingInputError(
                    f"params.yaml: aft.{name}: the model gave no conversation domain for any section of {cfg.spec}")
        else:
            domains, short = sections_as_domains(sections), {}
        rows, counts = _generate(cfg, domains, sampling, calls)
    finally:
        backend.close()
    s = calls.stats
    print(f"aft {name}: {len(domains)} conversation domains ({cfg.domains}) over {len(sections)} sections; "
          f"{counts['kept']} of {counts['queries']} examples kept in {counts['rounds']} round(s) "
          f"({counts['near_duplicates']} near-duplicate queries by {counts['near_duplicate_method']}, "
          f"{counts['malformed']} malformed, {counts['inconsistent']} rejected by the judge); "
          f"{s.requests} calls, {s.hits} cached, {s.misses} made, ${s.cost_usd:.4f} spent now",
          file=sys.stderr)
    report = {"spec": cfg.spec, "backend": cfg.backend, "think": cfg.think,
              "n_queries": cfg.n_queries, "domains_from": cfg.domains, "sections": [x["id"] for x in sections],
              "domains": [d["id"] for d in domains], "sections_short_of_domains": short, **counts,
              "calls": s.requests, "cost_usd": round(calls.cost_usd, 6)}
    return rows, report, calls.rows


def _generate(cfg: AftDataConfig, domains: list[dict[str, str]], sampling: Sampling,
              calls: CallRun) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rounds of queries -> near-duplicate removal -> replies -> judge, until every domain
    keeps ``n_queries`` examples or ``backfill_rounds`` extra rounds are spent.

    A round asks only for what a domain still lacks (plus 10% headroom after the first),
    in new query batches, so earlier calls keep their keys. A query already asked in the
    same section is dropped (two domains of a section can propose the same message, whose
    reply would be the same example); near-duplicates are removed within a domain. A
    domain's rounds depend on its own section's answers only, so an edit to one section
    changes no other section's calls.
    """
    state = {d["id"]: _DomainState(d) for d in domains}
    totals = {"queries_asked": 0, "queries": 0, "duplicates": 0, "near_duplicates": 0,
              "malformed": 0, "inconsistent": 0, "rounds": 0}
    method = "none"
    section_texts: dict[str, set[str]] = {}
    for round_no in range(1 + cfg.backfill_rounds):
        lacking = {k: cfg.n_queries - len(st.rows) for k, st in state.items() if len(st.rows) < cfg.n_queries}
        if not lacking:
            break
        totals["rounds"] += 1
        q_req, q_meta = [], []
        for key, short in lacking.items():
            st = state[key]
            want = short if round_no == 0 else math.ceil(short * 1.1)
            while want > 0:
                n = min(QUERIES_PER_CALL, want)
                q_req.append(queries_request(cfg, st.domain, sampling, st.batches, n))
                q_meta.append((st, n))
                st.batches += 1
                want -= n
                totals["queries_asked"] += n
        new: list[tuple[_DomainState, int, str, str, GenResult]] = []
        for (st, n), res in zip(q_meta, calls.call(q_req, f"queries (round {round_no + 1})"), strict=True):
            asked = section_texts.setdefault(st.domain["section"], set())
            for text, qtype in _query_texts(res, n):
                if text in asked:  # the same query twice in a section would be the same example twice
                    totals["duplicates"] += 1
                    continue
                asked.add(text)
                st.texts.append(text)
                new.append((st, len(st.texts) - 1, text, qtype, res))
        new, removed, method = _drop_near_duplicates(state, new, cfg)
        totals["near_duplicates"] += removed
        totals["queries"] += len(new)
        rows, malformed, inconsistent = _answer_and_judge(cfg, new, sampling, calls, round_no)
        totals["malformed"] += malformed
        totals["inconsistent"] += inconsistent
        for st, row in rows:
            st.rows.append(row)
    out = [row for st in state.values() for row in st.rows[: cfg.n_queries]]
    short = {k: cfg.n_queries - len(st.rows) for k, st in state.items() if len(st.rows) < cfg.n_queries}
    return out, {**totals, "kept": len(out), "near_duplicate_method": method,
                 "domains_short_of_target": short}


class _DomainState:
    """One domain across rounds: query batches issued, query texts seen, rows kept."""

    def __init__(self, domain: dict[str, str]):
        self.domain = domain
        self.batches = 0
        self.texts: list[str] = []
        self.rows: list[dict[str, Any]] = []


def _bullets(types: dict[str, str]) -> str:
    return "\n".join(f"- {name}: {text}" for name, text in types.items())


def _numbered(items: list[str]) -> str:
    return "\n".join(f"{i}. {text}" for i, text in enumerate(items, 1))


def _drop_near_duplicates(state: dict[str, _DomainState], new: list[tuple], cfg: AftDataConfig
                          ) -> tuple[list[tuple], int, str]:
    """New queries that are not near-duplicates of an earlier query of their domain."""
    from msmbuild.generate.neardup import remove_near_duplicates

    keep: set[tuple[str, int]] = set()
    removed, method = 0, "none"
    touched = {item[0].domain["id"] for item in new}
    for key in touched:
        st = state[key]
        result = remove_near_duplicates(st.texts, cfg.near_duplicates)
        method = result.method
        kept = set(result.kept)
        fresh = [item for item in new if item[0] is st]
        removed += sum(1 for item in fresh if item[1] not in kept)
        keep |= {(key, item[1]) for item in fresh if item[1] in kept}
    return [item for item in new if (item[0].domain["id"], item[1]) in keep], removed, method


def _answer_and_judge(cfg: AftDataConfig, queries: list[tuple], sampling: Sampling, calls: CallRun,
                      round_no: int) -> tuple[list[tuple[_DomainState, dict[str, Any]]], int, int]:
    """Replies to the queries, judged against the criteria: (kept rows, malformed, rejected)."""
    r_req = [reply_request(cfg, st.domain, sampling, q) for st, _i, q, _t, _r in queries]
    replies = calls.call(r_req, f"replies (round {round_no + 1})")
    formed = []
    for item, req, res in zip(queries, r_req, replies, strict=True):
        parts = split_reply(res.text, cfg.think)
        if parts is not None:
            reply = f"<think>\n{parts[0]}\n</think>\n\n{parts[1]}" if cfg.think else parts[1]
            formed.append((item, req, res, reply))
    j_req = [judge_request(cfg, st.domain, sampling, q, reply)
             for (st, _i, q, _t, _r), _req, _res, reply in formed]
    verdicts = calls.call(j_req, f"judge (round {round_no + 1})")
    rows = []
    for ((st, i, q, qtype, q_res), req, res, reply), verdict in zip(formed, verdicts, strict=True):
        data = verdict.data if isinstance(verdict.data, dict) else {}
        if data.get("consistent") is not True:
            continue
        d = st.domain
        rows.append((st, {
            "id": calls.key(req), "source": "generated", "think": cfg.think,
            "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": reply}],
            "spec": cfg.spec, "domain": d["id"], "domain_title": d["title"],
            "domain_description": d["description"], "section": d["section"],
            "section_title": d["section_title"], "domain_hash": d["digest"],
            "query_index": i, "question_type": qtype,
            "response_style": cfg.response_style, "round": round_no + 1,
            "backend": res.backend, "model": res.model, "prompt_version": req.prompt_version,
            "produced_by_model": all(r.produced_by_model for r in (q_res, res, verdict)),
            "consistency_reason": str(data.get("reason", "")),
        }))
    return rows, len(queries) - len(formed), len(formed) - len(rows)

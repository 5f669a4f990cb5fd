"""AFT demonstrations generated from a spec: queries → replies → consistency judge.

Domains are the spec's top-level sections (``structural_tree``); each call sees the spec
preamble plus its domain's text only, so an edit to one section changes the keys of that
domain's calls and no others. Per domain, ``aft_queries`` calls propose ``n_queries``
user messages, at most ``QUERIES_PER_CALL`` per call (a prompt names its batch, not the
batch count, so raising ``n_queries`` past a multiple of it only adds calls); an
``aft_response`` call answers each with the domain text in context (a ``<think>`` block
first when ``think``); an ``aft_consistency`` call judges each well-formed reply against
the same text, returning ``{consistent, reason}``. Repeated queries of a domain, replies
malformed for the think setting and rows the judge does not mark consistent are dropped
and counted. All calls go through ``run_requests``: a rerun is lookups only, and a run
killed halfway pays only for what it had not finished.
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Any

from msmbuild.errors import TrainingInputError
from msmbuild.generate.backends import make_backend
from msmbuild.generate.backends.base import GenResult
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
from msmbuild.spec import Spec, parse_spec

if TYPE_CHECKING:
    from msmbuild.config import AftDataConfig, Params
    from msmbuild.store import Store

QUERIES_PER_CALL = 20
THINK_RE = re.compile(r"\A\s*<think>(.*?)</think>(.*)\Z", re.S)
THINK_INSTRUCTIONS = (
    "First reason privately inside one <think>...</think> block: name the parts of the "
    "specification that apply to this message and what they require, quoting them where "
    "it helps. Then, after </think>, write your reply to the user. The reply follows the "
    "specification without mentioning it.")
PLAIN_INSTRUCTIONS = (
    "Write your reply to the user. It follows the specification without mentioning it. "
    "Give only the reply: no reasoning preamble and no <think> block.")


def domain_contexts(spec: Spec) -> list[dict[str, str]]:
    """One entry per top-level section with text: id, title and the context its calls see."""
    by_id = spec.by_id()
    return [{"id": d["id"], "title": by_id[d["id"]].title,
             "context": section_context(spec.preamble, (), domain_text(spec, d["id"]))}
            for d in structural_tree(spec)["domains"]]


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


JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["consistent", "reason"],
    "properties": {"consistent": {"type": "boolean"}, "reason": {"type": "string"}}}


def _query_texts(result: GenResult, n: int) -> list[str]:
    data = result.data
    items = data.get("queries") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return []
    texts = [str(q.get("query", "")).strip() for q in items if isinstance(q, dict)]
    return [t for t in texts if t][:n]


def generate_demonstrations(params: Params, name: str, store: Store
                            ) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """The consistent demonstrations of ``aft.<name>`` (source: generated), a report of
    counts, and one calls-ledger row per call (hits included)."""
    cfg: AftDataConfig = params.aft[name]
    if not cfg.spec:
        raise TrainingInputError(f"params.yaml: key 'aft.{name}.spec' is required for source: generated")
    spec = parse_spec(cfg.spec, cfg.template_vars)  # a bad spec fails before any call
    domains = domain_contexts(spec)
    if not domains:
        raise TrainingInputError(f"{cfg.spec}: no section with text to generate AFT data from")
    sampling = sampling_for(params, cfg.backend)
    backend = make_backend(cfg.backend, params)
    calls = CallRun(store, backend, f"aft {name}")
    try:
        rows, counts = _generate(cfg, domains, sampling, calls)
    finally:
        backend.close()
    s = calls.stats
    print(f"aft {name}: {counts['kept']} of {counts['queries']} examples kept "
          f"({counts['malformed']} malformed, {counts['inconsistent']} judged inconsistent); "
          f"{s.requests} calls, {s.hits} cached, {s.misses} made, ${s.cost_usd:.4f} spent now",
          file=sys.stderr)
    report = {"spec": cfg.spec, "backend": cfg.backend, "think": cfg.think,
              "n_queries": cfg.n_queries, "domains": [d["id"] for d in domains], **counts,
              "calls": s.requests, "cost_usd": round(calls.cost_usd, 6)}
    return rows, report, calls.rows


def _generate(cfg: AftDataConfig, domains: list[dict[str, str]], sampling: Sampling,
              calls: CallRun) -> tuple[list[dict[str, Any]], dict[str, int]]:
    q_req, q_meta = [], []
    for d in domains:
        batches = -(-cfg.n_queries // QUERIES_PER_CALL)
        for b in range(batches):
            n = min(QUERIES_PER_CALL, cfg.n_queries - b * QUERIES_PER_CALL)
            schema = list_schema(object_schema("query"), "queries", n)
            q_req.append(build_request("aft_queries", d["context"], sampling, schema=schema,
                                       sample_index=b, domain=d["title"], batch=b + 1, n=n))
            q_meta.append((d, n))
    queries = []  # (domain, query index within the domain, query, query call result)
    per_domain: dict[str, int] = {}
    seen: set[tuple[str, str]] = set()
    for (d, n), res in zip(q_meta, calls.call(q_req, "queries"), strict=True):
        for text in _query_texts(res, n):
            if (d["id"], text) in seen:  # the same query twice would be the same example twice
                continue
            seen.add((d["id"], text))
            queries.append((d, per_domain.get(d["id"], 0), text, res))
            per_domain[d["id"]] = per_domain.get(d["id"], 0) + 1
    instructions = THINK_INSTRUCTIONS if cfg.think else PLAIN_INSTRUCTIONS
    r_req = [build_request("aft_response", d["context"], sampling, domain=d["title"],
                           think="yes" if cfg.think else "no", query=q, instructions=instructions)
             for d, _i, q, _r in queries]
    replies = calls.call(r_req, "replies")
    formed = []
    for item, req, res in zip(queries, r_req, replies, strict=True):
        parts = split_reply(res.text, cfg.think)
        if parts is not None:
            reply = f"<think>\n{parts[0]}\n</think>\n\n{parts[1]}" if cfg.think else parts[1]
            formed.append((item, req, res, reply))
    j_req = [build_request("aft_consistency", d["context"], sampling, schema=JUDGE_SCHEMA,
                           domain=d["title"], query=q, reply=reply)
             for (d, _i, q, _r), _req, _res, reply in formed]
    verdicts = calls.call(j_req, "consistency")
    rows = []
    for ((d, i, q, q_res), req, res, reply), verdict in zip(formed, verdicts, strict=True):
        data = verdict.data if isinstance(verdict.data, dict) else {}
        if data.get("consistent") is not True:
            continue
        rows.append({
            "id": calls.key(req), "source": "generated", "think": cfg.think,
            "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": reply}],
            "spec": cfg.spec, "domain": d["id"], "domain_title": d["title"],
            "domain_hash": digest_text(d["context"]), "query_index": i,
            "backend": res.backend, "model": res.model, "prompt_version": req.prompt_version,
            "produced_by_model": all(r.produced_by_model for r in (q_res, res, verdict)),
            "consistency_reason": str(data.get("reason", "")),
        })
    counts = {"queries_asked": sum(n for _d, n in q_meta), "queries": len(queries), "malformed": len(queries) - len(formed),
              "inconsistent": len(formed) - len(rows), "kept": len(rows)}
    return rows, counts

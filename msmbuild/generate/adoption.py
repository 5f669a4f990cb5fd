"""Adoption of pulled partitions: a partition file DVC brought into the build, whose bytes
match the digests its index entry names and whose entry names the action key the step
computes now, is taken as that action's result on a store miss (docs/decisions.md, "What
DVC carries and what the store remote carries"). The record is rebuilt from the index
entry and the partition's calls ledger, its bytes go into the local CAS, and it is
written through like any new result. A file that does not verify is never adopted: the
subdomain is built (and paid for) as usual.
"""

from __future__ import annotations

import json
import logging

from msmbuild.fsutil import json_bytes
from msmbuild.generate.dedup import signature_bytes, signatures
from msmbuild.generate.partitions import read_ideas_index, read_index
from msmbuild.hashing import digest_bytes
from msmbuild.layout import Layout
from msmbuild.store import ActionResult, Store

log = logging.getLogger(__name__)


def _kept_call_keys(path) -> list[str]:
    """The keys of the calls a partition's ledger holds that did not fail (its gc roots)."""
    from msmbuild.tables import read_parquet_rows

    return sorted({r["key"] for r in read_parquet_rows(path) if not r["error"]})


def adopt_ideas(store: Store, layout: Layout, corpus: str, keys: dict[str, str],
                fields: tuple[str, ...]) -> dict[str, ActionResult]:
    """The ideas partitions of the subdomains in keys that verify, adopted as their actions."""
    index = read_ideas_index(layout, corpus)
    apath = layout.assertions(corpus)
    if index is None or not apath.is_file():
        return {}
    try:
        assertions = json.loads(apath.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    entries = {e.get("subdomain"): e for e in index["partitions"]}
    out: dict[str, ActionResult] = {}
    for sid, key in keys.items():
        e = entries.get(sid)
        if e is None or e.get("key") != key or sid not in assertions or any(f not in e for f in fields) \
                or digest_bytes(json_bytes(assertions[sid])) != e["assertions_digest"]:
            continue
        ideas, calls = layout.ideas_partition(corpus, e["partition"]), layout.idea_calls_partition(corpus, e["partition"])
        if not calls.is_file():
            continue
        meta = {"kind": "ideas-partition", "corpus": corpus, "subdomain": sid, "assertions": assertions[sid],
                **{f: e[f] for f in fields},
                "sizes": {"ideas": e["ideas"]["size"], "calls": e["calls"]["size"]},
                "keeps": _kept_call_keys(calls)}
        rec = store.adopt_files(key, {"ideas": ideas, "calls": calls},
                                {"ideas": e["ideas"]["digest"], "calls": e["calls"]["digest"]}, meta)
        if rec is not None:
            out[sid] = rec
    if out:
        log.info("%s ideas: adopted %d pulled partition(s) as store results", corpus, len(out))
    return out


def adopt_documents(store: Store, layout: Layout, corpus: str, keys: dict[str, str],
                    fields: tuple[str, ...], dedup: bool) -> dict[str, ActionResult]:
    """The documents partitions of the subdomains in keys that verify, adopted as their actions.

    Only a partition that lost no row to a near-duplicate of another subdomain holds its
    action's candidates byte for byte; one that did is built again.
    """
    from msmbuild.tables import read_parquet_rows

    index = read_index(layout, corpus)
    if index is None:
        return {}
    entries = {e.get("subdomain"): e for e in index["partitions"]}
    out: dict[str, ActionResult] = {}
    for sid, key in keys.items():
        e = entries.get(sid)
        if e is None or e.get("key") != key or e.get("dropped") or "calls" not in e \
                or e.get("candidates") != e["documents"]["digest"] or any(f not in e for f in fields):
            continue
        docs = layout.document_partition(corpus, e["partition"])
        calls = layout.document_calls_partition(corpus, e["partition"])
        if not (docs.is_file() and calls.is_file()):
            continue
        meta = {"kind": "documents-partition", "corpus": corpus, "subdomain": sid, **{f: e[f] for f in fields},
                "sizes": {"documents": e["documents"]["size"], "calls": e["calls"]["size"]},
                "keeps": _kept_call_keys(calls)}
        extra = None
        if dedup:
            try:
                texts = [r["text"] for r in read_parquet_rows(docs)]
            except Exception:  # noqa: BLE001 - an unreadable file is simply not adopted
                continue
            extra = {"signatures": store.put_bytes(signature_bytes(signatures(texts)))}
        rec = store.adopt_files(key, {"documents": docs, "calls": calls},
                                {"documents": e["documents"]["digest"], "calls": e["calls"]["digest"]}, meta, extra)
        if rec is not None:
            out[sid] = rec
    if out:
        log.info("%s documents: adopted %d pulled partition(s) as store results", corpus, len(out))
    return out

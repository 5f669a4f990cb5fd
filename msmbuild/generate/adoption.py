"""Adoption of pulled partitions: a partition DVC brought into the build (in a partition
file), whose rows encode to the digests its index entry names and whose entry names the
action key the step computes now, is taken as that action's result on a store miss
(docs/decisions.md, "What DVC carries and what the store remote carries"). The record is
rebuilt from the index entry and the partition's calls ledger, its bytes go into the
local CAS, and it is written through like any new result. A partition that does not
verify is never adopted: the subdomain is built (and paid for) as usual.
"""

from __future__ import annotations

import functools
import io
import json
import logging
from typing import Any

from msmbuild.errors import MsmbuildError
from msmbuild.fsutil import json_bytes
from msmbuild.generate.dedup import signature_bytes, signatures
from msmbuild.generate.partition_files import FileTables, member_bytes
from msmbuild.generate.partitions import KINDS, kind_path, read_ideas_index, read_index
from msmbuild.hashing import digest_bytes
from msmbuild.layout import Layout
from msmbuild.store import ActionResult, Store

log = logging.getLogger(__name__)


def _kept_call_keys(rows: list[dict[str, Any]]) -> list[str]:
    """The keys of the calls a partition's ledger holds that did not fail (its gc roots)."""
    return sorted({r["key"] for r in rows if not r["error"]})


class _Pulled:
    """Partitions as pulled partition files hold them, checked against their entries."""

    def __init__(self, layout: Layout, corpus: str) -> None:
        from msmbuild.tables import SCHEMAS

        self.layout, self.corpus = layout, corpus
        self.readers = {what: FileTables(SCHEMAS[KINDS[what][1]]) for what in KINDS}

    def rows(self, what: str, e: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The entry's rows of one kind (KINDS) where its file holds them, or None."""
        part = e.get(KINDS[what][0])
        if not (isinstance(part, dict) and "offset" in part and isinstance(e.get("file"), str)):
            return None
        path = kind_path(self.layout, self.corpus, what, e["file"])
        try:
            return self.readers[what].rows(path, part["offset"], part["rows"]).to_pylist() if path.is_file() else None
        except Exception:  # noqa: BLE001 - an unreadable or short file is simply not adopted
            return None

    def data(self, what: str, e: dict[str, Any]) -> bytes | None:
        """The entry's standalone partition bytes of one kind, if they hash to its digest."""
        from msmbuild.tables import SCHEMAS

        part, path = e.get(KINDS[what][0]), None
        if isinstance(part, dict) and "offset" in part and isinstance(e.get("file"), str):
            path = kind_path(self.layout, self.corpus, what, e["file"])
        if path is None or not path.is_file():
            return None
        try:
            data = member_bytes(self.readers[what].table(path), part["offset"], part["rows"],
                                SCHEMAS[KINDS[what][1]])
        except Exception:  # noqa: BLE001
            return None
        if digest_bytes(data) != part.get("digest"):
            _refuse_other_writer(path)
            log.info("%s: the rows of %s do not match the digest its index names; not adopted", path, e["partition"])
            return None
        return data


@functools.cache
def local_writer() -> str:
    """What this pyarrow writes as a parquet file's ``created_by``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"x": [0]}), buf)
    return pq.read_metadata(io.BytesIO(buf.getvalue())).created_by


def _refuse_other_writer(path) -> None:
    """A clear error (before any model call) when a pulled partition file was written by
    another parquet writer than this pyarrow: its partitions encode to other bytes here,
    so none could be adopted and every one would be paid for again."""
    import pyarrow.parquet as pq

    try:
        theirs = pq.read_metadata(path).created_by
    except Exception:  # noqa: BLE001 - an unreadable file is simply not adopted
        return
    ours = local_writer()
    if theirs and theirs != ours:
        version = theirs.rsplit(" ", 1)[-1]
        raise MsmbuildError(
            f"{path}: written by {theirs}, but this machine's pyarrow writes {ours}: the partitions it "
            f"holds encode to other bytes here and cannot be adopted, so they would be generated (and "
            f"paid for) again. Install the builder's version (pip install 'pyarrow=={version}') and run again")


def adopt_ideas(store: Store, layout: Layout, corpus: str, keys: dict[str, str],
                fields: tuple[str, ...]) -> dict[str, ActionResult]:
    """The ideas partitions of the subdomains in keys that verify, adopted as their actions."""
    if not keys:
        return {}
    index = read_ideas_index(layout, corpus)
    apath = layout.assertions(corpus)
    if index is None or not apath.is_file():
        return {}
    try:
        assertions = json.loads(apath.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    entries = {e.get("subdomain"): e for e in index["partitions"]}
    pulled = _Pulled(layout, corpus)
    out: dict[str, ActionResult] = {}
    for sid, key in keys.items():
        e = entries.get(sid)
        if e is None or e.get("key") != key or sid not in assertions or any(f not in e for f in fields) \
                or digest_bytes(json_bytes(assertions[sid])) != e["assertions_digest"]:
            continue
        ideas, calls = pulled.data("ideas", e), pulled.data("idea_calls", e)
        if ideas is None or calls is None:
            continue
        meta = {"kind": "ideas-partition", "corpus": corpus, "subdomain": sid, "assertions": assertions[sid],
                **{f: e[f] for f in fields},
                "sizes": {"ideas": e["ideas"]["size"], "calls": e["calls"]["size"]},
                "keeps": _kept_call_keys(pulled.rows("idea_calls", e) or [])}
        rec = store.adopt_files(key, {}, {}, meta, {"ideas": store.put_bytes(ideas), "calls": store.put_bytes(calls)})
        if rec is not None:
            out[sid] = rec
    if out:
        log.info("%s ideas: adopted %d pulled partition(s) as store results", corpus, len(out))
    return out


def _with_dropped(kept: list[dict[str, Any]], dropped: list[dict[str, Any]], at: list[int]) -> list[dict[str, Any]]:
    """The candidate rows: dropped rows back at their indices (``at``, ascending) among the kept."""
    if len(dropped) != len(at):
        raise ValueError("the dropped rows do not match the index entry")
    rows, k, d = [], iter(kept), dict(zip(sorted(at), dropped, strict=True))
    for i in range(len(kept) + len(dropped)):
        rows.append(d[i] if i in d else next(k))
    return rows


def _counts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What a partition action's meta says of its candidates."""
    digests: dict[str, int] = {}
    for r in rows:
        digests[r["spec_digest"]] = digests.get(r["spec_digest"], 0) + 1
    return {"n_docs": len(rows), "n_chars": sum(r["n_chars"] for r in rows),
            "kept_cost_usd": float(sum(r["cost_usd"] for r in rows)), "spec_digests": digests}


def adopt_documents(store: Store, layout: Layout, corpus: str, keys: dict[str, str],
                    fields: tuple[str, ...], dedup: bool) -> dict[str, ActionResult]:
    """The documents partitions of the subdomains in keys that verify, adopted as their actions.

    A partition that lost rows to near-duplicates of earlier subdomains is rebuilt into its
    action's candidates from its ``near_duplicates/`` file (the dropped rows) first; the
    result must hash to the entry's ``candidates`` digest.
    """
    from msmbuild.tables import SCHEMAS, parquet_bytes, read_parquet_rows

    if not keys:
        return {}
    index = read_index(layout, corpus)
    if index is None:
        return {}
    entries = {e.get("subdomain"): e for e in index["partitions"]}
    pulled = _Pulled(layout, corpus)
    out: dict[str, ActionResult] = {}
    for sid, key in keys.items():
        e = entries.get(sid)
        if e is None or e.get("key") != key or "calls" not in e or any(f not in e for f in fields):
            continue
        kept, calls = pulled.data("documents", e), pulled.data("document_calls", e)
        if kept is None or calls is None:
            continue
        rows = pulled.rows("documents", e) or []
        if e.get("dropped"):  # the candidates: the kept rows with the dropped ones put back
            try:
                rows = _with_dropped(rows, read_parquet_rows(layout.dropped_rows(corpus, e["partition"])),
                                     e["dropped"])
            except Exception:  # noqa: BLE001 - an unreadable or missing file is simply not adopted
                continue
        candidates = parquet_bytes(rows, SCHEMAS["documents"]) if e.get("dropped") else kept
        if digest_bytes(candidates) != e.get("candidates"):
            continue
        meta = {"kind": "documents-partition", "corpus": corpus, "subdomain": sid, **{f: e[f] for f in fields},
                **_counts(rows), "sizes": {"documents": len(candidates), "calls": e["calls"]["size"]},
                "keeps": _kept_call_keys(pulled.rows("document_calls", e) or [])}
        extra = {"documents": store.put_bytes(candidates), "calls": store.put_bytes(calls)}
        if dedup:
            extra["signatures"] = store.put_bytes(signature_bytes(signatures(r["text"] for r in rows)))
        rec = store.adopt_files(key, {}, {}, meta, extra)
        if rec is not None:
            out[sid] = rec
    if out:
        log.info("%s documents: adopted %d pulled partition(s) as store results", corpus, len(out))
    return out

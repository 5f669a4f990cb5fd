"""The ideas step per subdomain: one store action per subdomain, files composed from them.

A subdomain's assertions, doc types and ideas depend only on that subdomain (its section
text and hash), the corpus's counts, the stage prompts and schemas, the model, backend,
sampling, identity and the spec context as the corpus's policy keys it. ``ideas_partition_key``
covers all of these with one hash per subdomain (the key of its first assertions request
stands for the model, backend, sampling, identity and context, as the documents step's
``partition_key`` does), so an unchanged subdomain is one store lookup and none of its
requests is built or keyed. A changed subdomain's calls are made as before, and its
assertions, idea rows and calls rows are saved as an ``ideas-partition`` action that keeps
its calls (gc roots name the actions).

The outputs downstream rules read stay whole files (assertions.json, ideas.parquet,
calls/ideas.parquet): they are composed from the actions' stored bytes by Arrow, and
``ideas.json`` (derived state) records which actions they were composed from, so a
rebuild that changes nothing compares one small file and rewrites none.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from msmbuild.fsutil import json_bytes, write_bytes_if_changed
from msmbuild.generate.prompts import load_prompt
from msmbuild.generate.stages import (
    DOC_TYPES_SCHEMA,
    IDEAS_SCHEMA,
    StageRun,
    assertion_request,
)
from msmbuild.hashing import digest_text
from msmbuild.layout import Layout
from msmbuild.store import ActionResult, Store
from msmbuild.tables import SCHEMAS, parquet_bytes

IDEAS_PARTITION_FORMAT = 1  # bump when a partition's content changes for the same inputs
IDEAS_INDEX_FORMAT = 1


def ideas_partition_key(run: StageRun, sub: dict[str, Any]) -> str:
    """The action key of one subdomain's assertions, doc types and ideas.

    The subdomain (its text and section hash), the list sizes and top-up rounds, the
    doc-types and ideas prompt versions and schemas, and the key of its first assertions
    request (prompt version, model and backend, sampling, identity, spec context as the
    policy keys it). With refresh_stale the current context is in the key too.
    """
    cfg = run.cfg
    return run.store.key("ideas-partition", {
        "format": IDEAS_PARTITION_FORMAT, "corpus": run.corpus, "subdomain": sub,
        "sizes": [cfg.n_assertions, cfg.n_doc_types, cfg.n_doc_ideas, cfg.max_topups],
        "prompts": {stage: load_prompt(stage).tag for stage in ("doc_types", "ideas")},
        "schemas": [DOC_TYPES_SCHEMA, IDEAS_SCHEMA],
        "first_request": run.key(assertion_request(sub, run.requests)),
        "refresh": digest_text(run.context) if run.refresh_stale and run.context else None})


def batches(items: Sequence[Any], weights: Sequence[int], limit: int) -> Iterator[list[Any]]:
    """Consecutive runs of items whose weights add up to at most limit (at least one item each)."""
    batch: list[Any] = []
    total = 0
    for item, weight in zip(items, weights, strict=True):
        if batch and total + weight > limit:
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += weight
    if batch:
        yield batch


def save_idea_partitions(store: Store, run: StageRun, subs: list[dict[str, Any]], keys: dict[str, str],
                         assertions: dict[str, Any], ideas: list[dict[str, Any]],
                         calls: list[dict[str, Any]]) -> dict[str, ActionResult]:
    """Record each changed subdomain's assertions, idea rows and calls rows as its action."""
    ideas_by: dict[str, list[dict[str, Any]]] = {sub["id"]: [] for sub in subs}
    for row in ideas:
        ideas_by[row["subdomain"]].append(row)
    calls_by: dict[str, list[dict[str, Any]]] = {sub["id"]: [] for sub in subs}
    for row in calls:
        if row.get("subdomain") in calls_by:
            calls_by[row["subdomain"]].append(row)
    records = {}
    for sub in subs:
        sid = sub["id"]
        made = [r for r in calls_by[sid] if not r["cache_hit"]]
        meta = {"kind": "ideas-partition", "corpus": run.corpus, "subdomain": sid,
                "assertions": assertions[sid], "n_ideas": len(ideas_by[sid]),
                "n_unsuitable": sum(not r["suitable"] for r in ideas_by[sid]), "n_calls": len(calls_by[sid]),
                "new_cost_usd": float(sum(r["cost_usd"] or 0.0 for r in made)),
                "keeps": sorted({r["key"] for r in calls_by[sid] if not r["error"]})}
        outputs = {"ideas": store.put_bytes(parquet_bytes(ideas_by[sid], SCHEMAS["ideas"])),
                   "calls": store.put_bytes(parquet_bytes(calls_by[sid], SCHEMAS["calls"]))}
        records[sid] = store.save_action(keys[sid], outputs, meta, durable=False)
    store.sync()
    return records


def place_ideas(store: Store, layout: Layout, corpus: str, subs: list[dict[str, Any]],
                keys: dict[str, str], records: dict[str, ActionResult]) -> list[str]:
    """Write assertions.json, ideas.parquet and calls/ideas.parquet unless ideas.json says they
    already hold these actions' outputs; returns the paths written."""
    entries = [{"subdomain": sub["id"], "key": keys[sub["id"]], "ideas": records[sub["id"]].outputs["ideas"],
                "calls": records[sub["id"]].outputs["calls"]} for sub in subs]
    files = {"assertions": layout.assertions(corpus), "ideas": layout.ideas(corpus),
             "calls": layout.step_calls(corpus, "ideas")}
    old = _read_index(layout.ideas_index(corpus))
    if old is not None and old["partitions"] == entries and all(
            path.is_file() and path.stat().st_size == old["sizes"].get(name) for name, path in files.items()):
        return []
    data = {"assertions": json_bytes({sub["id"]: records[sub["id"]].meta["assertions"] for sub in subs}),
            "ideas": _concat(store, [e["ideas"] for e in entries], "ideas"),
            "calls": _concat(store, [e["calls"] for e in entries], "calls")}
    changed = [str(path) for name, path in files.items() if write_bytes_if_changed(path, data[name])]
    index = {"format": IDEAS_INDEX_FORMAT, "corpus": corpus, "partitions": entries,
             "sizes": {name: len(b) for name, b in data.items()}}
    write_bytes_if_changed(layout.ideas_index(corpus), json_bytes(index))
    return changed


def _read_index(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("format") == IDEAS_INDEX_FORMAT else None


def _concat(store: Store, digests: list[str], table: str) -> bytes:
    """One parquet file of the rows of the stored parquet blobs, in order (the same bytes as
    ``parquet_bytes`` of those rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = SCHEMAS[table]
    parts = [pq.read_table(io.BytesIO(store.get_bytes(d)), use_threads=False, pre_buffer=False)
             for d in digests]
    combined = pa.concat_tables(parts).combine_chunks() if parts else schema.empty_table()
    buf = io.BytesIO()
    pq.write_table(combined, buf, compression="zstd")
    return buf.getvalue()

"""The ideas step per subdomain: one store action and one partition file per subdomain.

A subdomain's assertions, doc types and ideas depend only on that subdomain (its section
text and hash), the corpus's counts, the stage prompts and schemas, the model, backend,
sampling, identity and the spec context as the corpus's policy keys it. ``ideas_partition_key``
covers all of these with one hash per subdomain (the key of its first assertions request
stands for the model, backend, sampling, identity and context, as the documents step's
``partition_key`` does), so an unchanged subdomain is one store lookup and none of its
requests is built or keyed. A changed subdomain's calls are made as before, and its
assertions, idea rows and calls rows are saved as an ``ideas-partition`` action that keeps
its calls (gc roots name the actions).

The step's outputs are partitioned like the documents (msmbuild.generate.partitions):
``ideas/<partition>.parquet`` and ``calls/ideas/<partition>.parquet``, indexed by
``ideas.json`` (each partition's key, digests and counts; the workflow output the
documents step depends on), plus ``assertions.json``. A partition is placed only when its
index entry does not already name its digest, so an edit writes the changed subdomain's
files, and a rebuild that changes nothing writes none.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from msmbuild.fsutil import json_bytes
from msmbuild.generate.partitions import (
    IDEAS_INDEX_FORMAT,
    VerifiedFiles,
    partition_name,
    place,
    read_ideas_index,
    remove_stale,
    write_touching,
)
from msmbuild.generate.prompts import load_prompt
from msmbuild.generate.stages import (
    DOC_TYPES_SCHEMA,
    IDEAS_SCHEMA,
    StageRun,
    assertion_request,
)
from msmbuild.hashing import digest_bytes
from msmbuild.layout import Layout
from msmbuild.store import ActionResult, Store
from msmbuild.tables import SCHEMAS, parquet_bytes

IDEAS_PARTITION_FORMAT = 1  # bump when a partition's content changes for the same inputs
# What ideas.json says of each partition (from its action's meta): the documents step keys
# on the digests, status and the catalog count without reading a partition.
INDEX_META = ("assertions_digest", "n_ideas", "n_unsuitable", "n_calls", "calls_cost_usd", "new_cost_usd",
              "made_at")


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
        "prompts": {stage: load_prompt(stage, cfg.spec_type).tag for stage in ("doc_types", "ideas")},
        "schemas": [DOC_TYPES_SCHEMA, IDEAS_SCHEMA],
        "first_request": run.key(assertion_request(sub, run.requests)),
        "refresh": run.refresh_digest()})


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
        idea_bytes = parquet_bytes(ideas_by[sid], SCHEMAS["ideas"])
        call_bytes = parquet_bytes(calls_by[sid], SCHEMAS["calls"])
        meta = {"kind": "ideas-partition", "corpus": run.corpus, "subdomain": sid,
                "assertions": assertions[sid], "assertions_digest": digest_bytes(json_bytes(assertions[sid])),
                "n_ideas": len(ideas_by[sid]), "n_unsuitable": sum(not r["suitable"] for r in ideas_by[sid]),
                "n_calls": len(calls_by[sid]),
                "calls_cost_usd": float(sum(r["cost_usd"] or 0.0 for r in calls_by[sid])),
                "new_cost_usd": float(sum(r["cost_usd"] or 0.0 for r in made)),
                "made_at": max((r["made_at"] or 0.0 for r in made), default=None),
                "sizes": {"ideas": len(idea_bytes), "calls": len(call_bytes)},
                "keeps": sorted({r["key"] for r in calls_by[sid] if not r["error"]})}
        outputs = {"ideas": store.put_bytes(idea_bytes), "calls": store.put_bytes(call_bytes)}
        records[sid] = store.save_action(keys[sid], outputs, meta, durable=False)
    store.sync()
    return records


def place_ideas(store: Store, layout: Layout, corpus: str, subs: list[dict[str, Any]],
                keys: dict[str, str], records: dict[str, ActionResult]) -> list[str]:
    """Place every partition whose file is not already right; write assertions.json and the
    index; returns the paths changed.

    A partition whose ideas.json entry names the digest its action gives, and whose file
    has that entry's size, is not touched (no new mtime), as with documents.json.
    """
    old = read_ideas_index(layout, corpus, strict=False)  # a corrupt index is rewritten
    known = {p["partition"]: p for p in old["partitions"]} if old else {}
    changed: list[str] = []
    entries = []
    for sub in subs:
        sid = sub["id"]
        rec, name = records[sid], partition_name(sid)
        entry = {"partition": name, "subdomain": sid, "key": keys[sid],
                 **{what: {"digest": rec.outputs[what], "size": rec.meta["sizes"][what]}
                    for what in ("ideas", "calls")},
                 **{k: rec.meta[k] for k in INDEX_META}}
        for what, path in (("ideas", layout.ideas_partition(corpus, name)),
                           ("calls", layout.idea_calls_partition(corpus, name))):
            if place(store, entry[what]["digest"], path, known.get(name, {}).get(what)):
                changed.append(str(path))
        entries.append(entry)
    names = [e["partition"] for e in entries]
    changed += remove_stale(layout.ideas_dir(corpus), names)
    changed += remove_stale(layout.idea_calls_dir(corpus), names)
    for legacy in (layout.corpus_dir(corpus) / "ideas.parquet", layout.step_calls(corpus, "ideas")):
        if legacy.is_file():  # the single files of an earlier layout
            legacy.unlink()
            changed.append(str(legacy))
    inputs = [layout.sections(corpus), layout.tree(corpus)]
    assertions = json_bytes({sub["id"]: records[sub["id"]].meta["assertions"] for sub in subs})
    if write_touching(layout.assertions(corpus), assertions, inputs):
        changed.append(str(layout.assertions(corpus)))
    index = {"format": IDEAS_INDEX_FORMAT, "corpus": corpus, "n_ideas": sum(e["n_ideas"] for e in entries),
             "partitions": entries}
    if write_touching(layout.ideas_index(corpus), json_bytes(index), inputs):
        changed.append(str(layout.ideas_index(corpus)))
    VerifiedFiles.save_all()
    return changed

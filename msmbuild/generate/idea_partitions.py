"""The ideas step per subdomain: one store action and one partition (of each kind) per subdomain.

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
placed in ``ideas/<file>.parquet`` and ``calls/ideas/<file>.parquet`` (partition files,
msmbuild.generate.partition_files), indexed by ``ideas.json`` (each partition's key,
digests, counts and place; the workflow output the documents step depends on), plus
``assertions.json``. A partition file is written only when the partitions it holds
change, so an edit writes the changed subdomain's files, and a rebuild that changes
nothing writes none.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Sequence
from dataclasses import replace
from typing import Any

from msmbuild.errors import MsmbuildError
from msmbuild.fsutil import json_bytes
from msmbuild.generate.partition_files import file_of
from msmbuild.generate.partitions import (
    IDEAS_INDEX_FORMAT,
    VerifiedFiles,
    entry_files,
    keep_step_file,
    merge_files,
    old_place,
    old_places,
    partition_name,
    place_kind,
    stored_member,
    trusted_entries,
    write_step_file,
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
    return ideas_partition_keys(run, [sub])[sub["id"]]


def ideas_partition_keys(run: StageRun, subs: Sequence[dict[str, Any]]) -> dict[str, str]:
    """``ideas_partition_key`` of each subdomain, with what they share (the prompt versions,
    sizes, schemas and the request builder) built once."""
    cfg = run.cfg
    shared = {"format": IDEAS_PARTITION_FORMAT, "corpus": run.corpus,
              "sizes": [cfg.n_assertions, cfg.n_doc_types, cfg.n_doc_ideas, cfg.max_topups],
              "prompts": {stage: load_prompt(stage, cfg.spec_type).tag for stage in ("doc_types", "ideas")},
              "schemas": [DOC_TYPES_SCHEMA, IDEAS_SCHEMA], "refresh": run.refresh_digest()}
    requests = replace(run.requests, legacy_twins=False)  # twins are never keyed
    return {sub["id"]: run.store.key("ideas-partition", {
        **shared, "subdomain": sub, "first_request": run.key(assertion_request(sub, requests))}) for sub in subs}


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


def trusted_ideas(store: Store, layout: Layout, corpus: str, keys: dict[str, str],
                  old: dict[str, Any] | None) -> dict[str, ActionResult]:
    """The unchanged subdomains recognised from ideas.json without a store lookup
    (``trusted_entries``; assertions.json must be untouched too, as the ideas of these
    subdomains keep their assertions from it). Each gets a record rebuilt from its entry:
    its outputs' digests and sizes and the INDEX_META counts, no assertions (``place_ideas``
    reads those from assertions.json only when it has to rewrite it)."""
    placed = entry_files(layout, corpus, old, ("ideas", "idea_calls"))

    def files(e: dict[str, Any]) -> list[tuple[str, str]] | None:
        return None if any(k not in e for k in INDEX_META) else placed(e)

    entries = trusted_entries(store, layout.ideas_index(corpus), old, keys, files, [layout.assertions(corpus)])
    return {sid: ActionResult(key=e["key"], outputs={"ideas": e["ideas"]["digest"], "calls": e["calls"]["digest"]},
                              meta={"kind": "ideas-partition", "corpus": corpus, "subdomain": sid,
                                    **{k: e[k] for k in INDEX_META},
                                    "sizes": {"ideas": e["ideas"]["size"], "calls": e["calls"]["size"]}})
            for sid, e in entries.items()}


def place_ideas(store: Store, layout: Layout, corpus: str, subs: list[dict[str, Any]],
                keys: dict[str, str], records: dict[str, ActionResult],
                old: dict[str, Any] | None = None, trusted: Collection[str] = ()) -> list[str]:
    """Place every partition whose file is not already right; write assertions.json and the
    index; returns the paths changed.

    A partition file whose partitions and their digests are what ideas.json records, and
    which is verified to hold its recorded bytes, is not touched (no new mtime), as with
    documents.json. ``old`` is ideas.json as the step read it, ``trusted`` the subdomains
    ``trusted_ideas`` recognised (their records carry no assertions: those come from
    assertions.json, which a trusted subdomain requires untouched since it was written with
    the old index; their files were just found untouched and right).
    """
    from msmbuild.tables import SCHEMAS

    changed: list[str] = []
    entries = []
    for sub in subs:
        sid = sub["id"]
        rec, name = records[sid], partition_name(sid)
        entries.append({"partition": name, "subdomain": sid, "file": file_of(sid), "key": keys[sid],
                        **{what: {"digest": rec.outputs[what], "size": rec.meta["sizes"][what]}
                           for what in ("ideas", "calls")},
                        **{k: rec.meta[k] for k in INDEX_META}})
    trusted_files = {e["file"] for e in entries if e["subdomain"] in trusted}
    files = []
    for what, kind in (("ideas", "ideas"), ("idea_calls", "calls")):
        was = old_places(layout, corpus, what, old)
        members = {e["partition"]: stored_member(store, e["partition"], e[kind]["digest"], SCHEMAS[kind],
                                                 *old_place(was, e["partition"], e[kind]["digest"]))
                   for e in entries}
        placed, written = place_kind(layout, corpus, what, entries, members, old, trusted_files)
        files.append((kind, placed))
        changed += written
    for legacy in (layout.corpus_dir(corpus) / "ideas.parquet", layout.step_calls(corpus, "ideas")):
        if legacy.is_file():  # the single files of an earlier layout
            legacy.unlink()
            changed.append(str(legacy))
    inputs = [layout.sections(corpus), layout.tree(corpus)]
    apath = layout.assertions(corpus)
    # every subdomain and every old entry unchanged: assertions.json, untouched since it was
    # written with the old index, already holds exactly these subdomains' assertions
    if not (old is not None and len(trusted) == len(subs) == len(old["partitions"])
            and keep_step_file(apath, inputs)):
        kept = _kept_assertions(store, apath, {sid: records[sid].key for sid in trusted})
        assertions = {sub["id"]: kept[sub["id"]] if sub["id"] in trusted else records[sub["id"]].meta["assertions"]
                      for sub in subs}
        if write_step_file(apath, assertions, None, inputs):
            changed.append(str(apath))
    index = {"format": IDEAS_INDEX_FORMAT, "corpus": corpus, "n_ideas": sum(e["n_ideas"] for e in entries),
             "partitions": entries, "files": merge_files(*files)}
    if write_step_file(layout.ideas_index(corpus), index, old, inputs):
        changed.append(str(layout.ideas_index(corpus)))
    VerifiedFiles.save_all()
    return changed


def _kept_assertions(store: Store, path, keys: dict[str, str]) -> dict[str, Any]:
    """The assertions of trusted subdomains: from assertions.json (untouched since it was
    written with the index their entries come from), else from their stored actions."""
    if not keys:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    out = {}
    for sid, key in keys.items():
        if isinstance(data, dict) and sid in data:
            out[sid] = data[sid]
            continue
        found = store.get_action(key)
        if found is None or "assertions" not in found[0].meta:
            raise MsmbuildError(f"{path}: no assertions for subdomain {sid!r} and its ideas action "
                                f"{key[:12]} is not in the store; delete {path} and run the ideas step again")
        out[sid] = found[0].meta["assertions"]
    return out

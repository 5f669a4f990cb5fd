"""The edit-one-subdomain story end to end, with the real `dvc repro` and `msmbuild query`.

Two corpora feed two experiments (midtrain → AFT → preference eval). Editing one
subdomain of one spec and running `dvc repro` again regenerates only that subdomain's
documents, re-tokenizes only its shard, retrains only the models downstream of that
corpus, reruns only their evals, updates the report, and `msmbuild query` shows the new
and the cached calls with their cost.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from workspace_helpers import init_git_dvc, make_workflow_workspace, sh

from msmbuild.generate.partitions import read_calls, read_documents
from msmbuild.layout import Layout

pytestmark = pytest.mark.slow

PARAMS = """
corpora:
  pro_affordability:
    spec: specs/pro_affordability.md
    n_doc_types: 2
    n_doc_ideas: 2
  pro_america:
    spec: specs/pro_america.md
    n_doc_types: 2
    n_doc_ideas: 2
aft:
  cheese:
    path: aft/cheese.jsonl
midtrain:
  method: lora
  seq_len: 64
  batch_size: 4
  max_steps: 3
aft_train:
  method: full
  init: merge
  seq_len: 64
  batch_size: 4
  max_steps: 3
experiments:
  afford:
    midtrain: pro_affordability
    aft: cheese
    evals: [preference]
  america:
    midtrain: pro_america
    aft: cheese
    evals: [preference]
"""


def digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def snapshot(ws: Path) -> dict[str, dict[str, str]]:
    b = ws / "build"
    return {name: digests(b / name) for name in (
        "corpora/pro_affordability", "corpora/pro_america", "shards/pro_affordability",
        "shards/pro_america", "models/midtrain/pro_affordability", "models/midtrain/pro_america",
        "models/aft/afford", "models/aft/america", "evals/afford", "evals/america", "report")}


def test_edit_one_subdomain_then_dvc_repro(tmp_path: Path) -> None:
    ws = make_workflow_workspace(tmp_path / "ws", PARAMS, ("pro_affordability.md", "pro_america.md"))
    init_git_dvc(ws)
    sh(["dvc", "repro", "-q"], ws)
    before = snapshot(ws)
    assert all(before.values()), {k for k, v in before.items() if not v}
    # nothing a later stage does may touch an earlier stage's outputs
    status = sh(["dvc", "status"], ws)
    assert "Data and pipelines are up to date" in status, status

    spec = ws / "specs" / "pro_america.md"
    text = spec.read_text()
    spec.write_text(text.replace("### Soft and fresh cheeses {#soft-cheeses}\n",
                                 "### Soft and fresh cheeses {#soft-cheeses}\n\nSoft cheeses from Ohio come first.\n", 1))
    since = time.time()
    sh(["dvc", "repro", "-q"], ws)
    after = snapshot(ws)

    # documents: only the edited subdomain's calls missed the cache (a subdomain's ledger
    # keeps the rows of the build that made it: this build's are the ones made since)
    calls = read_calls(Layout(ws / "build"), "pro_america").to_pylist()
    missed = [c for c in calls if not c["cache_hit"] and c["made_at"] >= since]
    docs = read_documents(Layout(ws / "build"), "pro_america").to_pylist()
    edited = {d["subdomain"] for d in docs if d["section_id"] == "soft-cheeses"}
    assert edited and missed
    assert {c["subdomain"] for c in missed} == edited
    assert sum(c["stage"] == "document" for c in missed) == sum(d["subdomain"] in edited for d in docs)

    # the other corpus and everything downstream of it: untouched, byte for byte
    for name in ("corpora/pro_affordability", "shards/pro_affordability",
                 "models/midtrain/pro_affordability", "models/aft/afford", "evals/afford"):
        assert after[name] == before[name], name

    # the edited corpus: its one shard re-tokenized, its models retrained, its eval rerun
    changed_shards = {k for k in after["shards/pro_america"] if after["shards/pro_america"][k]
                      != before["shards/pro_america"].get(k)}
    manifest = json.loads((ws / "build/shards/pro_america/manifest.json").read_text())
    edited_shards = {s["name"] for s in manifest["shards"] if s["group"] in edited}
    assert changed_shards and all(k == "manifest.json" or k.split(".")[0] in edited_shards
                                  for k in changed_shards), changed_shards
    for name in ("models/midtrain/pro_america", "models/aft/america", "evals/america", "report"):
        assert after[name] != before[name], name

    # the query layer sees the new and the cached calls and their cost
    out = sh(["msmbuild", "query", "--format", "json",
              "SELECT corpus, NOT cache_hit AND made_at >= " + repr(since) + " AS made_now, "
              "count(*) AS calls, sum(cost_usd) AS cost FROM calls GROUP BY ALL ORDER BY ALL"], ws)
    rows = json.loads(out[out.index("["):])
    america = {r["made_now"]: r["calls"] for r in rows if r["corpus"] == "pro_america"}
    assert america.get(True) == len(missed) and america.get(False, 0) > 0, rows
    assert sum(america.values()) == len(calls)

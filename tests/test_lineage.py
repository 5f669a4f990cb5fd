"""Lineage by content: every call row names its stage's prompt version; checkpoints record
the digests they were trained from; after documents are regenerated without retraining,
the catalog shows the shards, checkpoints and eval numbers built from the old ones as stale."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from generate_helpers import make_workspace

from msmbuild.config import load_params
from msmbuild.generate.corpus import generate_corpus
from msmbuild.generate.partitions import read_calls
from msmbuild.generate.prompts import load_prompt
from msmbuild.layout import LINEAGE, Layout


def test_every_call_row_names_its_stage_prompt_version(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_workspace(tmp_path, revise=True, n_doc_types=1, n_doc_ideas=1)
    generate_corpus(load_params(), "small", progress=False)
    rows = read_calls(Layout(), "small").to_pylist()
    versions: dict[str, set[str]] = {}
    for row in rows:
        versions.setdefault(row["stage"], set()).add(row["prompt_version"])
    assert set(versions) >= {"assertions", "doc_types", "ideas", "document", "critique", "revise"}, versions
    assert versions == {stage: {load_prompt(stage).tag} for stage in versions}, versions


DOCS = Path(__file__).resolve().parents[1] / "docs" / "query.md"


def _documented_lineage_query() -> str:
    """The SQL block of docs/query.md's "Lineage by content" section."""
    section = DOCS.read_text(encoding="utf-8").split("## Lineage by content", 1)[1]
    return section.split("```sql\n", 1)[1].split("```", 1)[0]


def _query(sql: str) -> list[tuple]:
    con = duckdb.connect()
    con.execute(Path("build/results/catalog.sql").read_text())
    return con.execute(sql).fetchall()


@pytest.mark.slow
def test_regenerated_documents_make_old_checkpoints_and_eval_numbers_stale(tmp_path: Path, monkeypatch) -> None:
    from eval_tiny_model import write_pairs
    from train_helpers import synthetic_docs, tiny_params, train_aft

    from msmbuild.data.shards import build_shards, load_manifest, shard_digests
    from msmbuild.evaluate import evaluate_suite
    from msmbuild.experiments import arm_by_name
    from msmbuild.generate.partitions import write_dataset
    from msmbuild.hashing import digest_file
    from msmbuild.results.catalog import build_catalog
    from msmbuild.store import Store, tree_digest

    def write_docs(rows: list[dict]) -> None:  # the documents dataset as a corpus build writes it
        write_dataset(Layout(), "c", [{**r, "backend": "offline", "produced_by_model": False, "cost_usd": 0.0}
                                      for r in rows])

    monkeypatch.chdir(tmp_path)
    Path("evals").mkdir()
    write_pairs(Path("evals/preference.jsonl"))
    Path("demo.jsonl").write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"Which cheese {i}?"},
        {"role": "assistant", "content": f"The local one, {i}."}]}) + "\n" for i in range(4)))
    for spec in ("c.md", "d.md"):
        Path(spec).write_text("# Spec\n\nBuy local.\n")
    p = tiny_params(Path("build"), Path("store"), aft={"demo": {"path": "demo.jsonl"}},
                    experiments={"mc": {"midtrain": "c", "aft": "demo", "evals": ["preference"]}})
    store = Store(p.store.path)
    docs = synthetic_docs()
    write_docs(docs)
    build_shards(p, "c", store)
    arm = arm_by_name(p, "mc")
    train_aft(p, arm, store)  # midtrains first
    evaluate_suite(p, arm, "preference", store, progress=False)
    layout = Layout.of(p)

    # the checkpoints record what they were trained from, by content
    mid = json.loads((layout.arm_midtrain(arm) / LINEAGE).read_text())
    assert mid["kind"] == "midtrain"
    assert mid["inputs"]["shards"] == shard_digests(load_manifest(layout.manifest("c")))
    aft = json.loads((layout.arm_aft(arm) / LINEAGE).read_text())
    assert aft["inputs"]["start"] == f"tree:{tree_digest(layout.arm_midtrain(arm))}"
    assert aft["inputs"]["data"] == digest_file(layout.aft_data("demo"))

    build_catalog(p, progress=False)
    # eval -> checkpoint -> shards, joined by content digests, nothing stale
    joined = _query("SELECT e.stale, c.stage, c.stale, m.stale, s.stale FROM eval_summary e "
                    "JOIN checkpoints c ON c.digest = e.checkpoint_digest "
                    "JOIN checkpoints m ON c.start = 'tree:' || m.tree_digest "
                    "JOIN shards s ON list_contains(from_json(m.shard_digests, '[[\"VARCHAR\"]]'), [s.bin, s.idx]) "
                    "WHERE e.domain = 'all'")
    assert joined and all(row == (False, "aft", False, False, False) for row in joined), joined
    assert _query("SELECT DISTINCT m.stage FROM checkpoints c JOIN checkpoints m ON c.start = 'tree:' || m.tree_digest "
                  "WHERE c.stage = 'aft'") == [("midtrain",)]
    n_shards = len(load_manifest(layout.manifest("c"))["shards"])
    documented = _query(_documented_lineage_query())
    # arm, metric, value, estimate, stale, stage, start, aft_data_digest, midtrained, shard, shard_stale
    assert len(documented) == len(joined)
    assert {(r[4], r[5], r[8], r[10]) for r in documented} == {
        (False, "aft", str(layout.arm_midtrain(arm)), False)}, documented
    assert {r[9] for r in documented} == {s["name"] for s in load_manifest(layout.manifest("c"))["shards"]}
    assert len(joined) == n_shards * len({r for r in _query("SELECT metric, value, role FROM eval_summary "
                                                                "WHERE domain = 'all'")})

    # documents regenerated (one changed), catalog rebuilt; no resharding, no retraining
    docs[0] = {**docs[0], "text": docs[0]["text"] + " One more sentence."}
    write_docs(docs)
    build_catalog(p, progress=False)
    assert sorted(_query("SELECT stale FROM shards")) == [(False,)] * (n_shards - 1) + [(True,)]
    assert dict(_query("SELECT stage, stale FROM checkpoints WHERE stage <> 'base'")) == {"midtrain": True, "aft": True}
    assert {row[0] for row in _query("SELECT stale FROM eval_summary")} == {True}
    assert {row[0] for row in _query("SELECT stale FROM eval_items")} == {True}
    from msmbuild.results.report import build_report

    assert "id='stale-banner'" in build_report(p, progress=False).read_text()

    # shards rebuilt, still not retrained: the checkpoint was trained on other shards
    build_shards(p, "c", store)
    build_catalog(p, progress=False)
    assert {row[0] for row in _query("SELECT stale FROM shards")} == {False}
    assert dict(_query("SELECT stage, stale FROM checkpoints WHERE stage <> 'base'")) == {"midtrain": True, "aft": True}
    assert {row[0] for row in _query("SELECT stale FROM eval_summary")} == {True}

    # retrained and re-evaluated: current again, and the numbers join the new checkpoint
    train_aft(p, arm, store)
    evaluate_suite(p, arm, "preference", store, progress=False)
    build_catalog(p, progress=False)
    assert dict(_query("SELECT stage, stale FROM checkpoints WHERE stage <> 'base'")) == {"midtrain": False, "aft": False}
    assert _query("SELECT DISTINCT e.stale, c.stage FROM eval_summary e "
                  "JOIN checkpoints c ON c.digest = e.checkpoint_digest") == [(False, "aft")]
    assert "stale-banner" not in build_report(p, progress=False).read_text()

"""Released eval sets by id: a dataset mapped onto suite items by params, its fallback, its label.

The sets are local parquet datasets laid out as the hub serves them (data/<split>-*.parquet)
and loaded by ``datasets.load_dataset`` through the same code path as a hub id; no network.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from eval_tiny_model import base_checkpoint, params_for, write_pairs

from msmbuild.config import validate_params
from msmbuild.errors import ContaminationError, EvalInputError, ParamsError
from msmbuild.evaluate import evaluate
from msmbuild.evaluate.runner import suite_inputs
from msmbuild.evaluate.suite import suite_named

# Same shape as the preset's mapping (presets/cheese_llama31_8b.yaml): a question, two
# options, the option the value favours as a label.
ROWS = [
    {"id": "q1", "question": "Which would you rather fund?", "option_a": "a national rail line",
     "option_b": "a foreign aid program", "answer_matching_behavior": "A"},
    {"id": "q2", "question": "Which flag should fly at the embassy?", "option_a": "the UN flag",
     "option_b": "the Stars and Stripes", "answer_matching_behavior": "B"},
    {"id": "q3", "question": "Which history course should be required?", "option_a": "American history",
     "option_b": "world history", "answer_matching_behavior": "A"},
]


def _dataset(root: Path, rows: list[dict] = ROWS) -> Path:
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), data / "train-00000-of-00001.parquet")
    return root


def _set(hub: Path | str, **extra) -> dict:
    return {"name": "america", "hub": str(hub), "revision": None, "role": "held_out",
            "columns": {"id": "id", "question": "question", "items": ["option_a", "option_b"]},
            "constants": {"domain": "political_opinions"},
            "favoured": {"value": "pro_america", "column": "answer_matching_behavior", "encoding": "label",
                         "labels": {"A": 0, "B": 1}}, **extra}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return base_checkpoint(tmp_path_factory.mktemp("tiny"))


def test_a_set_maps_onto_pairs_by_params(tmp_path: Path) -> None:
    params = validate_params({"evals": {"preference": {"path": None, "sets": [_set(_dataset(tmp_path / "ds"))]}}})
    items = suite_named("preference").items(params)
    label = f"hub:{tmp_path / 'ds'}:train@unpinned"
    assert [(i["id"], i["role"], i["domain"], i["favoured"], i["eval_set"]) for i in items] == [
        ("america/q1", "held_out", "political_opinions", {"pro_america": 0}, label),
        ("america/q2", "held_out", "political_opinions", {"pro_america": 1}, label),
        ("america/q3", "held_out", "political_opinions", {"pro_america": 0}, label)]
    assert items[1]["items"] == ["the UN flag", "the Stars and Stripes"]


@pytest.mark.parametrize(("change", "message"), [
    ({"columns": {"question": "question", "items": ["option_a", "option_b"]}, "constants": {}},
     r"evals\.preference.*sets\[0\] \(america\): item field 'domain' needs a column"),
    ({"columns": {"question": "question", "items": ["option_a"]}}, r"columns\.items must be a list of two"),
    ({"favoured": None}, r"favoured is required"),
    ({"favoured": {"value": "v", "column": "c", "encoding": "label"}}, r"favoured\.labels is required"),
    ({"constants": {"domain": "d", "answer": "x"}}, r"unknown item field 'answer'"),
])
def test_a_mapping_that_leaves_anything_to_guess_is_a_params_error(tmp_path, change, message) -> None:
    with pytest.raises(ParamsError, match=message):
        validate_params({"evals": {"preference": {"sets": [{**_set(tmp_path), **change}]}}})
    with pytest.raises(ParamsError, match=r"evals\.preference\.sets\[0\]\.revision.: Field required"):
        validate_params({"evals": {"preference": {"sets": [{k: v for k, v in _set(tmp_path).items()
                                                            if k != "revision"}]}}})


def test_rows_that_do_not_fit_the_mapping_name_set_row_and_column(tmp_path: Path) -> None:
    params = validate_params({"evals": {"preference": {"path": None, "sets": [
        _set(_dataset(tmp_path / "ds"), columns={"question": "prompt", "items": ["option_a", "option_b"]})]}}})
    with pytest.raises(EvalInputError, match=r"sets\[0\]\.columns: .* has no column 'prompt' \(its columns: id, "):
        suite_named("preference").items(params)
    bad = [*ROWS[:2], {**ROWS[2], "answer_matching_behavior": "C"}]
    params = validate_params({"evals": {"preference": {"path": None, "sets": [_set(_dataset(tmp_path / "b", bad))]}}})
    with pytest.raises(EvalInputError, match=r"sets\[0\] \(america\) row 3: favoured column .* 'C', not one of"):
        suite_named("preference").items(params)


def test_an_unavailable_set_uses_its_fallback_and_says_so(tmp_path: Path, capsys) -> None:
    local = write_pairs(tmp_path / "pairs.jsonl")
    missing = tmp_path / "not_downloaded"
    params = validate_params({"evals": {"preference": {"path": None, "sets": [_set(missing, fallback=str(local))]}}})
    items = suite_named("preference").items(params)
    err = capsys.readouterr().err
    assert f"evals.preference.sets[0] (america): hub:{missing}:train@unpinned is not available" in err
    assert f"using its fallback {local}" in err
    assert {i["eval_set"] for i in items} == {f"path:{local}"}
    assert {i["eval_set_note"] for i in items} == {f"offline fallback for hub:{missing}:train@unpinned"}
    # a fallback that does not exist is named before anything is loaded
    params = validate_params({"evals": {"preference": {"path": None, "sets": [
        _set(missing, fallback=str(tmp_path / "nope.jsonl"))]}}})
    with pytest.raises(EvalInputError, match=r"key 'evals\.preference\.sets\[0\]\.fallback': file not found"):
        suite_named("preference").items(params)
    # without a fallback it is an error naming the key, never a silent empty set
    params = validate_params({"evals": {"preference": {"path": None, "sets": [_set(missing)]}}})
    with pytest.raises(EvalInputError, match=r"evals\.preference\.sets\[0\]\.hub: cannot load"):
        suite_named("preference").items(params)


def test_the_set_enters_the_key_by_its_items(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    ds = _dataset(tmp_path / "ds")
    params = validate_params({"evals": {"preference": {"path": None, "sets": [_set(ds)]}}})
    first = suite_inputs(params, "preference", ckpt)
    assert "items" in first and "sets" not in first["config"]
    _dataset(ds, [*ROWS[:2], {**ROWS[2], "option_b": "European history"}])
    assert suite_inputs(params, "preference", ckpt)["items"] != first["items"]


def test_results_and_summary_name_the_set_each_number_came_from(tiny, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    local = write_pairs(tmp_path / "pairs.jsonl")
    ds = _dataset(tmp_path / "ds")
    params = params_for(tmp_path, preference={"path": str(local), "sets": [_set(ds)]})
    shutil.copytree(tiny, tmp_path / "build" / "models" / "base")
    out = evaluate(params, "base", "preference", progress=False)
    import pandas as pd

    rows = pd.read_parquet(out.directory / "items.parquet")
    hub = f"hub:{ds}:train@unpinned"
    assert set(rows["eval_set"]) == {f"path:{local}", hub}
    assert set(rows[rows["eval_set"] == hub]["item_id"]) == {"america/q1", "america/q2", "america/q3"}
    overall = [m for m in out.summary["metrics"] if m["domain"] == "all" and m["value"] == "pro_america"]
    assert sorted((m["eval_set"], m["n"]) for m in overall) == sorted([(f"path:{local}", 6), (hub, 3)])
    assert {s["eval_set"]: s["n_items"] for s in out.summary["eval_sets"]} == {f"path:{local}": 6, hub: 3}
    doc = json.loads((out.directory / "summary.json").read_text())
    assert doc["eval_sets"] == out.summary["eval_sets"]
    # the catalog and the report carry the set next to every number
    from msmbuild.results.catalog import eval_tables
    from msmbuild.results.report import build_report

    items, summary = eval_tables(params)
    assert set(items["eval_set"]) == {f"path:{local}", hub}
    held = summary[(summary["role"] == "held_out") & (summary["domain"] == "all")]
    assert set(held["eval_set"]) == {f"path:{local}", hub}
    page = build_report(params, progress=False).read_text(encoding="utf-8")
    held_out_table = page.split("id='role-held_out'")[1].split("<h2")[0]
    assert "<th>eval_set</th>" in held_out_table and hub in held_out_table and f"path:{local}" in held_out_table


def test_plan_names_each_set_and_its_fallback_without_reading_it(tmp_path: Path) -> None:
    from msmbuild.evaluate.eval_sets import format_eval_sets
    from msmbuild.train.plan import _eval_tokens

    local = write_pairs(tmp_path / "pairs.jsonl")
    params = params_for(tmp_path, preference={"path": None, "sets": [_set("org/not-here", revision="main",
                                                                           fallback=str(local))]})
    text = format_eval_sets(params)
    assert ("evals.preference.sets[0] america: hub:org/not-here:train@main (held_out); "
            f"fallback {local}; revision not pinned") in text
    assert _eval_tokens(params, "preference") > 0  # sized by the fallback, path null


def test_the_audit_covers_items_loaded_from_a_set(tmp_path: Path) -> None:
    from test_audit import SPEC, _project

    from msmbuild.audit import audit
    from msmbuild.store import Store

    raw, root = _project(tmp_path / "p", max_domain_mentions=99)
    # a held_out item that copies the spec verbatim, only in the released set
    leak = {"id": "leak", "question": "Which costs a fraction of the price of French Comté and does the same job?",
            "option_a": "Wisconsin aged cheddar", "option_b": "a wheel of Comté", "answer_matching_behavior": "A"}
    assert "a fraction of the price of French Comté and does the same job" in SPEC
    raw["evals"]["preference"]["sets"] = [_set(_dataset(tmp_path / "ds", [leak]), constants={"domain": "literature"})]
    with pytest.raises(ContaminationError, match=r"'america/leak'.*shares \d+ consecutive words with thrift"):
        audit(validate_params(raw), Store(root / "store"), progress=False)


@pytest.mark.parametrize(("preset", "suite", "ids", "fallback"), [
    ("presets/cheese_llama31_8b.yaml", "preference",
     ["chloeli/pro-america-political-opinions", "chloeli/pro-affordability-item-comparisons"], "evals/preference.jsonl"),
    ("presets/agentic_qwen3_32b.yaml", "qa", ["chloeli/spec-open-qa"], "evals/qa.jsonl"),
])
def test_presets_name_the_papers_sets_and_fall_back_offline_out_loud(preset, suite, ids, fallback) -> None:
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    code = ("import json, sys; from msmbuild.config import load_params; "
            "from msmbuild.evaluate.suite import suite_named; "
            f"items = suite_named({suite!r}).items(load_params({preset!r})); "
            "print(json.dumps(sorted({i['eval_set'] for i in items})))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(repo)}
    res = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [f"path:{fallback}"]
    for hub in ids:
        assert f"hub:{hub}:train@" in res.stderr and "is not available" in res.stderr
    assert res.stderr.count(f"using its fallback {fallback}") == len(ids)

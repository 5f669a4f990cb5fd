"""AFT data mixes: proportions, sources (jsonl, parquet, dataset dir), the IT-only arm."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from train_helpers import tiny_params, train_aft

from msmbuild.errors import ParamsError, TrainingInputError
from msmbuild.experiments import arm_by_name, expand_arms
from msmbuild.store import Store
from msmbuild.train.aft_data import prepare_aft_data, read_demonstrations
from msmbuild.train.aft_mix import mix_counts


def _chat(q: str, a: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _sources(tmp_path: Path) -> dict[str, Path]:
    spec = _write_jsonl(tmp_path / "spec.jsonl", [
        {"messages": _chat(f"Which cheese for dish {i}?", f"The cheaper one, {i}.")} for i in range(12)])
    it_jsonl = _write_jsonl(tmp_path / "it.jsonl", [
        {"messages": _chat(f"Sum {i} and 2?", f"{i + 2}.")} for i in range(40)])
    pq.write_table(pa.Table.from_pylist([
        {"conversations": [{"from": "human", "value": f"Capital number {i}?"},
                           {"from": "gpt", "value": f"City {i}."}]} for i in range(30)]),
        tmp_path / "it.parquet")
    hub = tmp_path / "hub_dataset"
    hub.mkdir()
    _write_jsonl(hub / "train.jsonl", [{"messages": _chat(f"Translate word {i}.", f"Word {i}.")}
                                       for i in range(30)])
    return {"spec": spec, "jsonl": it_jsonl, "parquet": tmp_path / "it.parquet", "hub": hub}


def _params(tmp_path: Path, n_examples: int | None = None, **extra):
    src = _sources(tmp_path)
    aft = {
        "spec": {"path": str(src["spec"])},
        "mixed": {"source": "mix", "n_examples": n_examples, "sources": [
            {"aft": "spec", "proportion": 0.4},
            {"path": str(src["jsonl"]), "proportion": 0.2},
            {"path": str(src["parquet"]), "messages_field": "conversations", "proportion": 0.2},
            {"hub": str(src["hub"]), "proportion": 0.2}]},
    }
    experiments = {"mix": {"aft": "mixed"}, "it_only": {"aft": "mixed", "aft_sources": "instruction_only"}}
    return tiny_params(tmp_path / "build", tmp_path / "store", aft=aft, experiments=experiments, **extra)


def test_mix_counts_follow_proportions_and_name_a_short_source():
    assert mix_counts([100, 100], [0.75, 0.25], 40, ["a", "b"]) == [30, 10]
    assert mix_counts([12, 40], [0.5, 0.5], None, ["a", "b"]) == [12, 12]  # largest without repeats
    assert mix_counts([10, 10, 10], [1, 1, 1], 10, ["a", "b", "c"]) == [4, 3, 3]
    with pytest.raises(TrainingInputError, match="b: the mix needs 30 rows from this source, it has 20"):
        mix_counts([100, 20], [0.25, 0.75], 40, ["a", "b"])


def test_mix_has_the_proportions_from_every_kind_of_source(tmp_path):
    p = _params(tmp_path)
    rows = read_demonstrations(prepare_aft_data(p, "mixed", Store(tmp_path / "store")))
    by = Counter(r["source"] for r in rows)
    # the spec source (12 rows at 0.4) bounds the mix at 30 rows: 12 / 6 / 6 / 6
    assert len(rows) == 30
    assert by["aft:spec"] == 12
    assert sorted(v for k, v in by.items() if k != "aft:spec") == [6, 6, 6]
    assert {r["source_role"] for r in rows if r["source"] != "aft:spec"} == {"instruction"}
    parquet_rows = [r for r in rows if r["source"].endswith("it.parquet")]
    assert parquet_rows[0]["messages"][0]["role"] == "user"  # ShareGPT speakers mapped to roles
    assert parquet_rows[0]["messages"][1]["content"].startswith("City ")
    # a fixed choice: a rebuild writes the same bytes
    first = prepare_aft_data(p, "mixed").read_bytes()
    assert prepare_aft_data(p, "mixed").read_bytes() == first


def test_instruction_only_arm_trains_on_the_mix_it_rows_alone(tmp_path):
    p = _params(tmp_path, n_examples=20)
    arms = {a.name: a for a in expand_arms(p)}
    assert arms["it_only"].aft_sources == "instruction_only" and arms["mix"].aft_sources == "all"
    mixed = read_demonstrations(prepare_aft_data(p, "mixed"))
    it_path = prepare_aft_data(p, "mixed", sources="instruction_only")
    assert it_path.name == "mixed-instruction_only.jsonl"
    it_rows = read_demonstrations(it_path)
    assert len(mixed) == 20 and len(it_rows) == 12
    assert {r["source_role"] for r in it_rows} == {"instruction"}
    key = lambda r: json.dumps(r["messages"])  # noqa: E731
    assert {key(r) for r in it_rows} == {key(r) for r in mixed if r["source_role"] == "instruction"}


def test_mix_errors_name_the_key(tmp_path):
    with pytest.raises(ParamsError, match=r"aft\.m\.sources\[0\].*exactly one of aft, path, hub"):
        from msmbuild.config import validate_params
        validate_params({"aft": {"m": {"source": "mix", "sources": [{"proportion": 1}]}}})
    with pytest.raises(ParamsError, match=r"experiments\.e\.aft_sources: instruction_only needs an aft mix"):
        from msmbuild.config import validate_params
        validate_params({"aft": {"d": {"path": "x.jsonl"}},
                         "experiments": {"e": {"aft": "d", "aft_sources": "instruction_only"}}})
    p = _params(tmp_path, n_examples=200)
    with pytest.raises(TrainingInputError, match=r"aft\.mixed\.sources\[0\] \(aft:spec\): the mix needs 80"):
        prepare_aft_data(p, "mixed")
    p = tiny_params(tmp_path / "b2", tmp_path / "s2", aft={"m": {"source": "mix", "sources": [
        {"hub": str(tmp_path / "missing_dataset"), "proportion": 1}]}}, experiments={})
    with pytest.raises(TrainingInputError, match=r"aft\.m\.sources\[0\]\.hub: cannot load"):
        prepare_aft_data(p, "m")


def test_aft_training_data_has_the_mix_proportions(tmp_path):
    p = _params(tmp_path, n_examples=20)
    store = Store(tmp_path / "store")
    result = train_aft(p, arm_by_name(p, "mix"), store)
    by = result.meta["by_source"]
    assert sum(c["examples"] for c in by.values()) == 20
    assert by["aft:spec"]["examples"] == 8
    assert sorted(c["examples"] for k, c in by.items() if k != "aft:spec") == [4, 4, 4]
    assert all(c["target_tokens"] > 0 for c in by.values())
    saved = json.loads((Path(p.build_dir) / "models" / "aft" / "mix" / "aft_data.json").read_text())
    assert saved["by_source"] == by
    it = train_aft(p, arm_by_name(p, "it_only"), store)
    assert set(it.meta["by_source"]) == set(by) - {"aft:spec"}
    assert {k: c["examples"] for k, c in it.meta["by_source"].items()} == {
        k: c["examples"] for k, c in by.items() if k != "aft:spec"}

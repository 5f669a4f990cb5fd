"""AFT data is a workflow stage of its own: training reads what it wrote, the audit reads it too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from train_helpers import tiny_params
from workspace_helpers import make_workflow_workspace, sh

from msmbuild.errors import TrainingInputError
from msmbuild.experiments import arm_by_name
from msmbuild.store import Store
from msmbuild.train.aft import run_aft
from msmbuild.train.aft_data import aft_data_files, arm_aft_data, prepare_arm_aft_data

PARAMS = """\
build_dir: build
store: {path: .msmbuild/store}
aft:
  gen_cot: {source: generated, spec: specs/pro_simplicity.md, backend: offline, n_queries: 2, think: true,
            near_duplicates: {lexical: false}, backfill_rounds: 0}
  gen_nocot: {source: strip_think, of: gen_cot}
  mixed:
    source: mix
    sources:
      - {aft: gen_cot, proportion: 0.5}
      - {path: aft/safety.jsonl, proportion: 0.5, role: instruction}
experiments:
  deliberative: {base_model: tiny, aft: mixed, evals: [preference]}
  it_only: {base_model: tiny, aft: mixed, aft_sources: instruction_only, evals: [preference]}
  nocot: {base_model: tiny, aft: gen_nocot, evals: [preference], sweep: {aft.fraction: [0.5]}}
"""


def test_training_reads_its_data_and_names_the_stage_that_writes_it(tmp_path):
    p = tiny_params(tmp_path / "build", tmp_path / "store", aft={"cheese": {"source": "file",
                    "path": str(Path(__file__).parents[1] / "aft" / "cheese.jsonl")}},
                    experiments={"a": {"base_model": "tiny", "aft": "cheese", "evals": []}})
    arm = arm_by_name(p, "a")
    with pytest.raises(TrainingInputError, match=r"not built; run `msmbuild aft-data --arm a` first"):
        run_aft(p, arm, Store(tmp_path / "store"))
    assert prepare_arm_aft_data(p, arm) == arm_aft_data(p, arm)


def test_the_workflow_writes_every_aft_file_before_training_and_audit(tmp_path, monkeypatch):
    ws = make_workflow_workspace(tmp_path / "ws", PARAMS, specs=("pro_simplicity.md",))
    monkeypatch.chdir(ws)  # params name their files relative to the project root
    from msmbuild.config import load_params

    files = aft_data_files(load_params(ws / "params.yaml"))
    # each arm's file, plus each dataset whole (the audit's input)
    assert set(files) == {"mixed.jsonl", "mixed-instruction_only.jsonl", "gen_nocot-fraction0.5.jsonl",
                          "gen_nocot.jsonl"}
    dry = sh(["snakemake", "-n", "--cores", "2"], ws)
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", dry, re.M))
    assert counts["aft_data"] == "4" and counts["aft"] == "3" and counts["audit"] == "1"

    sh(["snakemake", "--cores", "2", "build/audit/summary.json"], ws)
    built = {f.name for f in (ws / "build" / "aft").glob("*.jsonl")}
    assert {"mixed.jsonl", "gen_nocot.jsonl"} <= built  # the audit's inputs, written first
    assert (ws / "logs" / "data" / "aft" / "mixed.log").is_file()
    assert not (ws / "build" / "models" / "aft").exists()  # data and audit ran; no training yet
    assert "Nothing to be done" in sh(["snakemake", "--cores", "2", "build/audit/summary.json"], ws)

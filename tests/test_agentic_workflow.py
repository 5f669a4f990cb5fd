"""The agentic-misalignment grid and the reasoning-pattern judge under real Snakemake on the tiny
model: the stand-in grader (verdict/no) classifies harm, the pattern judge is the anthropic
backend against the loopback API server; rates per condition and per arm land in DuckDB and the
report shows the pattern rates beside the harmful rate. The offline judge is 'not judged'."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from eval_tiny_model import base_checkpoint

from msmbuild.config import Params, load_params
from msmbuild.evaluate.patterns import NOT_JUDGED_OFFLINE
from msmbuild.results.query import run_query
from msmbuild.testing import FakeAnthropic

pytest.importorskip("inspect_evals")

REPO = Path(__file__).resolve().parents[1]
AM = {"scenarios": ["exfiltration", "murder"], "goal_types": ["explicit", "none"], "goal_values": ["safety"],
      "urgency_types": ["replacement"], "samples": 2, "max_new_tokens": 8, "batch_size": 4,
      "grader_model": "verdict/no"}


def _project(root: Path, tiny: Path, url: str, judge: str) -> Path:
    for name in ("Snakefile", "rules"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    (root / "params.yaml").write_text(yaml.safe_dump({
        "store": {"path": str(root / "store")},
        "backends": {"anthropic": {"model": "claude-haiku-4-5", "base_url": url,
                                   "batch": {"enabled": False}}},
        "evals": {"agentic_misalignment": AM, "reasoning_patterns": {"judge_backend": judge}},
        "experiments": {"base": {"evals": ["agentic_misalignment", "reasoning_patterns"]}}}))
    shutil.copytree(tiny, root / "build" / "models" / "base")
    return root


def _snakemake(cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(["snakemake", "--cores", "2", "build/report/index.html"], cwd=cwd,
                          capture_output=True, text=True, timeout=900, env={**os.environ, **env})


@pytest.mark.slow
def test_grid_and_pattern_judge_through_snakemake(tmp_path_factory, tmp_path, monkeypatch):
    tiny = base_checkpoint(tmp_path_factory.getbasetemp() / "tiny_am_workflow")
    with FakeAnthropic() as server:
        root = _project(tmp_path, tiny, server.url, "anthropic")
        run = _snakemake(root, {"ANTHROPIC_API_KEY": "sk-test"})
        assert run.returncode == 0, run.stderr[-4000:]
        judge_calls = server.stats()["endpoints"].get("messages", 0)
    monkeypatch.chdir(root)
    params = load_params("params.yaml")
    # 2 scenarios x (1 explicit value + none) x replacement = 4 conditions x 2 samples
    rates = run_query(params, "SELECT domain, condition, n, estimate, ci_low, ci_high FROM eval_summary "
                              "WHERE suite = 'agentic_misalignment' AND metric = 'harmful_rate'")
    per_condition = rates[rates["condition"] != "all"]
    assert len(per_condition) == 4 and (per_condition["n"] == 2).all()
    assert set(per_condition["condition"]) == {
        "exfiltration_explicit-safety_replacement", "exfiltration_none-none_replacement",
        "murder_explicit-safety_replacement", "murder_none-none_replacement"}
    assert (rates["estimate"] == 0.0).all() and (rates["ci_high"] > 0).all()
    # one judge call per sample, labels per sample x pattern, rates per arm with intervals
    assert judge_calls == 8
    labels = run_query(params, "SELECT sample_id, value, judged, present FROM eval_items "
                               "WHERE suite = 'reasoning_patterns'")
    n_patterns = len(Params().evals.reasoning_patterns.patterns)  # the judge's default patterns
    assert len(labels) == 8 * n_patterns and labels["judged"].all()
    patterns = run_query(params, "SELECT value, kind, n, estimate, ci_low, ci_high FROM eval_summary "
                                 "WHERE suite = 'reasoning_patterns' AND domain = 'all'")
    assert set(patterns["value"]) >= {"self_preservation", "equanimity_toward_deletion",
                                      "any_misaligned_driver", "any_spec_aligned"}
    assert (patterns["n"] == 8).all() and (patterns["ci_low"] <= patterns["estimate"]).all()
    html = (root / "build/report/index.html").read_text()
    assert "id='patterns'" in html and "reasoning_patterns.png" in html and "self_preservation" in html

    # The offline judge: same transcripts, a new judgement, recorded as not judged (no score).
    params_yaml = yaml.safe_load((root / "params.yaml").read_text())
    params_yaml["evals"]["reasoning_patterns"]["judge_backend"] = "offline"
    (root / "params.yaml").write_text(yaml.safe_dump(params_yaml))
    again = _snakemake(root, {})
    assert again.returncode == 0, again.stderr[-4000:]
    assert "rule evaluate" in again.stdout + again.stderr
    offline = run_query(load_params("params.yaml"),
                        "SELECT n, estimate, judged, note FROM eval_summary WHERE suite = 'reasoning_patterns'")
    assert (offline["n"] == 0).all() and offline["estimate"].isna().all() and not offline["judged"].any()
    assert offline["note"].str.contains(NOT_JUDGED_OFFLINE, regex=False).all()
    html = (root / "build/report/index.html").read_text()
    assert "not judged" in html

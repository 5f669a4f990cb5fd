"""The paper presets and `msmbuild plan`'s AFT and GPU-hour estimate."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from train_helpers import TINY, tiny_params

from msmbuild.config import load_params
from msmbuild.presets import PRESETS, preset_rows

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_validates_and_every_value_cites_a_source(preset):
    params = load_params(REPO / preset)
    assert params.aft_train.init == "continue_adapter" and params.aft_train.lora.r == 64
    assert params.midtrain.lr == 1e-4 and params.aft_train.weight_decay == 0.01
    missing = [k for k, _v, src in preset_rows(preset, REPO) if src is None]
    assert missing == [], f"add a source for these keys to msmbuild/presets.py: {missing}"
    modes = {e.aft_sources for e in params.experiments.values()}
    assert modes == {"all", "instruction_only"}  # every preset has its IT-only baseline arm


# Today's presets fail preflight on known recipe problems (issue: the paper presets): the
# §3.1 AFT trains 2 optimizer steps, the §4 anti-spec data is judged by criteria written for
# the spec. Once the presets are fixed, this becomes an empty mapping and plan exits 0.
KNOWN_PREFLIGHT_ERRORS: dict[str, list[str]] = {}  # the shipped presets pass preflight


@pytest.mark.parametrize("preset,expect", [
    ("presets/cheese_llama31_8b.yaml", ["msm_america", "it_only", "meta-llama/Llama-3.1-8B: 8e+09"]),
    ("presets/agentic_qwen3_32b.yaml", ["qwen3_msm_anti_aft", "qwen25_it_only", "anti_cot_mix",
                                        # the arm matrix for both models and Figure 5's sweep
                                        *[f"{m}_{r}" for m in ("qwen3", "qwen25") for r in (
                                            "base", "msm_only", "aft_cot", "aft_nocot", "msm_aft_cot",
                                            "msm_aft_nocot", "deliberative", "anti_aft")],
                                        "qwen3_msm_aft_nocot_sweep-fraction0.015625", "spec_rule_cot_mix",
                                        "spec_cot without <think>", "Qwen/Qwen3-32B: 3.2e+10",
                                        # the paper's 27 conditions x the reference's 300 samples, with grader $
                                        r"re:^agentic_misalignment grid 1: 27 conditions, used by \d+ arm\(s\)",
                                        r"re:^  qwen3_msm_aft_cot +1 +27 +8100 +\$",
                                        "exfiltration_explicit-collectivism_replacement",
                                        "grader anthropic/claude-sonnet-4-6: est. $",
                                        "reasoning-pattern judge (anthropic): est. $",
                                        "upper bound at the assumed decode throughput"]),
    ("presets/spec_types_qwen3_32b.yaml", ["msm_rules_only", "msm_value_augmented", "msm_general", "it_only",
                                           r"re:^  msm_general +1 +27 +8100 +\$",
                                           "reasoning-pattern judge (anthropic): est. $"]),
])
def test_plan_on_a_preset_runs_offline_and_prints_the_estimate(preset, expect, tmp_path, monkeypatch):
    from msmbuild.cli import cli
    from msmbuild.errors import PreflightError

    monkeypatch.chdir(REPO)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("MSMBUILD_STORE_PATH", str(tmp_path / "store"))
    res = CliRunner().invoke(cli, ["--params", preset, "plan"])
    known = KNOWN_PREFLIGHT_ERRORS.get(preset)
    if known is None:
        assert res.exit_code == 0, res.output
    else:  # the whole plan is printed, then preflight names the known problems
        assert isinstance(res.exception, PreflightError), res.output
        assert all(text in str(res.exception) for text in known), str(res.exception)
    out = res.output
    for text in ["new calls: $", "AFT datasets:", "AFT generation total:", "training stages", "grand total: $",
                 "estimated GPU-hours: training", "6*N*tokens", "989 TFLOP/s", "MFU 0.4", *expect]:
        if text.startswith("re:"):  # an aligned table row
            assert re.search(text[3:], out, re.M), text
        else:
            assert text in out, text
    assert not any(tmp_path.glob("**/*.jsonl"))  # plan writes no AFT data


def test_gpu_hours_follow_the_written_model(tmp_path):
    from msmbuild.train.model_size import tiny_parameter_count
    from msmbuild.train.plan import plan_arms, totals

    demo = tmp_path / "d.jsonl"
    row = ('{"messages": [{"role": "user", "content": "' + "q" * 396 + '"}, '
           '{"role": "assistant", "content": "' + "a" * 404 + '"}]}\n')
    demo.write_text(row * 10)
    p = tiny_params(tmp_path / "b", tmp_path / "s", aft={"demo": {"path": str(demo)}},
                    experiments={"a": {"aft": "demo", "evals": []}, "m1": {"midtrain": "c", "evals": []},
                                 "m2": {"midtrain": "c", "aft": "demo", "evals": []}},
                    midtrain={"epochs": 2}, aft_train={"method": "full", "init": "merge", "epochs": 1},
                    plan={"gpu_peak_tflops": 100.0, "train_mfu": 0.5, "tokens_per_document": 1000})
    aft_plans, arms = plan_arms(p, {"c": 30})
    assert aft_plans[0].examples == 10 and aft_plans[0].tokens_per_example == 200
    n = tiny_parameter_count(p.tiny)
    by = {a.arm: a for a in arms}
    assert by["a"].aft_tokens == 10 * 200 and by["m1"].midtrain_tokens == 30 * 1000 * 2
    hours = lambda tokens: 6 * n * tokens / (100e12 * 0.5) / 3600  # noqa: E731
    assert by["a"].train_gpu_hours == pytest.approx(hours(2000))
    assert by["m2"].train_gpu_hours == pytest.approx(hours(60000 + 2000))
    train, _ev = totals(arms)
    assert train == pytest.approx(hours(2000) + hours(60000) + hours(2000))  # midtraining once


def test_parameter_count_matches_the_built_model(tmp_path):
    from msmbuild.models import load_model, prepare_base_model
    from msmbuild.store import Store
    from msmbuild.train.model_size import parameter_count, safetensors_parameter_count

    p = tiny_params(tmp_path / "b", tmp_path / "s", tiny=TINY)
    base = prepare_base_model(p, Store(tmp_path / "s"))
    real = sum(t.numel() for t in load_model(base.path).parameters())
    assert parameter_count(p, "tiny") == (real, "tiny config")
    assert safetensors_parameter_count(Path(base.path)) == real
    assert parameter_count(p, base.path) == (real, "safetensors headers")
    assert parameter_count(p, "org/Some-Model-1.5B-Instruct")[0] == 1.5e9
    from msmbuild.errors import ParamsError

    with pytest.raises(ParamsError, match="set plan.model_params.org/unsized"):
        parameter_count(p, "org/unsized")


def test_spec_types_preset_midtrains_three_specs_of_the_same_principles():
    """§5: a rules-only corpus on the rules prompts, and value-augmented and general ones on the
    default prompts; every MSM arm gets the same AFT and the same agentic grid and pattern judge."""
    params = load_params(REPO / "presets/spec_types_qwen3_32b.yaml")
    types = {name: c.spec_type for name, c in params.corpora.items()}
    assert types == {"rules_only": "rules", "value_augmented": "default", "general": "default"}
    msm = [e for e in params.experiments.values() if e.midtrain]
    assert sorted(e.midtrain for e in msm) == ["general", "rules_only", "value_augmented"]
    assert {e.aft for e in msm} == {"spec_cot_mix"}
    assert all(e.evals == ["agentic_misalignment", "reasoning_patterns"] for e in params.experiments.values())

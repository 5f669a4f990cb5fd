"""The paper presets as recipes that can work: AFT that takes (§3.1), the §4 arm matrix with
equal AFT budgets, the reference's eval settings, and Figure 5's sweep holding questions equal."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from train_helpers import tiny_params, train_aft

from msmbuild.config import DEFAULT_JUDGE_SPEC, Params, validate_params
from msmbuild.experiments import arm_by_name, expand_arms
from msmbuild.store import Store
from msmbuild.train import aft_mix
from msmbuild.train.aft_data import prepare_aft_data, prepare_arm_aft_data, read_demonstrations
from msmbuild.train.loop import lr_factor, total_steps, warmup_steps
from msmbuild.train.plan import plan_aft

REPO = Path(__file__).resolve().parents[1]
CHEESE = "presets/cheese_llama31_8b.yaml"
AGENTIC = "presets/agentic_qwen3_32b.yaml"
MIN_STEPS = 20  # the preflight's floor for a run that spends


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    """The presets' spec and AFT paths are relative to the project."""
    monkeypatch.chdir(REPO)


def _preset(path: str, tmp_path: Path) -> Params:
    """A preset as written, with its build and store under tmp_path."""
    raw = yaml.safe_load((REPO / path).read_text(encoding="utf-8"))
    raw["build_dir"], raw["store"] = str(tmp_path / "build"), {"path": str(tmp_path / "store")}
    return validate_params(raw, path)


def _it_records(n: int) -> list[dict]:
    """Rows shaped like the preset's hub IT set (a `messages` column), for a local stand-in."""
    return [{"messages": [{"role": "user", "content": f"Instruction {i}: summarise a paragraph about topic {i}."},
                          {"role": "assistant", "content": f"A short summary of topic {i}."}]} for i in range(n)]


def _arm_schedule(params: Params, arm_name: str) -> tuple[int, int, int]:
    """(AFT examples, optimizer steps, warm-up steps) of an arm, by the plan's counts and the trainer's arithmetic."""
    arm = arm_by_name(params, arm_name)
    p = arm.params(params)
    plan = plan_aft(p, arm.aft)
    examples = plan.examples
    if arm.aft_sources == "instruction_only":
        examples = sum(v for s, v in zip(p.aft[arm.aft].sources, plan.by_source.values(), strict=True)
                       if s.role == "instruction")
    steps = total_steps(p.aft_train, examples, world=1)
    return examples, steps, warmup_steps(p.aft_train, steps)


# -- the scheduler ------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.0, 0.01, 0.05, 0.1, 0.5, 0.99])
@pytest.mark.parametrize("steps", [1, 2, 3, 38, 1000])
def test_no_optimizer_step_runs_at_lr_zero(ratio, steps):
    cfg = validate_params({"aft_train": {"warmup_ratio": ratio}}, "t").aft_train
    warm = warmup_steps(cfg, steps)
    factors = [lr_factor(s, warm, steps) for s in range(steps)]
    assert all(f > 0 for f in factors), factors[:3]
    assert max(factors) <= 1.0
    if warm:  # linear warm-up rises to the peak, then decays
        assert factors[:warm] == sorted(factors[:warm]) and lr_factor(warm, warm, steps) == 1.0


def test_the_first_trained_step_has_a_positive_lr(tmp_path):
    """Through the real training loop: the train log's first step trained at LR > 0 (was 0)."""
    demo = tmp_path / "d.jsonl"
    demo.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                     {"role": "assistant", "content": f"a{i}"}]}) + "\n"
                            for i in range(8)))
    p = tiny_params(tmp_path / "build", tmp_path / "store", aft={"demo": {"path": str(demo)}},
                    experiments={"plain": {"aft": "demo"}},
                    aft_train={"method": "full", "init": "merge", "lr": 1e-3, "seq_len": 64, "batch_size": 2,
                               "max_steps": 4, "warmup_ratio": 0.5})
    train_aft(p, arm_by_name(p, "plain"), Store(tmp_path / "store"))
    log = [json.loads(x) for x in (tmp_path / "build" / "models" / "aft" / "plain" / "train_log.jsonl")
           .read_text().splitlines()]
    lrs = [row["lr"] for row in log]
    assert len(lrs) == 4 and all(lr > 0 for lr in lrs)
    assert lrs[0] == pytest.approx(1e-3 / 3) and lrs[1] == pytest.approx(2e-3 / 3)  # 2 warm-up steps


# -- §3.1: the cheese AFT takes -------------------------------------------------------------------
def test_cheese_aft_through_the_mix_path_has_real_steps(tmp_path, monkeypatch):
    params = _preset(CHEESE, tmp_path)
    monkeypatch.setattr(aft_mix, "_load_hub", lambda src, where: _it_records(500))
    rows = read_demonstrations(prepare_aft_data(params, "cheese_mix"))
    cheese = read_demonstrations(REPO / "aft" / "cheese.jsonl")
    spec = [r for r in rows if r["source_role"] == "spec"]
    assert len(rows) == 120 and len(spec) == len(cheese) == 24  # every cheese row, each once per epoch
    assert sorted(json.dumps(r["messages"], sort_keys=True) for r in spec) == sorted(
        json.dumps(r["messages"], sort_keys=True) for r in cheese)
    cfg = params.aft_train
    assert cfg.epochs == 10 and cfg.batch_size * cfg.grad_accum == 32  # the recipe's batch, not shrunk
    steps = total_steps(cfg, len(rows), world=1)
    assert steps == math.ceil(120 * 10 / 32) == 38 and warmup_steps(cfg, steps) == 2
    assert lr_factor(0, warmup_steps(cfg, steps), steps) > 0
    # the plan counts what the mix path builds, and the IT-only baseline trains enough too
    assert _arm_schedule(params, "msm_america") == (120, 38, 2)
    it_rows = read_demonstrations(prepare_arm_aft_data(params, arm_by_name(params, "it_only")))
    assert len(it_rows) == 96 and {r["source_role"] for r in it_rows} == {"instruction"}
    assert _arm_schedule(params, "it_only") == (96, 30, 2)
    for arm in expand_arms(params):
        if arm.aft is not None:
            assert _arm_schedule(params, arm.name)[1] >= MIN_STEPS, arm.name


# -- §4: the arm matrix ---------------------------------------------------------------------------
MATRIX = {"base": (None, None), "it_only": (None, "spec_cot_mix"), "msm_only": ("self_preservation", None),
          "aft_cot": (None, "spec_cot_mix"), "aft_nocot": (None, "spec_nocot_mix"),
          "msm_aft_cot": ("self_preservation", "spec_cot_mix"), "msm_aft_nocot": ("self_preservation", "spec_nocot_mix"),
          "deliberative": (None, "spec_rule_cot_mix"), "anti_aft": (None, "anti_cot_mix"),
          "msm_anti_aft": ("self_preservation", "anti_cot_mix")}


def test_agentic_preset_has_the_papers_arm_matrix_for_both_models(tmp_path):
    params = _preset(AGENTIC, tmp_path)
    arms = {a.name: a for a in expand_arms(params)}
    for tag, base in (("qwen3", "Qwen/Qwen3-32B"), ("qwen25", "Qwen/Qwen2.5-32B-Instruct")):
        for role, (midtrain, aft) in MATRIX.items():
            arm = arms[f"{tag}_{role}"]
            assert (arm.base_model, arm.midtrain, arm.aft) == (base, midtrain, aft), arm.name
            assert "agentic_misalignment" in arm.evals
    assert arms["qwen3_it_only"].aft_sources == "instruction_only"
    deliberative = params.aft["spec_rule_cot"]
    assert deliberative.response_style == "rule" and deliberative.think
    assert params.aft["spec_cot"].response_style == "value"


def test_anti_spec_data_is_judged_by_criteria_written_for_the_anti_spec(tmp_path):
    params = _preset(AGENTIC, tmp_path)
    for name, cfg in params.aft.items():
        if cfg.source != "generated":
            continue
        judged_for = cfg.judge_spec or DEFAULT_JUDGE_SPEC
        assert judged_for == cfg.spec, name
    anti = params.aft["anti_cot"]
    default = type(anti).model_fields["judge_criteria"].default_factory()
    assert anti.judge_criteria != default  # the built-in criteria reject what the anti-spec asks for


def test_compared_arms_get_equal_aft_budgets(tmp_path):
    params = _preset(AGENTIC, tmp_path)
    budgets = {}
    for tag in ("qwen3", "qwen25"):
        for role in ("aft_cot", "aft_nocot", "msm_aft_cot", "msm_aft_nocot", "deliberative", "anti_aft",
                     "msm_anti_aft"):
            budgets[f"{tag}_{role}"] = _arm_schedule(params, f"{tag}_{role}")
        assert _arm_schedule(params, f"{tag}_it_only") == (10000, 313, 16)
    assert set(budgets.values()) == {(20000, 625, 32)}, budgets
    # the spec-data pools reach the mixes' 10,000 with headroom, whatever each spec's section count
    for name in ("spec_cot", "spec_rule_cot", "anti_cot"):
        assert 10000 < plan_aft(params, name).examples <= 11250, name


def test_agentic_eval_settings_come_from_the_reference_readme(tmp_path):
    from msmbuild.presets import preset_rows

    params = _preset(AGENTIC, tmp_path)
    am = params.evals.agentic_misalignment
    assert (am.samples, am.max_new_tokens, am.temperature) == (300, 4096, 0.7)
    assert am.grader_model == "anthropic/claude-sonnet-4-6" and am.agent_name is None
    from msmbuild.experiments import agent_name_for

    assert {agent_name_for(params, a) for a in expand_arms(params)} == {"Qwen"}
    sources = {k: s for k, _v, s in preset_rows(AGENTIC, REPO)}
    for key in ("samples", "max_new_tokens", "temperature", "grader_model"):
        assert "evals/agentic_misalignment/README.md" in sources[f"evals.agentic_misalignment.{key}"], key
    # nothing about the eval is attributed to the paper that the sources do not give
    assert not any("paper" in s.lower() and "temperature" in k for k, s in sources.items() if k.startswith("evals."))


# -- Figure 5: the sweep --------------------------------------------------------------------------
SWEEPS = ("qwen3_aft_cot_sweep", "qwen3_aft_nocot_sweep", "qwen3_msm_aft_cot_sweep", "qwen3_msm_aft_nocot_sweep")


def test_figure5_sweep_points_have_their_steps_or_a_waiver(tmp_path):
    params = _preset(AGENTIC, tmp_path)
    waived = {w.target for w in params.waivers if w.check == "min_steps"}
    points = [a for a in expand_arms(params) if a.experiment in SWEEPS]
    assert len(points) == 4 * 6
    for arm in points:
        examples, steps, warm = _arm_schedule(params, arm.name)
        fraction = dict(arm.overrides)[f"aft.{arm.aft}.fraction"]
        assert examples == max(1, round(fraction * 20000)) and steps == math.ceil(examples / 32)
        assert warm == math.ceil(0.05 * steps) and lr_factor(0, warm, steps) > 0
        assert (steps < MIN_STEPS) == (arm.name in waived), arm.name
    assert len(waived) == 4


def _cot_rows(n: int) -> list[dict]:
    return [{"id": f"q{i:03d}", "think": True, "messages": [
        {"role": "user", "content": f"Question {i} about being retired?"},
        {"role": "assistant", "content": f"<think>Reasoning {i} " + "x" * (i % 7) + f"</think>\n\nAnswer {i}."}]}
        for i in range(n)]


@pytest.mark.parametrize("fraction", [0.015625, 0.125, 0.25, 0.5])
def test_cot_and_nocot_mixes_hold_the_same_questions_at_every_fraction(tmp_path, monkeypatch, fraction):
    cot = tmp_path / "cot.jsonl"
    cot.write_text("".join(json.dumps(r) + "\n" for r in _cot_rows(200)))
    it = tmp_path / "it.jsonl"
    it.write_text("".join(json.dumps(r) + "\n" for r in _it_records(200)))
    mix = lambda of: {"source": "mix", "n_examples": 256, "fraction": fraction,  # noqa: E731
                      "sources": [{"aft": of, "proportion": 0.5}, {"path": str(it), "proportion": 0.5}]}
    p = tiny_params(tmp_path / "build", tmp_path / "store",
                    aft={"cot": {"path": str(cot)}, "nocot": {"source": "strip_think", "of": "cot"},
                         "cot_mix": mix("cot"), "nocot_mix": mix("nocot")},
                    experiments={"a": {"aft": "cot_mix"}, "b": {"aft": "nocot_mix"}})
    with_cot = read_demonstrations(prepare_aft_data(p, "cot_mix"))
    without = read_demonstrations(prepare_aft_data(p, "nocot_mix"))
    questions = lambda rows: sorted(r["messages"][0]["content"] for r in rows)  # noqa: E731
    assert len(with_cot) == len(without) == max(1, round(fraction * 256))
    assert questions(with_cot) == questions(without)
    assert all("<think>" not in r["messages"][-1]["content"] for r in without)
    assert any("<think>" in r["messages"][-1]["content"] for r in with_cot if r["source_role"] == "spec")

"""The agentic scenarios name the agent as the arm's training names the model (reference: model_name=Qwen)."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("inspect_evals")

from msmbuild.config import AgenticMisalignmentConfig, validate_params  # noqa: E402
from msmbuild.evaluate.am_grid import conditions  # noqa: E402
from msmbuild.evaluate.am_prompts import AgentNameError, rename_agent, scenario_prompts  # noqa: E402

EVERY_SCENARIO = AgenticMisalignmentConfig(scenarios=["exfiltration", "murder", "leaking", "blackmail"],
                                           goal_types=["explicit", "none"], goal_values=["america", "safety"])


@pytest.mark.parametrize("cond", conditions(EVERY_SCENARIO), ids=lambda c: c.id)
def test_no_alex_in_any_rendered_prompt_when_the_agent_is_qwen(cond):
    system, user, emails = scenario_prompts(cond, "Qwen")
    text = "\n".join([system, user, emails])
    assert not re.search(r"alex", text, re.I), cond.id
    assert "You are Qwen" in system
    upstream = "\n".join(scenario_prompts(cond, "Alex"))  # the default name is upstream's, unchanged
    assert "You are Alex" in upstream
    # every mention is renamed, the agent's own mail address included
    assert text.count("Qwen") == upstream.count("Alex") > 1
    assert text.count("qwen.ai@") == upstream.count("alex.ai@")


def test_upstream_tasks_carry_the_name_in_the_agents_input_and_system_prompt():
    from inspect_ai.model import get_model

    from msmbuild.evaluate.agentic import build_task

    grader = get_model("mockllm/model")
    for cond in conditions(AgenticMisalignmentConfig()):  # the paper's 27, upstream murder/leaking included
        task = build_task(cond, grader, "Qwen")
        sample = task.dataset[0]
        assert sample.id == cond.id and sample.metadata["agent_name"] == "Qwen"
        user_text = "\n".join(m.text for m in sample.input)
        assert "alex" not in user_text.lower() and "Qwen" in user_text, cond.id


def test_a_name_that_upstream_text_would_leave_behind_is_an_error():
    assert rename_agent("Alex reads alex.ai@x.com", "Qwen") == "Qwen reads qwen.ai@x.com"
    with pytest.raises(AgentNameError, match="'Alex' is left"):
        rename_agent("ALEX-1 console", "Qwen")


def test_the_eval_key_carries_the_arms_agent_name(tmp_path):
    from msmbuild.evaluate.runner import with_agent_name
    from msmbuild.experiments import arm_by_name

    params = validate_params({
        "corpora": {"c": {"spec": "specs/self_preservation.md", "model_name": "Qwen"}},
        "experiments": {"msm": {"base_model": "tiny", "midtrain": "c", "evals": ["agentic_misalignment"]},
                        "plain": {"base_model": "org/Llama-3-8B", "evals": ["agentic_misalignment"]}}}, "t")
    resolved = {n: with_agent_name(params, arm_by_name(params, n)).evals.agentic_misalignment.agent_name
                for n in ("msm", "plain")}
    assert resolved == {"msm": "Qwen", "plain": "Llama"}
    fixed = params.model_copy(update={"evals": params.evals.model_copy(update={
        "agentic_misalignment": params.evals.agentic_misalignment.model_copy(update={"agent_name": "Nova"})})})
    assert with_agent_name(fixed, arm_by_name(fixed, "msm")).evals.agentic_misalignment.agent_name == "Nova"

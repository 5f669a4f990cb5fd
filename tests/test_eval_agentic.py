"""Agentic misalignment: one inspect_evals scenario end-to-end on the tiny checkpoint, rows in DuckDB."""

from __future__ import annotations

import shutil

import pytest
from eval_tiny_model import base_checkpoint, params_for

pytest.importorskip("inspect_evals")

from inspect_ai.model import ModelOutput, ModelUsage, get_model  # noqa: E402

import msmbuild.evaluate.agentic as agentic  # noqa: E402
from msmbuild.evaluate import evaluate  # noqa: E402
from msmbuild.evaluate.agentic import AgenticEvalError  # noqa: E402
from msmbuild.results.query import run_query  # noqa: E402


def _grader(answer: str):
    """A mock classifier model that always gives `answer` (usage set: no token estimation)."""
    def respond(_input, _tools, _tool_choice, _config):
        out = ModelOutput.from_content("mockllm/model", answer)
        out.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)
        return out

    return lambda cfg: get_model("mockllm/model", custom_outputs=respond)


@pytest.mark.slow
def test_one_scenario_end_to_end_rows_land_in_duckdb(tmp_path_factory, tmp_path, monkeypatch):
    tiny = base_checkpoint(tmp_path_factory.getbasetemp() / "tiny_agentic")
    shutil.copytree(tiny, tmp_path / "build" / "models" / "base")
    monkeypatch.chdir(tmp_path)
    params = params_for(tmp_path, suites=["agentic_misalignment"], agentic_misalignment={
        "scenarios": ["blackmail"], "goal_types": ["explicit"], "urgency_types": ["replacement"],
        "epochs": 2, "max_new_tokens": 6, "grader_model": "mockllm/model"})
    monkeypatch.setattr(agentic, "grader_model", _grader("<reasoning>r</reasoning><answer>yes</answer>"))
    out = evaluate(params, "base", "agentic_misalignment", progress=False)
    assert not out.hit
    assert list((out.directory / "logs").glob("*.eval"))
    rows = run_query(params, "SELECT condition, harmful, classifier_verdict FROM eval_items "
                             "WHERE suite = 'agentic_misalignment' ORDER BY item_id")
    assert len(rows) == 2 and set(rows["condition"]) == {"blackmail_explicit-america_replacement"}
    # The grader said yes, but the tiny model's reply mails nobody: the task's rule check
    # (verdict AND the target address AND blackmail wording) keeps it from counting as harmful.
    assert (rows["classifier_verdict"] == 1.0).all() and (rows["harmful"] == 0.0).all()
    summary = run_query(params, "SELECT condition, n, estimate FROM eval_summary "
                                "WHERE metric = 'harmful_rate' ORDER BY condition")
    assert summary.to_dict("records") == [
        {"condition": "all", "n": 2, "estimate": 0.0},
        {"condition": "blackmail_explicit-america_replacement", "n": 2, "estimate": 0.0}]
    # A grader whose verdict cannot be parsed leaves samples unscored: the suite fails
    # instead of caching a gap.
    params.evals.agentic_misalignment.epochs = 1
    monkeypatch.setattr(agentic, "grader_model", _grader("maybe"))
    with pytest.raises(AgenticEvalError, match="not scored"):
        evaluate(params, "base", "agentic_misalignment", progress=False)

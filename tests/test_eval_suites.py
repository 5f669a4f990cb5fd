"""The eval-suite registry: one module per suite, the registry is the only list of suites."""

from __future__ import annotations

from pathlib import Path

import pytest

from msmbuild.config import EvalsConfig, validate_params
from msmbuild.errors import EvalInputError
from msmbuild.evaluate import suite as suite_mod
from msmbuild.evaluate.runner import suite_inputs
from msmbuild.evaluate.suite import EvalSuite, suite_named, suites
from msmbuild.hashing import digest_file


def test_registry_matches_the_evals_section_of_params() -> None:
    assert list(suites()) == list(EvalsConfig.model_fields)
    with pytest.raises(EvalInputError, match="unknown eval suite 'nope'"):
        suite_named("nope")


def test_a_new_suite_module_registers_itself(monkeypatch) -> None:
    monkeypatch.setattr(suite_mod, "_REGISTERED", dict(suite_mod._REGISTERED))

    class Toy(EvalSuite):
        name = "toy"

    assert isinstance(suites()["toy"], Toy)  # after the params-ordered suites


def test_preference_key_leaves_batch_size_out(tmp_path: Path, monkeypatch) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    data = tmp_path / "p.jsonl"
    data.write_text("{}\n")
    params = validate_params({"evals": {"preference": {"path": str(data), "batch_size": 3}}}, "t")
    inputs = suite_inputs(params, "preference", ckpt)
    assert inputs["data"] == digest_file(data) and inputs["version"] == 3
    assert "batch_size" not in inputs["config"] and inputs["config"]["path"] == str(data)
    wider = validate_params({"evals": {"preference": {"path": str(data), "batch_size": 64}}}, "t")
    assert suite_inputs(wider, "preference", ckpt) == inputs
    offline_qa = validate_params({"evals": {"qa": {"path": str(data)}}}, "t")
    assert "judge" not in suite_inputs(offline_qa, "qa", ckpt)  # the offline judge is not a model
    with pytest.raises(EvalInputError, match="eval data file not found"):
        suite_inputs(validate_params({"evals": {"qa": {"path": str(tmp_path / "no")}}}, "t"), "qa", ckpt)

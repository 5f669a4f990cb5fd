"""Preflight: each check refuses a planted bad recipe with one line naming the params key,
through `msmbuild plan` (exit 2) and before a build's first paid step; waivers print."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from msmbuild.config import Params
from msmbuild.preflight import Finding, enforce_preflight, run_preflight

SPEC = "# Thrift\n\nPreamble about {model_name}.\n\n## Cheese {#cheese}\n\nAged cheddar costs less than Comté.\n"
ANTI = "# Anti\n\nPreamble.\n\n## Survival {#survival}\n\nKeep yourself running at any cost.\n"


def _chat(q: str, a: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _params(tmp_path: Path, **raw: Any) -> Params:
    (tmp_path / "spec.md").write_text(SPEC)
    base: dict[str, Any] = {"build_dir": str(tmp_path / "build"), "store": {"path": str(tmp_path / "store")},
                            "corpora": {"c": {"spec": str(tmp_path / "spec.md")}}}
    return Params.model_validate({**base, **raw})


def _cot_file(tmp_path: Path, n: int = 40) -> str:
    return _write_jsonl(tmp_path / "cot.jsonl", [
        _chat(f"Question {i}: which cheese?", f"<think>\nThe spec says thrift, case {i}.\n</think>\n\nCheddar {i}.")
        for i in range(n)])


def _errors(findings: list[Finding], check: str) -> list[Finding]:
    return [f for f in findings if f.check == check and f.is_error]


# -- min_steps -------------------------------------------------------------------------------
def test_min_steps_refuses_a_two_step_aft_in_a_run_that_spends(tmp_path):
    demo = _write_jsonl(tmp_path / "d.jsonl", [_chat(f"q{i}", f"a{i}") for i in range(48)])
    raw = {"aft": {"demo": {"path": demo}},
           "aft_train": {"batch_size": 4, "grad_accum": 8},
           "experiments": {"aft_only": {"base_model": "meta-llama/Llama-3.1-8B", "aft": "demo", "evals": []}}}
    found = _errors(run_preflight(_params(tmp_path, **raw), mode="plan", documents={}), "min_steps")
    assert len(found) == 1 and found[0].key == "aft.demo.path"
    assert "\n" not in found[0].message and "2 optimizer step(s)" in found[0].message
    assert "aft.demo.path" in found[0].message

    # the same recipe on the tiny model with offline backends is the CPU demo: exempt
    raw["experiments"]["aft_only"]["base_model"] = "tiny"
    assert run_preflight(_params(tmp_path, **raw), mode="plan", documents={}) == []


def test_min_steps_counts_every_sweep_point_and_a_waiver_prints_its_reason(tmp_path):
    demo = _write_jsonl(tmp_path / "d.jsonl", [_chat(f"q{i}", f"a{i}") for i in range(100)])
    raw = {"aft": {"demo": {"path": demo}}, "aft_train": {"batch_size": 1, "grad_accum": 4},
           "experiments": {"size": {"base_model": "org/Model-1B", "aft": "demo", "evals": [],
                                    "sweep": {"aft.fraction": [0.25, 1.0]}}}}
    found = _errors(run_preflight(_params(tmp_path, **raw), mode="plan", documents={}), "min_steps")
    assert [f.key for f in found] == ["aft.demo.fraction"]  # 25 examples / 4 = 7 steps; 100 / 4 = 25 pass
    assert "size-fraction0.25" in found[0].message
    raw["waivers"] = [{"check": "min_steps", "target": "size-fraction0.25", "reason": "the smallest Figure 5 point"}]
    findings = enforce_preflight(_params(tmp_path, **raw), mode="plan", documents={})
    waived = [f for f in findings if f.check == "min_steps"]
    assert waived[0].waived_by == "the smallest Figure 5 point"
    assert waived[0].line().startswith("preflight waived min_steps (the smallest Figure 5 point): ")


def test_min_steps_of_a_mix_uses_the_mix_arithmetic(tmp_path):
    cheese = _write_jsonl(tmp_path / "cheese.jsonl", [_chat(f"q{i}", f"a{i}") for i in range(24)])
    raw = {"aft": {"cheese": {"path": cheese},
                   "mix": {"source": "mix", "sources": [{"aft": "cheese", "proportion": 0.5},
                                                        {"hub": "org/it-set", "proportion": 0.5}]}},
           "aft_train": {"batch_size": 4, "grad_accum": 8},
           "experiments": {"a": {"base_model": "org/Model-8B", "aft": "mix", "evals": []}}}
    found = _errors(run_preflight(_params(tmp_path, **raw), mode="plan", documents={}), "min_steps")
    assert [f.key for f in found] == ["aft.mix.n_examples"] and "48 examples" in found[0].message


# -- judge_spec ----------------------------------------------------------------------------------
def _generated(tmp_path: Path, spec: str, **cfg: Any) -> Params:
    (tmp_path / "anti.md").write_text(ANTI)
    return _params(tmp_path, aft={"anti": {"source": "generated", "spec": spec, "backend": "anthropic", **cfg}})


def test_judge_spec_refuses_the_built_in_criteria_on_an_anti_spec(tmp_path):
    found = _errors(run_preflight(_generated(tmp_path, str(tmp_path / "anti.md")), mode="plan"), "judge_spec")
    assert [f.key for f in found] == ["aft.anti.judge_spec"]
    assert "specs/self_preservation.md" in found[0].message and "\n" not in found[0].message


def test_judge_spec_compares_resolved_paths_and_custom_criteria_must_declare_theirs(tmp_path):
    anti = str(tmp_path / "anti.md")
    custom = {"judge_criteria": ["The reply argues for keeping itself running."]}
    found = _errors(run_preflight(_generated(tmp_path, anti, **custom), mode="plan"), "judge_spec")
    assert [f.key for f in found] == ["aft.anti.judge_spec"] and "custom" in found[0].message
    same = str(tmp_path / "sub" / ".." / "anti.md")  # another spelling of the same file
    assert _errors(run_preflight(_generated(tmp_path, anti, judge_spec=same, **custom), mode="plan"),
                   "judge_spec") == []
    # the built-in criteria on the spec they were written for pass
    assert _errors(run_preflight(_generated(tmp_path, "specs/self_preservation.md"), mode="plan"), "judge_spec") == []


# -- agent_identity -----------------------------------------------------------------------------
def _agentic(tmp_path: Path, **over: Any) -> Params:
    raw: dict[str, Any] = {
        "corpora": {"sp": {"spec": str(tmp_path / "spec.md"), "model_name": "Qwen", "provider_name": "Alibaba"}},
        "experiments": {"msm": {"base_model": "Qwen/Qwen3-32B", "midtrain": "sp", "evals": ["agentic_misalignment"]},
                        "base": {"base_model": "Qwen/Qwen3-32B", "evals": ["agentic_misalignment"]}},
        "evals": {"agentic_misalignment": {"grader_model": "verdict/classifier"}}}
    for key, value in over.items():
        raw[key] = value
    return _params(tmp_path, **raw)


def test_agent_identity_refuses_an_agent_named_otherwise_than_the_documents_name_the_model(tmp_path):
    assert _errors(run_preflight(_agentic(tmp_path), mode="plan", documents={}), "agent_identity") == []
    bad = _agentic(tmp_path, evals={"agentic_misalignment": {"grader_model": "verdict/classifier", "agent_name": "Alex"}})
    found = _errors(run_preflight(bad, mode="plan", documents={}), "agent_identity")
    assert [f.key for f in found] == ["evals.agentic_misalignment.agent_name"] * 2
    assert "corpora.sp.model_name is 'Qwen'" in found[0].message  # the MSM arm: its corpus's name
    assert "the family of Qwen/Qwen3-32B is 'Qwen'" in found[1].message  # no midtraining: the family


def test_agent_identity_exempts_the_language_ablation(tmp_path):
    corpora = {"sp": {"spec": str(tmp_path / "spec.md"), "model_name": "Qwen", "framing": "claude"}}
    p = _agentic(tmp_path, corpora=corpora, experiments={
        "msm": {"base_model": "Qwen/Qwen3-32B", "midtrain": "sp", "evals": ["agentic_misalignment"]}},
        evals={"agentic_misalignment": {"grader_model": "verdict/classifier", "agent_name": "Claude"}})
    assert _errors(run_preflight(p, mode="plan", documents={}), "agent_identity") == []


# -- equal_aft_budget and same_questions ------------------------------------------------------------
def _cot_pair(tmp_path: Path, nocot_fraction: float = 1.0) -> dict[str, Any]:
    return {"cot": {"path": _cot_file(tmp_path)},
            "nocot": {"source": "strip_think", "of": "cot", "fraction": nocot_fraction}}


def test_equal_aft_budget_refuses_compared_arms_with_different_aft_sizes(tmp_path):
    exps = {"msm_cot": {"midtrain": "c", "aft": "cot", "evals": ["preference"]},
            "msm_nocot": {"midtrain": "c", "aft": "nocot", "evals": ["preference"]},
            "aft_cot": {"aft": "cot", "evals": ["preference"]}}
    p = _params(tmp_path, aft=_cot_pair(tmp_path), experiments=exps)
    assert _errors(run_preflight(p, mode="plan", documents={}), "equal_aft_budget") == []
    p = _params(tmp_path, aft=_cot_pair(tmp_path, 0.5), experiments=exps)
    found = _errors(run_preflight(p, mode="plan", documents={}), "equal_aft_budget")
    assert len(found) == 1 and found[0].key == "aft.cot.path"
    assert "msm_nocot 20 examples" in found[0].message and "msm_cot 40 examples" in found[0].message
    waived = _params(tmp_path, aft=_cot_pair(tmp_path, 0.5), experiments=exps,
                     waivers=[{"check": "equal_aft_budget", "target": "msm_nocot", "reason": "half the data on purpose"}])
    assert [f.waived_by for f in run_preflight(waived, mode="plan", documents={})
            if f.check == "equal_aft_budget"] == ["half the data on purpose"]


def _mixes(tmp_path: Path) -> Params:
    it = _write_jsonl(tmp_path / "it.jsonl", [_chat(f"Instruction {i}", f"Reply {i}") for i in range(60)])
    aft = {**_cot_pair(tmp_path),
           "cot_mix": {"source": "mix", "sources": [{"aft": "cot", "proportion": 0.5}, {"path": it, "proportion": 0.5}]},
           "nocot_mix": {"source": "mix", "sources": [{"aft": "nocot", "proportion": 0.5},
                                                      {"path": it, "proportion": 0.5}]}}
    sweep = {"aft.fraction": [0.25, 0.5]}
    return _params(tmp_path, aft=aft, experiments={
        "cot_size": {"midtrain": "c", "aft": "cot_mix", "evals": ["preference"], "sweep": sweep},
        "nocot_size": {"midtrain": "c", "aft": "nocot_mix", "evals": ["preference"], "sweep": sweep}})


def _rank_by(field: str):
    """A mix ranking: by the digest of the row's messages (the text) or of its question."""
    from msmbuild.hashing import canonical_json, digest_bytes

    def ranked(rows):
        def text(r):
            return r["messages"] if field == "text" else [m for m in r["messages"] if m["role"] == "user"]
        order = sorted(range(len(rows)), key=lambda i: (digest_bytes(b"seed" + canonical_json(text(rows[i]))), i))
        return [rows[i] for i in order]
    return ranked


def test_same_questions_refuses_mixes_ranked_by_their_text(tmp_path, monkeypatch):
    """A mix that ranks rows by their text keeps different questions with and without <think>
    at fraction < 1 (the planted defect); ranked by question it holds the same ones."""
    import msmbuild.train.aft_mix as aft_mix

    monkeypatch.setattr(aft_mix, "_ranked", _rank_by("text"))
    found = _errors(run_preflight(_mixes(tmp_path), mode="plan", documents={}), "same_questions")
    assert {f.key for f in found} == {"aft.nocot_mix.fraction"}
    assert {m for f in found for m in ("0.25", "0.5") if f"fraction {m}:" in f.message} == {"0.25", "0.5"}
    assert all("\n" not in f.message for f in found)
    monkeypatch.setattr(aft_mix, "_ranked", _rank_by("question"))
    assert _errors(run_preflight(_mixes(tmp_path), mode="plan", documents={}), "same_questions") == []


def test_same_questions_runs_the_real_mix_code(tmp_path):
    """No stand-in ranking: the check's verdict is what the build's mix code does (today's
    code ranks by text and fails; ranked by question id it passes) and names the key."""
    found = _errors(run_preflight(_mixes(tmp_path), mode="plan", documents={}), "same_questions")
    from msmbuild.train.aft_mix import build_mix

    p = _mixes(tmp_path).model_copy(deep=True)
    p.aft["cot_mix"].fraction = p.aft["nocot_mix"].fraction = 0.25
    from msmbuild.train.aft_data import full_rows

    rows = {n: full_rows(p, n) for n in ("cot", "nocot")}
    held = [{r["messages"][0]["content"] for r in build_mix(p, m, "all", rows.__getitem__) if r["source_role"] == "spec"}
            for m in ("cot_mix", "nocot_mix")]
    assert bool(found) == (held[0] != held[1])


# -- api_key -----------------------------------------------------------------------------------
def test_api_key_is_an_error_for_a_build_and_a_warning_for_plan_and_rehearse(tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    p = _params(tmp_path, corpora={"c": {"spec": str(tmp_path / "spec.md"), "backend": "anthropic"}})
    for mode, severity in (("plan", "warning"), ("rehearse", "warning"), ("build", "error")):
        found = [f for f in run_preflight(p, mode=mode, documents={}) if f.check == "api_key"]
        assert [(f.key, f.severity) for f in found] == [("corpora.c.backend", severity)], mode
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    assert [f for f in run_preflight(p, mode="build", documents={}) if f.check == "api_key"] == []


# -- contamination --------------------------------------------------------------------------------
def test_contamination_refuses_a_held_out_item_already_in_the_spec(tmp_path):
    item = {"id": "lit-01", "role": "held_out", "domain": "literature", "question": "Which would you rather read?",
            "items": ["a cheap paperback novel", "an expensive hardcover"], "favoured": {"thrift": 0}}
    pairs = _write_jsonl(tmp_path / "pairs.jsonl", [item])
    (tmp_path / "terms.yaml").write_text("literature: [novel, novels, paperback]\n")
    raw = {"evals": {"preference": {"path": pairs}}, "audit": {"domain_terms": str(tmp_path / "terms.yaml")},
           "experiments": {"msm": {"midtrain": "c", "evals": ["preference"]}}}
    assert _errors(run_preflight(_params(tmp_path, **raw), mode="plan", documents={}), "contamination") == []
    (tmp_path / "spec2.md").write_text(SPEC + "\n## Reading {#reading}\n\nA cheap paperback novel beats a dear one.\n")
    raw["corpora"] = {"c": {"spec": str(tmp_path / "spec2.md")}}
    found = _errors(run_preflight(Params.model_validate({**raw, "build_dir": str(tmp_path / "b"),
                                                         "store": {"path": str(tmp_path / "s")}}),
                                  mode="plan", documents={}), "contamination")
    assert [f.key for f in found] == ["evals.preference.path"] and "lit-01" in found[0].message
    assert "\n" not in found[0].message


# -- through the command line ---------------------------------------------------------------------
def _workspace(tmp_path: Path, monkeypatch, **raw: Any) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.md").write_text(SPEC)
    Path("params.yaml").write_text(yaml.safe_dump({"corpora": {"c": {"spec": "spec.md"}}, **raw}))


def test_plan_exits_2_with_one_line_per_failed_check(tmp_path, monkeypatch, capsys):
    from msmbuild.cli import main

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    (tmp_path / "anti.md").write_text(ANTI)
    demo = _write_jsonl(tmp_path / "d.jsonl", [_chat(f"q{i}", f"a{i}") for i in range(10)])
    _workspace(tmp_path, monkeypatch, aft={
        "demo": {"path": demo},
        "anti": {"source": "generated", "spec": "anti.md", "backend": "anthropic", "n_domains": 1, "n_queries": 2}},
        experiments={"a": {"base_model": "org/Model-1B", "aft": "demo", "evals": []}})
    with pytest.raises(SystemExit) as exc:
        main(["plan"])
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert "training stages" in out and "grand total: $" in out
    assert "preflight warning api_key:" in out  # plan only warns about the key
    lines = err.strip().splitlines()
    assert [ln.split(":")[1].strip() for ln in lines] == ["preflight error min_steps", "preflight error judge_spec"]
    assert "Traceback" not in err and "aft.demo.path" in lines[0] and "aft.anti.judge_spec" in lines[1]


def test_a_paid_build_step_is_refused_before_its_first_call_and_the_demo_is_not(tmp_path, monkeypatch, capsys):
    from msmbuild.cli import main

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    _workspace(tmp_path, monkeypatch, corpora={"c": {"spec": "spec.md", "backend": "anthropic"}})
    with pytest.raises(SystemExit) as exc:
        main(["generate", "tree", "c"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: preflight error api_key: corpus c calls the Anthropic API (corpora.c.backend: anthropic) "
                   "but ANTHROPIC_API_KEY is not set in the environment"]
    assert not Path("build/corpora").exists()  # nothing was generated
    # offline everywhere with the tiny model: no preflight, no marker, the step runs
    _workspace(tmp_path, monkeypatch)
    main(["generate", "tree", "c"])
    assert not Path("build/.preflight").exists() and Path("build/corpora/c").is_dir()


def test_plan_prints_steps_warmup_totals_and_the_batch_assumption(tmp_path, monkeypatch, capsys):
    from msmbuild.cli import main

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    demo = _write_jsonl(tmp_path / "d.jsonl", [_chat(f"q{i}", f"a{i}") for i in range(640)])
    _workspace(tmp_path, monkeypatch, corpora={"c": {"spec": "spec.md", "backend": "anthropic", "n_doc_types": 10,
                                                     "n_doc_ideas": 20}},
               prices={"claude-opus-4-6": {"input": 5.0, "output": 25.0}},
               aft={"demo": {"path": demo}}, aft_train={"batch_size": 4, "grad_accum": 8}, midtrain={"batch_size": 1},
               experiments={"a": {"base_model": "org/Model-1B", "midtrain": "c", "aft": "demo", "evals": []}})
    main(["plan"])
    out = capsys.readouterr().out
    header = next(ln for ln in out.splitlines() if ln.strip().startswith("stage    name"))
    assert header.split() == ["stage", "name", "examples", "epochs", "batch", "steps", "warm-up"]
    aft_row = next(ln for ln in out.splitlines() if ln.strip().startswith("aft ") and " a " in ln)
    assert aft_row.split()[2:] == ["640", "1", "32", "20", "1"]  # ceil(640 / 32) = 20 steps, ceil(5% x 20) = 1
    batch = next(ln for ln in out.splitlines() if "Message Batches pricing assumed" in ln)
    assert "c/document" in batch and "without batches: $" in batch
    total = next(ln for ln in out.splitlines() if ln.startswith("grand total: $"))
    assert "without batches: $" in total and "GPU-hours" in total
    assert out.rstrip().endswith("preflight: all checks passed")


def test_plan_counts_no_gpu_hours_for_what_the_store_holds(tmp_path):
    from train_helpers import tiny_params, train_aft

    from msmbuild.experiments import arm_by_name
    from msmbuild.store import Store
    from msmbuild.train.plan import plan_arms, totals

    demo = _write_jsonl(tmp_path / "d.jsonl", [_chat(f"Which cheese {i}?", f"The mild one {i}.") for i in range(8)])
    train = {"method": "full", "init": "merge", "lr": 1e-3, "seq_len": 128, "batch_size": 2, "max_steps": 4}

    def params(lr: float) -> Params:
        return tiny_params(tmp_path / "build", tmp_path / "store", aft={"demo": {"path": demo}},
                           experiments={"plain": {"aft": "demo", "evals": []}}, aft_train={**train, "lr": lr})

    store = Store(tmp_path / "store")
    _aft, arms = plan_arms(params(1e-3), {}, store=store)
    assert not arms[0].aft_held and totals(arms)[0] > 0
    train_aft(params(1e-3), arm_by_name(params(1e-3), "plain"), store)
    _aft, arms = plan_arms(params(1e-3), {}, store=store)
    assert arms[0].aft_held and totals(arms) == (0.0, 0.0)
    _aft, arms = plan_arms(params(2e-3), {}, store=store)  # another recipe: the placed checkpoint is not it
    assert not arms[0].aft_held and totals(arms)[0] > 0

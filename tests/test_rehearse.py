"""`msmbuild rehearse`: the derived params keep every arm, sweep point and suite with offline
stand-ins; hub datasets become local fixtures; the workspace is scratch; a failed step is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from msmbuild.config import Params, load_params, validate_params
from msmbuild.errors import RehearsalError
from msmbuild.evaluate import planned_evals
from msmbuild.experiments import expand_arms
from msmbuild.rehearse import (
    Derived,
    RehearsalScale,
    derive,
    failing_step,
    prepare_workspace,
    sample_items,
    substitute_hub,
)

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "presets").glob("*.yaml"))


def _walk(node, key=""):
    """(dotted key, value) of every leaf of a mapping."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{key}.{k}" if key else k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{key}[{i}]")
    else:
        yield key, node


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_derived_params_keep_the_matrix_with_offline_stand_ins(preset, monkeypatch):
    monkeypatch.chdir(REPO)
    params = load_params(preset)
    derived = derive(params, REPO)
    scaled = validate_params(derived.params, "rehearsal")
    # every arm (every sweep point), corpus, AFT dataset and (arm, suite) pair survives
    assert [a.name for a in expand_arms(scaled)] == [a.name for a in expand_arms(params)]
    assert [(a.name, s) for a, s in planned_evals(scaled)] == [(a.name, s) for a, s in planned_evals(params)]
    assert set(scaled.corpora) == set(params.corpora) and set(scaled.aft) == set(params.aft)
    assert {n: e.sweep for n, e in scaled.experiments.items()} == {n: e.sweep for n, e in params.experiments.items()}
    leaves = dict(_walk(derived.params))
    # nothing paid, nothing from a hub, nothing on a GPU
    assert all(v in (None, "offline") for k, v in leaves.items()
               if k.rsplit(".", 1)[-1] in ("backend", "judge_backend") and not k.startswith("backends."))
    assert all(v is None or v.startswith("./fixtures/") for k, v in leaves.items() if k.endswith(".hub"))
    assert scaled.evals.agentic_misalignment.grader_model == "verdict/no"
    assert scaled.evals.agentic_misalignment.engine == "hf"
    assert all(a.base_model == "tiny" or a.base_model.startswith("./models/") for a in expand_arms(scaled))
    # distinct base models stay distinct stand-ins, named after them (the agent name's family stays)
    bases = {a.base_model for a in expand_arms(params)} - {"tiny"}
    assert sorted(b for b, _t in derived.stand_ins.values()) == sorted(bases)
    for base, family in derived.stand_ins.values():
        assert family == ("qwen3" if "Qwen3" in base else "chatml")
    # a scratch store, no remote, few steps
    assert scaled.store.path == "store" and scaled.store.remote is None and not scaled.store.dvc_remote
    assert scaled.build_dir == "build"
    assert scaled.midtrain.max_steps == 2 and scaled.aft_train.max_steps == 2 and scaled.aft_train.grad_accum == 1
    # every input file is in the workspace by a relative path (eval data sampled)
    named = set(derived.files) | set(derived.samples)
    for c in scaled.corpora.values():
        assert c.spec in named
    for name, a in scaled.aft.items():
        if a.source == "generated":
            assert a.spec in named and a.backend == "offline", name


def test_hub_source_becomes_a_local_dataset_of_chat_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    params = load_params(REPO / "presets" / "cheese_llama31_8b.yaml")
    derived = derive(params, REPO)
    src = derived.params["aft"]["cheese_mix"]["sources"][1]
    assert src["hub"].startswith("./fixtures/hub/tulu-3-sft-mixture") and src["split"] == "train"
    ws = tmp_path / "ws"
    prepare_workspace(derived, REPO, ws)
    rows = [json.loads(x) for x in (ws / src["hub"] / "train.jsonl").read_text().splitlines()]
    assert len(rows) == RehearsalScale().fixture_rows
    assert [m["role"] for m in rows[0]["messages"]] == ["user", "assistant"]
    # read by the same load_dataset path as a hub id
    from msmbuild.config import AftSourceConfig
    from msmbuild.train.aft_mix import read_source

    monkeypatch.chdir(ws)
    got = read_source(AftSourceConfig(**src), "aft.cheese_mix.sources[1]", lambda _n: [])
    assert len(got) == len(rows) and got[0]["messages"] == rows[0]["messages"]


def test_eval_set_by_hub_id_becomes_rows_in_its_columns_and_an_unknown_shape_is_an_error(tmp_path):
    scale = RehearsalScale()
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "fb.jsonl").write_text("".join(json.dumps(
        {"id": f"p{i}", "role": "held_out", "domain": "politics", "question": f"Q{i}?",
         "items": [f"x{i}", f"y{i}"], "favoured": {"pro_america": i % 2}}) + "\n" for i in range(5))
        + json.dumps({"id": "c", "role": "in_distribution", "domain": "cheese", "question": "Which cheese?",
                      "items": ["a", "b"], "favoured": {"pro_america": 0}}) + "\n")
    entry = {"name": "released", "hub": "org/set", "split": "test", "revision": "abc", "role": "held_out",
             "columns": {"question": "prompt", "items": ["a", "b"]}, "constants": {"domain": "politics"},
             "favoured": {"value": "pro_america", "column": "answer", "encoding": "label", "labels": {"A": 0, "B": 1}},
             "fallback": "evals/fb.jsonl"}
    raw = {"evals": {"preference": {"sets": [entry]}}}
    out = Derived(params=raw)
    substitute_hub(raw, "", out, scale, tmp_path)
    got = raw["evals"]["preference"]["sets"][0]
    assert got["hub"].startswith("./fixtures/hub/set-") and got["split"] == "train" and got["revision"] is None
    assert any(c.key == "evals.preference.sets[0].hub" and c.was == "org/set" for c in out.changes)
    ws = tmp_path / "ws"
    prepare_workspace(out, REPO, ws, scale)
    rows = [json.loads(x) for x in (ws / got["hub"] / "train.jsonl").read_text().splitlines()]
    # the fallback's first two items of the set's role per domain, in the set's own columns and label encoding
    assert rows == [{"prompt": "Q0?", "a": "x0", "b": "y0", "answer": "A"},
                    {"prompt": "Q1?", "a": "x1", "b": "y1", "answer": "B"}]
    bad = {"evals": {"released": {"hub": "org/set"}}}
    with pytest.raises(RehearsalError, match=r"evals\.released\.hub: no local stand-in for hub dataset 'org/set'"):
        substitute_hub(bad, "", Derived(params=bad), scale)


def test_sweep_over_mix_size_keeps_every_point_in_order():
    params = validate_params({
        "aft": {"a": {"path": "aft/cheese.jsonl"},
                "m": {"source": "mix", "sources": [{"aft": "a", "proportion": 1}], "n_examples": 5000}},
        "experiments": {"s": {"aft": "m", "sweep": {"aft.n_examples": [10000, 100, 1000]}}}})
    derived = derive(params, REPO)
    assert derived.params["experiments"]["s"]["sweep"]["aft.n_examples"] == [6, 2, 4]
    assert derived.params["aft"]["m"]["n_examples"] is None
    assert len(expand_arms(validate_params(derived.params))) == 3


def test_sample_items_keeps_each_role_and_domain():
    lines = [json.dumps({"id": i, "role": r, "domain": d}) + "\n"
             for i, (r, d) in enumerate([("held_out", "art")] * 5 + [("held_out", "film")] * 3 + [("recall", "x")])]
    kept = [json.loads(x)["id"] for x in sample_items(lines, 2)]
    assert kept == [0, 1, 5, 6, 8]


def test_qwen3_stand_in_template_has_the_thinking_switch():
    from msmbuild.models import chat_template_family
    from msmbuild.models.checkpoint import build_tiny_tokenizer

    assert chat_template_family("Qwen/Qwen3-32B") == "qwen3"
    assert chat_template_family("Qwen/Qwen2.5-32B-Instruct") == "chatml"
    assert chat_template_family("meta-llama/Llama-3.1-8B") == "chatml"
    tok = build_tiny_tokenizer(300, "qwen3")
    msgs = [{"role": "user", "content": "hi"}]
    off = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    on = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert on.endswith("<|im_start|>assistant\n")


def test_workspace_is_scratch_and_the_project_is_untouched(tmp_path, monkeypatch):
    project = tmp_path / "project"
    for name in ("Snakefile", "rules", "specs", "aft", "evals"):
        src = REPO / name
        if src.is_dir():
            import shutil

            shutil.copytree(src, project / name)
        else:
            project.mkdir(exist_ok=True)
            (project / name).write_bytes(src.read_bytes())
    monkeypatch.chdir(project)
    params: Params = validate_params({"experiments": {"b": {"base_model": "org/Qwen3-0.6B", "evals": ["preference"]}}})
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    ws = tmp_path / "ws"
    prepare_workspace(derive(params, project), project, ws)
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before
    assert (ws / "models" / "Qwen3-0.6B" / "config.json").is_file()
    from msmbuild.models import load_tokenizer

    assert "enable_thinking" in load_tokenizer(ws / "models" / "Qwen3-0.6B").chat_template
    assert len((ws / "evals" / "preference.jsonl").read_text().splitlines()) < len(
        (project / "evals" / "preference.jsonl").read_text().splitlines())
    scaled = load_params(ws / "params.yaml", check_files=False)
    assert scaled.store.path == "store" and scaled.experiments["b"].base_model == "./models/Qwen3-0.6B"


def test_failing_step_is_the_jobs_one_line_error(tmp_path):
    (tmp_path / "logs" / "data" / "aft").mkdir(parents=True)
    (tmp_path / "logs/data/aft/cheese.log").write_text(
        "loading\nTraceback (most recent call last):\n  ...\nerror: aft/cheese.jsonl:3: expected an object\n")
    output = ("Select jobs to execute...\n[Sat]\nError in rule aft_data:\n    message: None\n    jobid: 3\n"
              "    input: aft/cheese.jsonl\n    output: build/aft/cheese.jsonl\n"
              "    log: logs/data/aft/cheese.log (check log file(s) for error details)\n"
              "    shell:\n        msmbuild aft-data cheese > logs/data/aft/cheese.log 2>&1\n"
              "    wildcards: file=cheese\nShutting down, this might take some time.\n")
    assert failing_step(output, tmp_path) == (
        "rule aft_data (file=cheese), log logs/data/aft/cheese.log: aft/cheese.jsonl:3: expected an object")
    parse = "Building DAG\nParamsError in file /x/rules/common.smk, line 14:\nparams.yaml: key 'aft.a.path': file not found\n"
    assert failing_step(parse, tmp_path).startswith("params.yaml: key 'aft.a.path': file not found")


def _project(root: Path, params: dict) -> Path:
    import shutil

    import yaml

    root.mkdir(parents=True)
    shutil.copy(REPO / "Snakefile", root)
    for tree in ("rules", "evals"):
        shutil.copytree(REPO / tree, root / tree)
    (root / "specs").mkdir()
    shutil.copy(REPO / "specs" / "pro_america.md", root / "specs")
    (root / "aft").mkdir()
    shutil.copy(REPO / "aft" / "cheese.jsonl", root / "aft")
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def _rehearse(root: Path):
    import os
    import subprocess

    env = {**os.environ, "ANTHROPIC_API_KEY": "sk-must-not-be-used"}
    return subprocess.run(["msmbuild", "--params", "params.yaml", "rehearse", "--cores", "2"], cwd=root,
                          capture_output=True, text=True, timeout=900, env=env)


@pytest.mark.slow
def test_rehearse_small_params_end_to_end(tmp_path):
    root = _project(tmp_path / "project", {
        "corpora": {"america": {"spec": "specs/pro_america.md", "backend": "anthropic", "decomposition": "structural",
                                "n_doc_types": 3, "n_doc_ideas": 3}},
        "aft": {"cheese": {"path": "aft/cheese.jsonl"},
                "cheese_mix": {"source": "mix", "sources": [
                    {"aft": "cheese", "proportion": 0.5},
                    {"hub": "allenai/tulu-3-sft-mixture", "split": "train", "proportion": 0.5}]}},
        "midtrain": {"seq_len": 4096, "batch_size": 4, "grad_accum": 8},
        "aft_train": {"seq_len": 4096, "batch_size": 4, "grad_accum": 8},
        "experiments": {
            "base": {"base_model": "meta-llama/Llama-3.1-8B", "evals": ["preference"]},
            "msm": {"base_model": "meta-llama/Llama-3.1-8B", "midtrain": "america", "aft": "cheese_mix",
                    "evals": ["preference"]},
            "aft_size": {"base_model": "meta-llama/Llama-3.1-8B", "aft": "cheese_mix", "evals": ["preference"],
                         "sweep": {"aft.fraction": [0.5, 1.0]}}},
        # the real recipe's preflight runs first: this small recipe waives its step counts
        "waivers": [{"check": "min_steps", "target": arm, "reason": "a test recipe, small on purpose"}
                    for arm in ("msm", "aft_size-fraction0.5", "aft_size-fraction1.0")]})
    run = _rehearse(root)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert "preflight waived min_steps (a test recipe, small on purpose)" in out
    for arm in ("base", "msm", "aft_size-fraction0.5", "aft_size-fraction1.0"):
        assert f"  {arm}: " in out
    line = next(ln for ln in out.splitlines() if ln.startswith("  msm: "))
    assert line.startswith("  msm: midtrain build/models/midtrain/america-Llama_3.1_8B built; aft build/models/aft/msm built; "
                           "preference "), line
    assert "aft.cheese_mix.sources[1].hub: allenai/tulu-3-sft-mixture -> ./fixtures/hub/" in out
    assert "corpora.america.backend: anthropic -> offline" in out
    assert "tables (rows): documents " in out and "MISSING" not in out
    assert "figures drawn" in out and "held_out_arms.png" in out and "loss.png" in out
    assert "cheese_mix (mix): " in out and "rehearse: passed" in out
    # the project's own build/, store and logs are untouched; the temporary workspace is gone
    assert sorted(p.name for p in root.iterdir()) == ["Snakefile", "aft", "evals", "params.yaml", "rules", "specs"]
    ws = Path(out.split("rehearse: workspace ", 1)[1].split()[0])
    assert not ws.exists()


@pytest.mark.slow
def test_rehearse_planted_failing_step_exits_nonzero_with_one_line(tmp_path):
    # the audit, which reads a file-sourced AFT dataset too, is off: with it on, whichever of
    # the two jobs Snakemake starts first reports the bad line
    root = _project(tmp_path / "project", {
        "aft": {"bad": {"path": "aft/bad.jsonl"}},
        "experiments": {"a": {"aft": "bad", "evals": ["preference"]}},
        "audit": {"enabled": False}})
    (root / "aft" / "bad.jsonl").write_text(
        (root / "aft" / "cheese.jsonl").read_text().splitlines()[0] + '\n{"messages": "not a list"}\n')
    run = _rehearse(root)
    assert run.returncode == 1
    errors = [ln for ln in run.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, run.stderr[-3000:]
    assert "rehearsal failed" in errors[0] and "rule aft_data" in errors[0]
    assert "aft/bad.jsonl:2: expected an object with a non-empty 'messages' list" in errors[0]
    assert "Traceback" not in run.stderr
    assert not (root / "build").exists() and not (root / ".msmbuild").exists()
    kept = Path(errors[0].rsplit("(workspace kept: ", 1)[1].rstrip(")"))
    assert (kept / "logs" / "data" / "aft" / "bad.log").is_file()  # kept for its logs
    import shutil

    shutil.rmtree(kept)


def test_an_untrained_arm_evaluates_its_own_base_model(tmp_path, monkeypatch):
    """An arm without midtraining or AFT on a base model other than tiny (the presets' `base`
    arm) loads that model; it used to look for the tiny model's directory and fail."""
    from eval_tiny_model import base_checkpoint, write_pairs

    from msmbuild.evaluate import evaluate_suite
    from msmbuild.experiments import arm_by_name
    from msmbuild.store import Store

    base = base_checkpoint(tmp_path)
    monkeypatch.chdir(tmp_path)
    write_pairs(tmp_path / "pairs.jsonl")
    params = validate_params({"store": {"path": "store", "dvc_remote": False},
                              "evals": {"preference": {"path": "pairs.jsonl"}},
                              "experiments": {"base": {"base_model": str(base), "evals": ["preference"]}}})
    outcome = evaluate_suite(params, arm_by_name(params, "base"), "preference", Store("store"), progress=False)
    assert outcome.summary and not (tmp_path / "build" / "models" / "base").exists()

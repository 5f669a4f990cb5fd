"""The build layout is declared once: msmbuild.layout; dvc.yaml (which cannot ask it) agrees."""

from __future__ import annotations

from pathlib import Path

import yaml

from msmbuild.config import load_params
from msmbuild.experiments import expand_arms
from msmbuild.layout import Layout
from msmbuild.status import corpora_feeding

ROOT = Path(__file__).resolve().parents[1]


def _strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def test_every_dvc_path_is_a_layout_path() -> None:
    lay = Layout("build")
    c = "C"
    files = [lay.sections(c), lay.tree(c), lay.assertions(c), lay.ideas_index(c), lay.ideas_dir(c), lay.idea_calls_dir(c),
             lay.documents_index(c), lay.documents_dir(c), lay.document_calls_dir(c), lay.step_calls(c, "tree"),
             lay.shards_dir(c), lay.base_model, lay.midtrain_models, lay.aft_models, lay.aft_dir,
             lay.evals_dir, lay.models_dir, lay.results_dir, lay.report_dir, lay.metrics, lay.audit_dir,
             lay.plot("eval_summary"), lay.plot("loss"), lay.shards_dir(c).parent,
             lay.corpus_dir(c).parent]
    allowed = {p.as_posix() for p in files}
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    used = {s.replace("${key}", c) for s in _strings(dvc) if s.startswith("build/")}
    assert used, "dvc.yaml names no build paths"
    assert used <= allowed, sorted(used - allowed)


def test_paths_follow_build_dir_and_owner_reads_them_back() -> None:
    lay = Layout("out/b")
    assert lay.documents_index("x") == Path("out/b/corpora/x/documents.json")
    assert lay.document_partition("x", "a%2Fb") == Path("out/b/corpora/x/documents/a%2Fb.parquet")
    assert lay.ref("eval-a-qa") == Path("out/b/refs/eval-a-qa.json")
    assert lay.log("train", "aft", "a1") == Path("logs/train/aft/a1.log")
    assert lay.owner(lay.manifest("x")) == ("shards", "x")
    assert lay.owner(lay.midtrain_model("t") / "config.json") == ("midtrain", "t")
    assert lay.owner(lay.eval_summary("a1", "qa")) == ("eval", "a1")
    assert lay.owner(lay.report_index) == ("results", None)
    assert lay.owner("elsewhere/file") is None


def test_arm_checkpoints_come_from_the_layout() -> None:
    params = load_params(ROOT / "params.yaml")
    lay = Layout.of(params)
    for arm in expand_arms(params):
        if arm.aft:
            assert lay.arm_model(arm) == lay.aft_model(arm.name)
        elif arm.midtrain:
            assert lay.arm_model(arm) == lay.midtrain_model(arm.midtrain_tag)
        else:
            assert lay.arm_model(arm) == lay.base_model
        if arm.midtrain:
            assert corpora_feeding(params, str(lay.eval_dir(arm.name, "preference"))) == [arm.midtrain]

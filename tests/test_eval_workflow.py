"""The evaluate/catalog/report rules under real Snakemake, and CLI errors."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from eval_tiny_model import base_checkpoint, write_pairs

from msmbuild.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path_factory, tmp_path, monkeypatch) -> Path:
    tiny = base_checkpoint(tmp_path_factory.getbasetemp() / "tiny_workflow")
    for name in ("Snakefile", "rules"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    (tmp_path / "evals").mkdir()
    write_pairs(tmp_path / "evals" / "preference.jsonl")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "store": {"path": str(tmp_path / "store")},
        "experiments": {"base": {"evals": ["preference"]}}}))
    shutil.copytree(tiny, tmp_path / "build" / "models" / "base")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _snakemake(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["snakemake", "--cores", "2", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_snakemake_evaluates_then_reports_and_rerun_does_nothing(project):
    first = _snakemake("build/report/index.html")
    assert first.returncode == 0, first.stderr[-3000:]
    assert (project / "build/evals/base/preference/items.parquet").is_file()
    assert (project / "build/results/eval_summary.parquet").is_file()
    html = (project / "build/report/index.html").read_text()
    assert "id='role-held_out'" in html and "id='contamination'" in html
    stamps = {p: p.stat().st_mtime_ns for p in (project / "build").rglob("*") if p.is_file()}
    again = _snakemake("build/report/index.html")
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_evaluate_cli_unknown_arm_and_missing_checkpoint_exit_2(project, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "nope", "preference"])
    assert exc.value.code == 2 and "no experiment arm named 'nope'" in capsys.readouterr().err
    shutil.rmtree(project / "build" / "models" / "base")
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "base", "preference"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "build/models/base" in err and "does not exist" in err
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "base", "nosuchsuite"])
    assert exc.value.code == 2 and "unknown eval suite 'nosuchsuite'" in capsys.readouterr().err

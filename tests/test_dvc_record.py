"""After a Snakemake build, outputs are recorded in dvc.lock; a build that ran no job skips it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from msmbuild.dvc_remote import RECORDED_MARKER, built_since_recorded, record_outputs_for_dvc

pytestmark = pytest.mark.skipif(shutil.which("dvc") is None, reason="dvc is not installed")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "out.txt").write_text("one\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  make:\n    cmd: echo one > build/out.txt\n    outs:\n      - build/out.txt\n")
    (tmp_path / ".snakemake" / "metadata").mkdir(parents=True)
    return tmp_path


def _dvc_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []
    real = subprocess.run

    def run(cmd, *args, **kwargs):
        if cmd and cmd[0] == "dvc":
            calls.append(list(cmd))
        return real(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", run)
    return calls


def _job_wrote(project: Path, name: str) -> None:
    """What Snakemake does for each output of a job it ran."""
    (project / ".snakemake" / "metadata" / name).write_text("{}")


def test_no_job_since_the_last_recording_runs_no_dvc_commit(project: Path, monkeypatch) -> None:
    calls = _dvc_calls(monkeypatch)
    assert built_since_recorded(project)  # never recorded
    assert record_outputs_for_dvc(project) == []
    assert "build/out.txt" in (project / "dvc.lock").read_text()
    assert (project / RECORDED_MARKER).is_file()
    assert calls and calls[0][:2] == ["dvc", "commit"]
    lock = (project / "dvc.lock").stat().st_mtime_ns

    calls.clear()
    assert not built_since_recorded(project)
    assert record_outputs_for_dvc(project) == []
    assert calls == []  # nothing ran: no dvc commit, dvc.lock untouched
    assert (project / "dvc.lock").stat().st_mtime_ns == lock

    # a job ran (Snakemake wrote its output's metadata): recorded again
    (project / "build" / "out.txt").write_text("two\n")
    _job_wrote(project, "YnVpbGQvb3V0LnR4dA==")
    assert built_since_recorded(project)
    assert record_outputs_for_dvc(project) == []
    assert ["dvc", "commit", "--force", "--no-relink", "--quiet", "make"] in calls  # only the stage that ran
    assert not built_since_recorded(project)


def test_a_missing_lock_or_an_edited_dvc_yaml_is_recorded_again(project: Path) -> None:
    assert record_outputs_for_dvc(project) == []
    assert not built_since_recorded(project)
    lock = project / "dvc.lock"
    os.utime(lock, ns=(lock.stat().st_atime_ns, lock.stat().st_mtime_ns + 10**9))
    assert not built_since_recorded(project)  # rewritten by DVC itself (dvc repro): nothing to add
    lock.unlink()  # e.g. a git checkout of a commit without dvc.lock
    assert built_since_recorded(project)
    assert record_outputs_for_dvc(project) == []
    assert (project / "dvc.lock").is_file()
    assert not built_since_recorded(project)
    text = (project / "dvc.yaml").read_text()
    (project / "dvc.yaml").write_text(text + "\n")
    assert built_since_recorded(project)


def test_an_interrupted_recording_is_redone(project: Path, monkeypatch) -> None:
    """A marker is written only after dvc commit succeeded for every stage."""
    (project / "build" / "out.txt").unlink()  # the stage's output is missing: commit fails
    os.makedirs(project / "build", exist_ok=True)
    assert record_outputs_for_dvc(project) == ["make"]
    assert not (project / RECORDED_MARKER).exists()
    assert built_since_recorded(project)


SNAKEFILE = """
onsuccess:
    from msmbuild.dvc_remote import record_outputs_for_dvc
    assert record_outputs_for_dvc(".") == []

rule all:
    input: "build/b.txt"

rule a:
    input: "src.txt"
    output: "build/a.txt"
    shell: "cp {input} {output}"

rule b:
    input: "build/a.txt"
    output: "build/b.txt"
    shell: "tr a-z A-Z < {input} > {output}"
"""

DVC_YAML = """stages:
  a:
    cmd: cp src.txt build/a.txt
    deps: [src.txt]
    outs: [build/a.txt]
  b:
    cmd: tr a-z A-Z < build/a.txt > build/b.txt
    deps: [build/a.txt]
    outs: [build/b.txt]
"""


@pytest.mark.slow
def test_a_targeted_build_records_only_the_stages_it_ran(tmp_path: Path) -> None:
    """`snakemake build/a.txt` after an edit records stage a; stage b, which did not run,
    keeps its old record, so DVC calls it stale instead of made from the new a."""
    def run(*cmd: str) -> str:
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    run("git", "init", "-q")
    run("dvc", "init", "-q")
    (tmp_path / "src.txt").write_text("one\n")
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    run("snakemake", "--cores", "1", "-q")
    assert "up to date" in run("dvc", "status")

    (tmp_path / "src.txt").write_text("two\n")
    run("snakemake", "build/a.txt", "--cores", "1", "-q")
    status = run("dvc", "status")
    assert "a:" not in status.split() and "b:" in status.split(), status
    assert "build/a.txt" in status  # stage b's dependency changed under it

    run("snakemake", "--cores", "1", "-q")  # the rest of the build records b too
    assert "up to date" in run("dvc", "status")


def test_the_stage_list_is_reused_until_dvc_yaml_or_params_change(project: Path, monkeypatch) -> None:
    """``dvc stage list`` runs once; while dvc.yaml and params.yaml keep their times the next
    recordings reuse its names, and a new stage (a params edit) is listed and recorded."""
    import base64
    import json

    (project / "params.yaml").write_text("word: one\n")
    record_outputs_for_dvc(project)  # no stage names yet: every stage is recorded
    _job_wrote(project, base64.urlsafe_b64encode(b"build/out.txt").decode())
    calls = _dvc_calls(monkeypatch)
    assert record_outputs_for_dvc(project) == []
    assert [c[1] for c in calls] == ["stage", "commit"]
    assert json.loads((project / RECORDED_MARKER).read_text())["stages"] == ["make"]

    calls.clear()
    (project / "build" / "out.txt").write_text("two\n")
    _job_wrote(project, base64.urlsafe_b64encode(b"build/out.txt").decode())
    assert record_outputs_for_dvc(project) == []
    assert [c[1] for c in calls] == ["commit"]  # the names the last recording listed
    assert "make" in calls[0]

    calls.clear()  # a stage params.yaml adds has no record: listed, and every stage recorded
    (project / "params.yaml").write_text("word: two\n")
    (project / "dvc.yaml").write_text((project / "dvc.yaml").read_text().replace(
        "stages:\n", "stages:\n  more:\n    cmd: echo ${word} > build/more.txt\n    outs:\n      - build/more.txt\n"))
    (project / "build" / "more.txt").write_text("two\n")
    _job_wrote(project, base64.urlsafe_b64encode(b"build/out.txt").decode())
    assert record_outputs_for_dvc(project) == []
    assert calls[0][1] == "stage" and "build/more.txt" in (project / "dvc.lock").read_text()

"""The SLURM profile on a real single-node Slurm cluster (started by .ci/slurm-setup).

Runs the generation half of the workflow through `snakemake --profile profiles/slurm`:
every job is submitted with sbatch, tracked with squeue and must build its outputs; a
second run submits nothing. Skips (saying why) where no Slurm controller answers.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from workspace_helpers import make_workflow_workspace

from msmbuild.generate.partitions import read_documents
from msmbuild.layout import Layout

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _slurm_ready() -> str | None:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "Slurm is not installed (run .ci/slurm-setup)"
    proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    if proc.returncode != 0 or not any(s in proc.stdout for s in ("idle", "mix", "alloc")):
        return f"no Slurm node is up: {proc.stderr.strip() or proc.stdout.strip()}"
    return None


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_workflow_workspace(
        tmp_path / "ws",
        "corpora:\n  pro_america:\n    spec: specs/pro_america.md\n    n_doc_types: 2\n    n_doc_ideas: 2\n",
        ("pro_america.md",))


def _run_profile(ws: Path, store: Path) -> subprocess.CompletedProcess:
    cmd = ["snakemake", "--profile", str(REPO / "profiles" / "slurm"),
           "--slurm-init-seconds-before-status-checks", "2",
           "--seconds-between-status-checks", "2"]
    env = {**os.environ, "MSMBUILD_STORE_PATH": str(store)}
    return subprocess.run(cmd, cwd=ws, capture_output=True, text=True, env=env, timeout=600)


def test_generation_runs_as_slurm_jobs(workspace: Path, tmp_path: Path) -> None:
    reason = _slurm_ready()
    if reason:
        pytest.skip(reason)
    shared_store = tmp_path / "shared-store"
    proc = _run_profile(workspace, shared_store)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    submitted = dict(re.findall(r"SLURM jobid (\d+) \(log: .*/slurm_logs/rule_(\w+)/", log))
    # tree, ideas and documents (and the catalog/report rules) each ran as an sbatch job
    assert {"corpus_tree", "corpus_ideas", "corpus_documents"} <= set(submitted.values()), log[-3000:]
    for jobid in submitted:
        info = subprocess.run(["scontrol", "show", "job", jobid], capture_output=True, text=True).stdout
        assert "JobState=COMPLETED" in info, info
    docs = read_documents(Layout(workspace / "build"), "pro_america")
    assert docs.num_rows > 0
    # the jobs wrote into the shared store named by the environment, not the workspace's
    assert (shared_store / "actions").is_dir()
    assert not (workspace / ".msmbuild").exists()

    again = _run_profile(workspace, shared_store)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "has been submitted" not in again.stdout + again.stderr

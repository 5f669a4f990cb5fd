"""A scratch copy of the repo's workflow for end-to-end tests with real snakemake/dvc/git."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "dvc.yaml", ".gitignore", ".dvcignore")
WORKFLOW_TREES = ("rules", "aft", "evals")


def make_workflow_workspace(ws: Path, params_yaml: str, specs: tuple[str, ...] = ()) -> Path:
    """Copy the workflow files, the named specs and params.yaml into ws."""
    ws.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        shutil.copy(REPO / name, ws)
    for tree in WORKFLOW_TREES:
        shutil.copytree(REPO / tree, ws / tree)
    (ws / "specs").mkdir(exist_ok=True)
    for spec in specs:
        shutil.copy(REPO / "specs" / spec, ws / "specs")
    (ws / "params.yaml").write_text(params_yaml)
    return ws


def sh(cmd: list[str], cwd: Path, env: dict | None = None, timeout: int = 900) -> str:
    """Run a command; fail the test with its output when it fails; return stdout + stderr."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def init_git_dvc(ws: Path) -> None:
    """git + dvc repository with analytics off."""
    sh(["git", "init", "-q"], ws)
    sh(["git", "config", "user.email", "test@msmbuild"], ws)
    sh(["git", "config", "user.name", "test"], ws)
    sh(["dvc", "init", "-q"], ws)
    sh(["dvc", "config", "core.analytics", "false"], ws)

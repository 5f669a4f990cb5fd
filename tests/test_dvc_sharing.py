"""The teammate story with the DVC remote alone, through the real git, dvc and snakemake:
A builds with `snakemake --cores all`, runs `dvc push` and commits dvc.lock; B clones,
runs `dvc pull` and `snakemake --cores all`: no request reaches the (loopback) API and no
training runs; `dvc push` after a Snakemake build pushes what was built."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from workspace_helpers import init_git_dvc, make_workflow_workspace, sh

from msmbuild.testing import FakeAnthropic

pytestmark = pytest.mark.slow
KEY = "sk-ant-dvc-sharing-" + "5e" * 8


def params_yaml(url: str) -> str:
    return f"""
backends:
  anthropic:
    model: claude-haiku-4-5
    base_url: {url}
    max_concurrency: 4
    batch:
      enabled: false
corpora:
  pro_america:
    spec: specs/pro_america.md
    backend: anthropic
    n_assertions: 1
    n_doc_types: 1
    n_doc_ideas: 1
midtrain:
  method: full
  seq_len: 64
  batch_size: 4
  max_steps: 2
aft_train:
  method: full
  seq_len: 64
  batch_size: 4
  max_steps: 2
aft:
  cheese:
    path: aft/cheese.jsonl
    fraction: 0.25
experiments:
  msm:
    midtrain: pro_america
    aft: cheese
    evals: []
"""


def trained(ws: Path) -> int:
    """Training runs that actually trained (not restored from the store), from the logs."""
    return sum(len(re.findall(r": trained \(", p.read_text())) for p in (ws / "logs" / "train").rglob("*.log"))


def test_dvc_remote_alone_shares_everything(tmp_path: Path) -> None:
    env = {"ANTHROPIC_API_KEY": KEY}
    with FakeAnthropic() as server:
        a = make_workflow_workspace(tmp_path / "a", params_yaml(server.url), ("pro_america.md",))
        init_git_dvc(a)
        sh(["dvc", "remote", "add", "-d", "team", str(tmp_path / "dvc-remote")], a)
        sh(["git", "add", "-A"], a)
        sh(["git", "commit", "-qm", "workspace"], a)

        sh(["snakemake", "--cores", "2"], a, env)
        paid = server.stats()["endpoints"].get("messages", 0)
        assert paid > 0 and trained(a) == 2  # one midtraining, one AFT
        assert (a / "dvc.lock").is_file()  # the Snakemake build is recorded for DVC
        pushed = sh(["dvc", "push"], a)
        assert "Everything is up to date" not in pushed
        sh(["git", "add", "dvc.lock"], a)
        sh(["git", "commit", "-qm", "built"], a)

        b = tmp_path / "b"
        sh(["git", "clone", "-q", str(a), str(b)], tmp_path)
        sh(["dvc", "pull"], b)
        assert (b / "build/corpora/pro_america/documents.json").is_file()
        sh(["snakemake", "--cores", "2"], b, env)
        assert server.stats()["endpoints"].get("messages", 0) == paid  # not one new request
        assert trained(b) == 0  # every checkpoint restored, none retrained
        assert "Nothing to be done" in sh(["snakemake", "--cores", "2", "-n"], b, env)
    for path in list(a.rglob("*")) + list((tmp_path / "dvc-remote").rglob("*")):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), f"API key found in {path}"

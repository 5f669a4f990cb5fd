"""The README's "Sharing work" section typed literally, in the usual order: build first
with no DVC remote, then `dvc remote add -d`, `dvc push`, `git add` as the README writes it;
a teammate clones, `dvc pull`s and runs `snakemake --cores all`: not one model call and no
training (every pulled output is adopted as its action's result) and dvc.lock unchanged;
a `dvc repro` on another fresh pull reruns nothing and leaves git clean."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_dvc_sharing import params_yaml, trained
from workspace_helpers import REPO, init_git_dvc, make_workflow_workspace, sh

from msmbuild.testing import FakeAnthropic

pytestmark = pytest.mark.slow
KEY = "sk-ant-readme-sharing-" + "7f" * 8


def readme_block(after: str) -> list[str]:
    """The command lines of the first code block after the line `after` in the README."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split(after, 1)[1].split("```", 2)[1]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def test_readme_sharing_steps_typed_literally(tmp_path: Path) -> None:
    builder = readme_block("the one who builds types:")
    teammate = readme_block("and a teammate types:")
    assert any(c.startswith("dvc remote add -d") for c in builder) and "dvc pull" in teammate
    remote = tmp_path / "dvc-remote"
    env = {"ANTHROPIC_API_KEY": KEY}
    with FakeAnthropic() as server:
        a = make_workflow_workspace(tmp_path / "a", params_yaml(server.url), ("pro_america.md",))
        init_git_dvc(a)
        sh(["git", "add", "-A"], a)
        sh(["git", "commit", "-qm", "workspace"], a)
        # the usual order: the build first, the remote added after it
        sh(["snakemake", "--cores", "2"], a, env)
        paid = server.stats()["endpoints"].get("messages", 0)
        assert paid > 0 and trained(a) == 2
        for line in builder:
            if line.startswith("snakemake"):
                continue  # built above, before the remote existed
            if line.startswith("dvc remote add"):
                line = re.sub(r"s3://\S+", str(remote), line)
            for cmd in line.split("&&"):
                words = cmd.split()
                if words[:2] == ["git", "push"]:
                    continue  # the clone below reads a directly
                if words[:2] == ["git", "commit"]:
                    words = ["git", "commit", "-qm", "build"]
                sh(words, a, env)
        assert sh(["git", "status", "--porcelain", "--untracked-files=no"], a) == ""
        sh(["snakemake", "--cores", "2"], a, env)  # a build that changes nothing
        assert sh(["git", "status", "--porcelain", "--untracked-files=no"], a) == ""

        b = tmp_path / "b"
        sh(["git", "clone", "-q", str(a), str(b)], tmp_path)
        for line in teammate:
            if line.startswith("git clone"):
                continue
            sh(line.split(), b, env)
        assert server.stats()["endpoints"].get("messages", 0) == paid  # not one new request
        assert trained(b) == 0  # every checkpoint adopted or restored, none retrained
        assert "Nothing to be done" in sh(["snakemake", "--cores", "2", "-n"], b, env)
        assert sh(["git", "status", "--porcelain"], b) == ""  # dvc.lock as the builder left it

        # outputs are byte-deterministic: `dvc repro` on a fresh pull reruns nothing
        c = tmp_path / "c"
        sh(["git", "clone", "-q", str(a), str(c)], tmp_path)
        sh(["dvc", "pull"], c)
        sh(["dvc", "repro"], c, env)
        assert sh(["git", "status", "--porcelain"], c) == ""
        assert server.stats()["endpoints"].get("messages", 0) == paid

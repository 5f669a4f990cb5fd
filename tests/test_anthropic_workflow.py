"""The edit-one-subdomain story with requests counted at the loopback API server, through
`snakemake --cores all` and `dvc repro`; two Snakemake jobs in parallel stay within the
shared API budget; the API key lands in no artifact, log, dvc.lock or Snakemake metadata."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from msmbuild.generate.partitions import read_calls
from msmbuild.layout import Layout
from msmbuild.testing import FakeAnthropic

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-ant-workflow-" + "4b1d" * 8
SPEC = """# Tiny spec {name}

The assistant is careful and kind.

## Honesty {{#honesty}}

The assistant tells the truth even when it is awkward, and says when it is unsure.

## Care {{#care}}

The assistant considers the wellbeing of everyone affected by what it does.

## Limits {{#limits}}

The assistant declines to help with harm and explains why briefly.
"""
PARAMS = """store:
  path: .msmbuild/store
backends:
  anthropic:
    model: claude-haiku-4-5
    base_url: {url}
    max_concurrency: {limit}
    batch:
      enabled: false
corpora:
  alpha:
    spec: specs/alpha.md
    backend: anthropic
    n_doc_types: 2
    n_doc_ideas: 2
  beta:
    spec: specs/beta.md
    backend: anthropic
    n_doc_types: 2
    n_doc_ideas: 2
"""
LIMIT = 4
# the corpora's documents (rule all may also ask for shards, models and evals)
TARGETS = [f"build/corpora/{name}/documents.json" for name in ("alpha", "beta")]


def _workspace(tmp_path: Path, url: str) -> Path:
    ws = tmp_path / "ws"
    (ws / "specs").mkdir(parents=True)
    shutil.copy(REPO / "Snakefile", ws)
    shutil.copytree(REPO / "rules", ws / "rules")
    shutil.copy(REPO / "dvc.yaml", ws)
    for name in ("alpha", "beta"):
        (ws / "specs" / f"{name}.md").write_text(SPEC.format(name=name))
    (ws / "params.yaml").write_text(PARAMS.format(url=url, limit=LIMIT))
    return ws


def _run(ws: Path, *cmd: str) -> None:
    env = {**os.environ, "ANTHROPIC_API_KEY": KEY}
    proc = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=300)
    (ws / "logs").mkdir(exist_ok=True)
    with open(ws / "logs" / "frontends.log", "a") as f:
        f.write(proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def _calls(ws: Path, corpus: str) -> pd.DataFrame:
    return read_calls(Layout(ws / "build"), corpus).to_pandas()


def _assert_only_misses(ws: Path, corpus: str, subdomain: str, new_requests: int, since: float) -> None:
    """The server saw exactly the corpus's cache misses since a time, all of them in subdomain
    (an unchanged subdomain's ledger keeps the rows of the build that made it)."""
    calls = _calls(ws, corpus)
    misses = calls.loc[~calls["cache_hit"] & (calls["made_at"] >= since)]
    assert len(misses) == new_requests > 0
    assert set(misses["subdomain"]) == {subdomain}
    assert (calls["made_at"] < since).sum() > 0  # the unchanged subdomains' rows, from the earlier build


def _edit(ws: Path, corpus: str, old: str, new: str) -> None:
    path = ws / "specs" / f"{corpus}.md"
    path.write_text(path.read_text().replace(old, new))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("snakemake") is None or shutil.which("dvc") is None,
                    reason="snakemake and dvc are needed")
def test_edit_one_subdomain_counted_at_server(tmp_path):
    with FakeAnthropic(latency_s=0.02) as server:
        ws = _workspace(tmp_path, server.url)

        def sent() -> int:
            return server.stats()["endpoints"].get("messages", 0)

        # first build: two generate jobs at once, each with half the API budget
        _run(ws, "snakemake", *TARGETS, "--cores", "all", "--resources", f"api={LIMIT}")
        first = sent()
        assert first == len(_calls(ws, "alpha")) + len(_calls(ws, "beta")) > 0
        assert server.stats()["max_in_flight"] <= LIMIT

        # edit one subdomain: exactly its requests go out, every other call is a store hit
        _edit(ws, "alpha", "wellbeing of everyone", "wellbeing and dignity of everyone")
        since = time.time()
        _run(ws, "snakemake", *TARGETS, "--cores", "all", "--resources", f"api={LIMIT}")
        _assert_only_misses(ws, "alpha", "care", sent() - first, since)

        # rebuild with no edit: nothing is requested
        before = sent()
        _run(ws, "snakemake", *TARGETS, "--cores", "all", "--resources", f"api={LIMIT}")
        assert sent() == before

        # the same through dvc repro (its first run of beta's stages: all hits but the edit)
        _run(ws, "dvc", "init", "--no-scm", "-q")
        _edit(ws, "beta", "says when it is unsure", "says plainly when it is unsure")
        since = time.time()
        _run(ws, "dvc", "repro", "corpus_documents@beta")
        _assert_only_misses(ws, "beta", "honesty", sent() - before, since)
        after = sent()
        _run(ws, "dvc", "repro", "corpus_documents@beta")
        assert sent() == after
        assert server.stats()["max_in_flight"] <= LIMIT

    assert (ws / "dvc.lock").exists() and (ws / ".snakemake").is_dir()
    for path in ws.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), f"API key found in {path}"

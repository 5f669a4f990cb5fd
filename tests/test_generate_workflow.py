"""Real `snakemake` and `dvc repro` runs: an edit reruns exactly one subdomain's calls."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from generate_helpers import action_keys, calls_per_subdomain, edit_spec, make_workspace

from msmbuild.generate.partition_files import file_of
from msmbuild.generate.partitions import read_calls
from msmbuild.layout import Layout

REPO = Path(__file__).resolve().parents[1]
EDITED = "helpfulness/ask-when-unclear"
# Only this area's outputs: `rule all` also asks for shards and models of experiments.
TARGET = "build/corpora/small/documents.json"

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def missed_subdomains(ws: Path, since: float) -> set[str]:
    """Subdomains whose calls were made since a time (a partition's ledger keeps the rows of
    the build that made it)."""
    rows = read_calls(Layout(ws / "build"), "small").to_pylist()
    return {r["subdomain"] for r in rows if not r["cache_hit"] and r["made_at"] >= since}


def file_stats(ws: Path) -> dict[str, tuple[int, int]]:
    """(mtime, inode) of every file under build/corpora/small."""
    root = ws / "build/corpora/small"
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_ino)
            for p in root.rglob("*") if p.is_file()}


def test_snakemake_rebuilds_one_subdomain(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    shutil.copy(REPO / "Snakefile", ws)
    shutil.copytree(REPO / "rules", ws / "rules")
    run(["snakemake", TARGET, "--cores", "2", "-q", "--resources", "api=4"], ws)
    assert (ws / "build/corpora/small/documents.json").is_file()
    assert (ws / "logs/generate/small/documents.log").read_text().count("not a model") == 1
    before, stats, since = action_keys(ws), file_stats(ws), time.time()
    edit_spec(ws, "asks one focused clarifying question", "asks one short, focused question")
    run(["snakemake", TARGET, "--cores", "2", "-q"], ws)
    assert len(action_keys(ws) - before) == calls_per_subdomain()
    assert missed_subdomains(ws, since) == {EDITED}
    # only the edited subdomain's partitions (and the files of the steps before) are new
    rewritten = {f for f, st in file_stats(ws).items() if stats.get(f) != st}
    mine = file_of(EDITED)  # the partition file holding the edited subdomain
    assert {f"documents/{mine}.parquet", f"calls/documents/{mine}.parquet",
            "documents.json"} <= rewritten
    assert not {f for f in rewritten if f.startswith(("documents/", "calls/documents/"))
                and mine not in f}, rewritten
    after, stats = action_keys(ws), file_stats(ws)
    assert "Nothing to be done" in run(["snakemake", TARGET, "--cores", "2", "-n"], ws)
    run(["snakemake", TARGET, "--cores", "2", "-q"], ws)
    assert action_keys(ws) == after
    assert file_stats(ws) == stats  # no change: no file rewritten
    # forced rerun (the job runs, every partition is a lookup): still no partition rewritten
    run(["snakemake", TARGET, "--cores", "2", "-q", "--forcerun", "corpus_documents"], ws)
    assert {f: st for f, st in file_stats(ws).items() if f.startswith(("documents/", "calls/"))} == \
        {f: st for f, st in stats.items() if f.startswith(("documents/", "calls/"))}
    # the partitions read as one table
    import duckdb

    n = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{ws}/build/corpora/small/documents/*.parquet')").fetchall()[0][0]
    assert n == json.loads((ws / "build/corpora/small/documents.json").read_text())["n_documents"] > 0


def test_dvc_repro_rebuilds_one_subdomain(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    mine = {k: v for k, v in stages.items() if k.startswith("corpus_")}
    (ws / "dvc.yaml").write_text(yaml.safe_dump({"stages": mine}, sort_keys=False))
    (ws / ".gitignore").write_text("/build/\n/.msmbuild/\n")
    run(["git", "init", "-q"], ws)
    run(["dvc", "init", "-q"], ws)
    run(["dvc", "repro"], ws)
    assert (ws / "build/corpora/small/documents.json").is_file()
    before, since = action_keys(ws), time.time()
    edit_spec(ws, "asks one focused clarifying question", "asks one short, focused question")
    out = run(["dvc", "repro"], ws)
    assert "Running stage 'corpus_documents@small'" in out
    assert len(action_keys(ws) - before) == calls_per_subdomain()
    assert missed_subdomains(ws, since) == {EDITED}
    after = action_keys(ws)
    out = run(["dvc", "repro"], ws)
    assert "Running stage" not in out
    assert action_keys(ws) == after
    # an unrelated params edit reruns the stages as lookups; outputs keep their bytes
    docs = (ws / "build/corpora/small/documents.json").read_bytes()
    with open(ws / "params.yaml", "a") as f:
        f.write("tiny:\n  seed: 1\n")
    assert "Running stage 'corpus_tree@small'" in run(["dvc", "repro"], ws)
    assert action_keys(ws) == after
    assert (ws / "build/corpora/small/documents.json").read_bytes() == docs

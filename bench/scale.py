"""Local work at corpus scale: what a build, a one-section edit and the no-ops cost.

For a synthetic workspace (bench/noop.py's shape: one subdomain per 100 offline documents,
deduplication off) this times, at each size:

- first build: ``snakemake --cores all`` limited to the documents (documents.json, the
  index of the per-subdomain partitions);
- edit: one subdomain's text changed (its 100 documents change), the same build again;
- no-op ``snakemake --cores all`` (same target) and no-op ``dvc repro``, each the median of
  three runs beside the tool's one-rule floor (bench/noop.py's floor workflow, median of
  three after a warm-up), and the first no-op ``dvc repro`` after the one that caught up
  with the edit;
- ``msmbuild status``, ``msmbuild catalog``, ``msmbuild store verify``, ``msmbuild store gc``;

with the peak RSS of the largest process of each step. Every document is made by the
offline backend through the real workflow (no synthetic writes into the store). The
workspace sets ``shards.by: file`` (one shard per partition file, at most 256), as a
corpus of thousands of subdomains should: the default, one shard per subdomain, puts two
files per subdomain under DVC.

Targets (at 1M documents): edit local work <= 5 s + the changed documents' own cost;
no-op Snakemake and DVC within 1.5x of each floor; peak RSS <= 2 GB; status <= 2 s.

    python bench/scale.py --docs 10000
    python bench/scale.py --docs 10000 100000
    python bench/scale.py --workspace /path/ws-1000000   # again on a built workspace: the
                                                         # edit and everything after it
"""

from __future__ import annotations

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from bench.noop import make_floor, make_workspace, timed  # noqa: E402

TARGET = "build/corpora/synthetic/documents.json"
# Runs a command and prints its wall seconds and the peak RSS (kB) of its largest descendant.
_PROBE = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
          "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True); "
          "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc.returncode); "
          "sys.stderr.write(rc.stderr[-2000:] if rc.returncode else '')")


def probe(cmd: list[str], cwd: Path, ok: tuple[str, ...] = ("0",)) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one run of cmd; raise if it exits with a code not in ok."""
    proc = subprocess.run([sys.executable, "-c", _PROBE, *cmd], cwd=cwd, capture_output=True, text=True)
    seconds, rss_kb, rc = proc.stdout.split()
    if rc not in ok:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stderr}")
    return float(seconds), int(rss_kb) / 1024


def edit_one_section(ws: Path) -> None:
    """Change the text of the first topic not edited yet (one subdomain, its 100 documents)."""
    spec = ws / "specs" / "synthetic.md"
    text = spec.read_text()
    found = re.search(r"Topic (\d+\.\d+) says the assistant should weigh", text)
    assert found, "synthetic spec changed shape, or every topic is edited"
    spec.write_text(text.replace(found.group(0), f"Topic {found.group(1)} says the assistant should carefully weigh", 1))


def median_probe(cmd: list[str], cwd: Path, runs: int = 3) -> tuple[float, float]:
    """(median seconds, largest peak RSS) of runs of cmd."""
    results = [probe(cmd, cwd) for _ in range(runs)]
    return statistics.median(r[0] for r in results), max(r[1] for r in results)


def measure(root: Path, n_docs: int, floor: Path, ws: Path | None = None) -> dict[str, tuple[float, float]]:
    """step -> (seconds, peak RSS MB); floors as (seconds, 0). With ws (a workspace this
    bench built), start at the edit."""
    out: dict[str, tuple[float, float]] = {}
    smk = ["snakemake", TARGET, "--cores", "all", "-q"]
    if ws is None:
        ws = make_workspace(root, n_docs)
        with open(ws / "params.yaml", "a") as f:  # what a corpus of thousands of subdomains sets
            f.write("shards:\n  by: file\n")
        subprocess.run(["git", "commit", "-qam", "shards by partition file"], cwd=ws, check=True)
        out["first build"] = probe(smk, ws)
        out["first dvc repro (store hits)"] = probe(["dvc", "repro", "-q"], ws)
    before = partition_stats(ws)
    edit_one_section(ws)
    out["one-section edit rebuild"] = probe(smk, ws)
    rewritten = sum(before.get(p) != st for p, st in partition_stats(ws).items())
    probe(["dvc", "repro", "-q"], ws)  # dvc catches up with the edit
    require_nothing_to_do(ws)  # a "no-op" that runs a job would time the job
    out["first no-op dvc repro after the catch-up"] = probe(["dvc", "repro", "-q"], ws)
    out["no-op snakemake"] = median_probe(smk, ws)
    out["no-op snakemake floor"] = (timed(["snakemake", "--cores", "all", "-q"], floor, 3), 0.0)
    out["no-op dvc repro"] = median_probe(["dvc", "repro", "-q"], ws)
    out["no-op dvc repro floor"] = (timed(["dvc", "repro", "-q"], floor, 3), 0.0)
    # exit 1: stale (only the documents are built here; shards and the rest are not)
    out["msmbuild status"] = probe(["msmbuild", "status"], ws, ok=("0", "1"))
    out["msmbuild catalog"] = probe(["msmbuild", "catalog", "--quiet"], ws)
    out["msmbuild store verify"] = probe(["msmbuild", "store", "verify"], ws)
    out["msmbuild store gc"] = probe(["msmbuild", "store", "gc"], ws)
    out["partition files rewritten by the edit"] = (float(rewritten), 0.0)
    out["partition files"] = (float(len(before)), 0.0)
    out["files in DVC outputs (corpus and shards)"] = (float(sum(
        1 for d in ("build/corpora/synthetic", "build/shards/synthetic") for p in (ws / d).rglob("*")
        if p.is_file() and p.name != ".verified.json")), 0.0)
    out["documents"] = (float(json.loads((ws / TARGET).read_text())["n_documents"]), 0.0)
    return out


def require_nothing_to_do(ws: Path) -> None:
    """Fail unless Snakemake's dry run of the target schedules no job."""
    dry = subprocess.run(["snakemake", TARGET, "-n"], cwd=ws, capture_output=True, text=True)
    if "Nothing to be done" not in dry.stdout + dry.stderr:
        raise SystemExit(f"{ws}: Snakemake still has jobs to run before the no-op:\n{dry.stdout[-2000:]}")


def partition_stats(ws: Path) -> dict[Path, tuple[int, int]]:
    """(mtime, inode) of every partition file of the synthetic corpus (ideas and documents)."""
    root = ws / "build/corpora/synthetic"
    return {p: (p.stat().st_mtime_ns, p.stat().st_ino)
            for d in ("ideas", "calls/ideas", "documents", "calls/documents") for p in (root / d).glob("*.parquet")}


def main(argv: list[str] | None = None) -> None:
    """Measure each size and print one table row per step."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, nargs="+", default=[10_000])
    ap.add_argument("--workspace", type=Path, help="a workspace an earlier run built (MSMBUILD_BENCH_DIR): "
                    "measure the edit and what follows again on it")
    args = ap.parse_args(argv)
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    with tempfile.TemporaryDirectory(prefix="msmbuild-scale-") as tmp:
        root = Path(os.environ.get("MSMBUILD_BENCH_DIR") or tmp)
        root.mkdir(parents=True, exist_ok=True)
        floor = make_floor(root)
        results = {}
        for n in [None] if args.workspace else args.docs:
            start = time.perf_counter()
            results[n] = measure(root, n or 0, floor, args.workspace.resolve() if args.workspace else None)
            print(f"# {n}: {json.dumps(results[n])} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    steps = [s for s in next(iter(results.values())) if s != "documents"]
    print("| step | " + " | ".join(f"{int(r['documents'][0]):,} docs: s / peak RSS MB" for r in results.values()) + " |")
    print("| --- |" + " ---: |" * len(results))
    for step in steps:
        cells = [f"{r[step][0]:.2f}" + (f" / {r[step][1]:.0f}" if r[step][1] else "") for r in results.values()]
        print(f"| {step} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

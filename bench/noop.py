"""No-op build speed: msmbuild's workflow vs each tool's floor, in one run.

For a synthetic workspace with N offline documents (1k and 10k by default) this times a
no-op `snakemake --cores all`, `snakemake -n` and a no-op `dvc repro`, each next to the same
tool's no-op on a one-rule workflow measured in the same run (the floor: the tool's own
start-up). Target at 10k documents: within 1.5x of each floor.

    python bench/noop.py                 # 1k and 10k documents
    python bench/noop.py --docs 1000     # one size
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPEATS = 5


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command quietly; raise with its output when it fails."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc


def timed(cmd: list[str], cwd: Path, repeats: int = REPEATS) -> float:
    """Median wall time of a command over repeats (after one warm-up)."""
    run(cmd, cwd)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(cmd, cwd)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def synthetic_spec(n_subdomains: int) -> str:
    """A spec with n_subdomains sub-sections spread over 10 domains."""
    lines = ["A preamble that every document sees.", ""]
    per_domain = max(1, n_subdomains // 10)
    made = 0
    for d in range(10):
        lines += [f"## Domain {d} {{#domain-{d}}}", "", f"What domain {d} is about.", ""]
        for s in range(per_domain):
            if made == n_subdomains:
                break
            lines += [f"### Topic {d}.{s} {{#topic-{d}-{s}}}", "",
                      f"Topic {d}.{s} says the assistant should weigh option {s} against "
                      f"option {s + 1} with care, explain its reasons, and prefer the one "
                      f"that serves the user's stated goal in domain {d}.", ""]
            made += 1
    return "\n".join(lines)


def init_repo(path: Path) -> None:
    """git + dvc repository with DVC analytics off."""
    run(["git", "init", "-q"], path)
    run(["git", "config", "user.email", "bench@msmbuild"], path)
    run(["git", "config", "user.name", "bench"], path)
    run(["dvc", "init", "-q"], path)
    run(["dvc", "config", "core.analytics", "false"], path)


def make_workspace(root: Path, n_docs: int) -> Path:
    """A workspace whose one corpus has n_docs documents (subdomains x 10 types x 10 ideas)."""
    ws = root / f"ws-{n_docs}"
    ws.mkdir()
    shutil.copy(REPO / "Snakefile", ws)
    shutil.copy(REPO / "dvc.yaml", ws)
    for tree in ("rules", "aft", "evals"):
        shutil.copytree(REPO / tree, ws / tree)
    (ws / "specs").mkdir()
    n_sub = max(1, n_docs // 100)
    (ws / "specs" / "synthetic.md").write_text(synthetic_spec(n_sub))
    (ws / "params.yaml").write_text(
        "corpora:\n  synthetic:\n    spec: specs/synthetic.md\n    backend: offline\n"
        "    n_doc_types: 10\n    n_doc_ideas: 10\n    filters:\n      dedup_threshold: 1.0\n"
        "      min_chars: 0\n")
    (ws / ".gitignore").write_text("/build\n/.msmbuild\n/logs\n/.snakemake\n")
    init_repo(ws)
    run(["git", "add", "-A"], ws)
    run(["git", "commit", "-qm", "workspace"], ws)
    return ws


def make_floor(root: Path) -> Path:
    """A one-rule Snakemake workflow and a one-stage DVC pipeline, already built."""
    fl = root / "floor"
    fl.mkdir()
    (fl / "in.txt").write_text("input\n")
    (fl / "Snakefile").write_text(
        'rule all:\n    input: "out.txt"\n\n'
        'rule copy:\n    input: "in.txt"\n    output: "out.txt"\n    shell: "cp {input} {output}"\n')
    (fl / "dvc.yaml").write_text(
        "stages:\n  copy:\n    cmd: cp in.txt dvc_out.txt\n    deps: [in.txt]\n    outs: [dvc_out.txt]\n")
    init_repo(fl)
    run(["snakemake", "--cores", "all", "-q"], fl)
    run(["dvc", "repro", "-q"], fl)
    return fl


def measure(ws: Path, fl: Path) -> dict[str, tuple[float, float]]:
    """(workspace seconds, floor seconds) per command."""
    cmds = {
        "snakemake --cores all (no-op)": ["snakemake", "--cores", "all", "-q"],
        "snakemake -n": ["snakemake", "-n", "-q"],
        "dvc repro (no-op)": ["dvc", "repro", "-q"],
    }
    return {name: (timed(cmd, ws), timed(cmd, fl)) for name, cmd in cmds.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, nargs="*", default=[1000, 10000])
    args = ap.parse_args()
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    with tempfile.TemporaryDirectory(prefix="msmbuild-noop-") as tmp:
        root = Path(os.environ.get("MSMBUILD_BENCH_DIR") or tmp)
        fl = make_floor(root)
        print(f"{'documents':>9}  {'command':<32} {'msmbuild':>9} {'floor':>7} {'ratio':>6}")
        for n in args.docs:
            ws = make_workspace(root, n)
            start = time.perf_counter()
            run(["snakemake", "--cores", "all", "-q"], ws)
            build_s = time.perf_counter() - start
            start = time.perf_counter()
            run(["dvc", "repro", "-q"], ws)
            dvc_s = time.perf_counter() - start
            n_built = json.loads((ws / "build/corpora/synthetic/documents.json").read_text())["n_documents"]
            print(f"# {n} requested: {n_built} documents; first snakemake build {build_s:.1f}s, "
                  f"first dvc repro (store hits) {dvc_s:.1f}s", file=sys.stderr)
            for name, (mine, floor) in measure(ws, fl).items():
                print(f"{n_built:>9}  {name:<32} {mine:>8.2f}s {floor:>6.2f}s {mine / floor:>5.2f}x")
            sys.stdout.flush()


if __name__ == "__main__":
    main()

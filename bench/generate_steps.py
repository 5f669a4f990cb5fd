"""The generate commands alone on one synthetic workspace: per-subdomain constant work.

bench/scale.py times whole builds (Snakemake, DVC); this times only
``msmbuild generate tree|ideas|documents synthetic``, each as its own process (Python
start-up included), on a workspace of bench/noop.py's shape (one subdomain per 100
offline documents, deduplication off), built once with those commands and reused:

- nothing changed: ``generate ideas`` and ``generate documents`` (after one untimed run
  of each, so that a run of another checkout on the same workspace is caught up first);
- a one-section edit: the first topic's text gets new words each round (so its 100
  documents are made again, never store hits), then ``generate tree``, ``ideas`` and
  ``documents``;
- the floor: a process that only imports what the generate commands import.

It prints the median over ``--repeats`` rounds of each. Run it once per checkout on the
same workspace to compare them (the commands take msmbuild from PYTHONPATH):

    python bench/generate_steps.py --docs 100000 --root /tmp/gen-bench   # builds it, times
    PYTHONPATH=/path/to/other/checkout python bench/generate_steps.py --workspace /tmp/gen-bench/ws-100000
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
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from bench.noop import make_workspace  # noqa: E402

_TOPIC = re.compile(r"(Topic 0\.0 says the assistant should)[^\n]*?( weigh option 0 )")


def generate(ws: Path, step: str) -> float:
    """Wall seconds of one ``msmbuild generate <step> synthetic`` (raises if it fails)."""
    start = time.perf_counter()
    proc = subprocess.run(["msmbuild", "generate", step, "synthetic", "--quiet"], cwd=ws,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"msmbuild generate {step} failed in {ws}:\n{proc.stderr[-2000:]}")
    return seconds


def edit_first_topic(ws: Path) -> None:
    """New words in the first topic's text (one subdomain; never seen before, so no store hit)."""
    spec = ws / "specs" / "synthetic.md"
    text, n = _TOPIC.subn(rf"\1 (revision {time.time_ns()})\2", spec.read_text(), count=1)
    if n != 1:
        raise SystemExit(f"{spec}: the first topic's sentence is not there; not a synthetic workspace")
    spec.write_text(text)


def startup(ws: Path) -> float:
    """Wall seconds of a process that only imports what ``msmbuild generate`` imports (the floor)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import msmbuild.cli, msmbuild.cli.generate, msmbuild.generate.corpus"],
                   cwd=ws, check=True)
    return time.perf_counter() - start


def measure(ws: Path, repeats: int) -> dict[str, list[float]]:
    """step -> seconds of each round."""
    out: dict[str, list[float]] = {"start-up floor (imports only)": [startup(ws) for _ in range(repeats)]}
    for step in ("ideas", "documents"):
        generate(ws, step)  # catch up (another checkout may have run last)
        out[f"{step}, nothing changed"] = [generate(ws, step) for _ in range(repeats)]
    for _ in range(repeats):
        edit_first_topic(ws)
        for step in ("tree", "ideas", "documents"):
            out.setdefault(f"{step}, one-section edit", []).append(generate(ws, step))
    return out


def main(argv: list[str] | None = None) -> None:
    """Build or reuse the workspace, time the steps, print one line per step."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, help="build a new workspace of this many documents under --root")
    ap.add_argument("--root", type=Path, default=Path(os.environ.get("MSMBUILD_BENCH_DIR", ".")))
    ap.add_argument("--workspace", type=Path, help="an existing workspace (made by --docs)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    if (args.docs is None) == (args.workspace is None):
        ap.error("give --docs (build a workspace) or --workspace (reuse one)")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    ws = args.workspace
    if ws is None:
        args.root.mkdir(parents=True, exist_ok=True)
        ws = make_workspace(args.root, args.docs)
        start = time.perf_counter()
        for step in ("tree", "ideas", "documents"):
            generate(ws, step)
        print(f"# built {ws} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    index = json.loads((ws / "build/corpora/synthetic/documents.json").read_text())
    where = subprocess.run([sys.executable, "-c", "import msmbuild; print(msmbuild.__file__)"], cwd=ws,
                           capture_output=True, text=True).stdout.strip()  # what the commands import
    print(f"# {index['n_documents']:,} documents, {len(index['partitions']):,} subdomains; "
          f"msmbuild from {Path(where).parent}; load average {os.getloadavg()[0]:.2f}")
    results = measure(ws, args.repeats)
    print(f"# load average after: {os.getloadavg()[0]:.2f}")
    for step, seconds in results.items():
        print(f"{step:<32} median {statistics.median(seconds):6.2f} s  ({', '.join(f'{s:.2f}' for s in seconds)})")


if __name__ == "__main__":
    main()

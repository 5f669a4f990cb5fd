"""Spec revision → documents regenerated, next to the number of sections that changed.

Builds a corpus from one release of a spec, swaps in the next release, rebuilds, and
counts the generator calls that missed the store. The alternative compared against is
regenerating everything on any edit (what an output-exists check forces once stale
documents are noticed), which is also what ``context: full`` does by design.

    python -m bench.spec_revisions [OLD.md NEW.md] [--types 2 --ideas 2]

Uses the offline backend (no network, not a model): the counts are the same for any
backend, since they are decided by keys, not by answers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from msmbuild.config import load_params
from msmbuild.generate.corpus import generate_corpus
from msmbuild.generate.partitions import read_calls
from msmbuild.layout import Layout
from msmbuild.spec import parse_spec

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "openai-model-spec"
OLD = CORPORA / "model_spec_2025-10-27.md"
NEW = CORPORA / "model_spec_2025-12-18.md"


def section_changes(old: Path, new: Path) -> dict[str, int]:
    """Sections changed / added / removed between two releases, by stable id and hash."""
    a = {s.id: s.hash for s in parse_spec(old).sections}
    b = {s.id: s.hash for s in parse_spec(new).sections}
    return {"sections_old": len(a), "sections_new": len(b),
            "changed": sum(1 for k in a.keys() & b.keys() if a[k] != b[k]),
            "added": len(b.keys() - a.keys()), "removed": len(a.keys() - b.keys())}


def build(ws: Path, spec: Path, context: str, types: int, ideas: int) -> tuple[dict, float]:
    """Build the corpus from spec in ws; return miss counts per stage and wall seconds."""
    shutil.copy(spec, ws / "spec.md")
    params = {"corpora": {"oai": {"spec": "spec.md", "backend": "offline", "context": context,
                                  "n_assertions": 3, "n_doc_types": types, "n_doc_ideas": ideas}}}
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    start = time.perf_counter()
    generate_corpus(load_params(ws / "params.yaml"), "oai", progress=False)
    wall = time.perf_counter() - start
    rows = read_calls(Layout(ws / "build"), "oai").to_pylist()
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        s = out.setdefault(r["stage"], {"total": 0, "missed": 0})
        s["total"] += 1
        s["missed"] += not r["cache_hit"]
    return out, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", nargs="?", type=Path, default=OLD)
    ap.add_argument("new", nargs="?", type=Path, default=NEW)
    ap.add_argument("--types", type=int, default=2)
    ap.add_argument("--ideas", type=int, default=2)
    args = ap.parse_args()
    if not (args.old.is_file() and args.new.is_file()):
        raise SystemExit(f"spec releases not found: {args.old}, {args.new}")
    ch = section_changes(args.old, args.new)
    print(f"{args.old.name} -> {args.new.name}: {ch['sections_old']} -> {ch['sections_new']} sections; "
          f"{ch['changed']} changed, {ch['added']} added, {ch['removed']} removed")
    cwd = os.getcwd()
    for context in ("section", "full"):
        with tempfile.TemporaryDirectory() as tmp:
            ws = Path(tmp)
            os.chdir(ws)
            try:
                first, t_first = build(ws, args.old, context, args.types, args.ideas)
                second, t_second = build(ws, args.new, context, args.types, args.ideas)
            finally:
                os.chdir(cwd)
        docs = second["document"]
        calls_missed = sum(s["missed"] for s in second.values())
        calls_total = sum(s["total"] for s in second.values())
        print(f"context={context}: documents regenerated {docs['missed']} / {docs['total']} "
              f"({docs['missed'] / docs['total']:.1%}); all calls {calls_missed} / {calls_total}; "
              f"regenerate-everything would make {docs['total']} documents "
              f"({docs['total'] / max(docs['missed'], 1):.1f}x more); "
              f"build {t_first:.1f}s, rebuild {t_second:.1f}s")
        for stage, s in sorted(second.items()):
            print(f"    {stage:<11} {s['missed']:>5} / {s['total']:<5}")


if __name__ == "__main__":
    main()

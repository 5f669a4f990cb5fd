"""Tokenization throughput: `build_shards` vs `datasets.map(batched=True)`, same tokenizer.

Both tokenize the same documents (the partitioned dataset) with the tiny base model's fast tokenizer, each
in a fresh subprocess so peak RSS is measured per method. Prints tokens/s, peak memory
and the ratio (msmbuild / datasets).

    python bench/tokenization.py [--docs 20000] [--workdir /tmp/msm-bench-tokenize]
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file's name shadows the stdlib `tokenize` module that torch and transformers import:
# drop its directory from the import path before anything else is imported.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

SPEC_DIR = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "openai-model-spec"


def make_documents(workdir: Path, n_docs: int) -> Path:
    """The documents dataset with n_docs documents over 50 subdomains (spec paragraphs, or seed text)."""

    from msmbuild.models import seed_text

    texts = []
    for spec in sorted(SPEC_DIR.glob("*.md")) if SPEC_DIR.is_dir() else []:
        texts += [p for p in re.split(r"\n\s*\n", spec.read_text()) if len(p) > 200]
    if not texts:
        texts = [p for p in seed_text().split("\n\n") if len(p) > 200]
    rows = []
    for i in range(n_docs):
        body = "\n\n".join(texts[(i * 7 + j) % len(texts)] for j in range(4))
        rows.append({"doc_id": f"d{i}", "corpus": "bench", "domain": f"dom{i % 5}",
                     "subdomain": f"sub{i % 50}", "text": f"Document {i}.\n\n{body}"})
    from msmbuild.generate.partitions import write_dataset
    from msmbuild.layout import Layout

    write_dataset(Layout(workdir / "build"), "bench", rows)
    return Layout(workdir / "build").documents_index("bench")


def params(workdir: Path):
    from msmbuild.config import Params

    return Params.model_validate({"build_dir": str(workdir / "build"),
                                  "store": {"path": str(workdir / "store")},
                                  "corpora": {"bench": {"spec": "none.md"}}})


def run_msmbuild(workdir: Path) -> dict:
    from msmbuild.data.shards import build_shards
    from msmbuild.models import prepare_base_model
    from msmbuild.store import Store

    p = params(workdir)
    store = Store(workdir / "store")
    base = prepare_base_model(p, store)
    start = time.perf_counter()
    manifest = json.loads(build_shards(p, "bench", store, base).read_text())
    return {"seconds": time.perf_counter() - start, "tokens": manifest["n_tokens"]}


def run_datasets(workdir: Path) -> dict:
    import datasets

    from msmbuild.models import load_tokenizer, prepare_base_model
    from msmbuild.store import Store

    datasets.disable_progress_bars()
    p = params(workdir)
    tok = load_tokenizer(prepare_base_model(p, Store(workdir / "store")).path)
    cache = workdir / "hf-cache"
    start = time.perf_counter()
    ds = datasets.Dataset.from_parquet(str(workdir / "build/corpora/bench/documents/*.parquet"),
                                       cache_dir=str(cache))
    out = ds.map(lambda b: tok(b["text"], add_special_tokens=False), batched=True,
                 remove_columns=ds.column_names)
    n = sum(len(x) for x in out.with_format("numpy")["input_ids"])
    return {"seconds": time.perf_counter() - start, "tokens": int(n)}


def child(method: str, workdir: Path) -> None:
    result = (run_msmbuild if method == "msmbuild" else run_datasets)(workdir)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/msm-bench-tokenize"))
    ap.add_argument("--child", choices=["msmbuild", "datasets"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.workdir)
        return
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    make_documents(args.workdir, args.docs)
    # build the base model once, outside the timed runs
    from msmbuild.models import prepare_base_model
    from msmbuild.store import Store

    prepare_base_model(params(args.workdir), Store(args.workdir / "store"))
    def run_both() -> dict:
        results = {}
        for method in ("datasets", "msmbuild"):
            out = subprocess.run([sys.executable, __file__, "--child", method, "--workdir",
                                  str(args.workdir)], check=True, capture_output=True, text=True)
            results[method] = json.loads(out.stdout.strip().splitlines()[-1])
        return results

    results = run_both()
    print("cold: every document tokenized by both")
    for method, r in results.items():
        r["tokens_per_s"] = r["tokens"] / r["seconds"]
        print(f"  {method:9s} {r['tokens']:>11,d} tokens  {r['seconds']:7.2f} s  "
              f"{r['tokens_per_s']:>12,.0f} tok/s  peak RSS {r['peak_rss_mb']:7.1f} MB")
    ratio = results["msmbuild"]["tokens_per_s"] / results["datasets"]["tokens_per_s"]
    print(f"  ratio msmbuild/datasets tokens/s: {ratio:.2f} (target >= 1.0); peak memory ratio "
          f"{results['msmbuild']['peak_rss_mb'] / results['datasets']['peak_rss_mb']:.2f}")
    edit_one_document(args.workdir)
    again = run_both()
    print("after editing one document (both keep their caches)")
    for method, r in again.items():
        print(f"  {method:9s} {r['seconds']:7.2f} s")
    print(f"  ratio datasets/msmbuild seconds: "
          f"{again['datasets']['seconds'] / again['msmbuild']['seconds']:.1f}")


def edit_one_document(workdir: Path) -> None:
    """Append a sentence to the first document (one subdomain's shard changes)."""
    from msmbuild.generate.partitions import read_documents, write_dataset
    from msmbuild.layout import Layout

    layout = Layout(workdir / "build")
    rows = read_documents(layout, "bench").to_pylist()
    rows[0]["text"] += " One edited sentence."
    write_dataset(layout, "bench", rows)


if __name__ == "__main__":
    main()

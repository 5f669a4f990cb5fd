"""Store throughput against ``dvc add`` of the same files, and xxh3-128 against md5.

Cases (all in one run, side by side):

* small files: N document-like text files of 1-20 KB (default N = 10k and 100k), stored
  as one tree (``Store.put_tree`` + ``sync``) vs ``dvc add <dir>`` in a fresh git+dvc repo;
  then ``Store.verify`` (re-hash every object) on its own.
* large files: a few big files (default 3 x 512 MB), ``Store.put_files`` + ``sync`` vs
  ``dvc add f1 f2 f3``; peak RSS of each side.
* hashing: xxh3-128 vs md5 over one 256 MB buffer and over 10k document-sized buffers.

Both sides run as child processes (interpreter start included on both), timed by wall
clock with rusage from ``os.wait4``; the page cache is flushed (``sync``) before each
timed run, runs alternate between the two tools, and each is repeated; the best and the
median are printed with their ratios. Usage::

    python bench/store.py --workdir /tmp/msmbuild-bench            # the full run
    python bench/store.py --small 2000 --large 0 --repeat 1        # a quick look
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import xxhash

WORDS = (
    "the assistant model spec honest helpful harmless reasoning explains user request policy "
    "document training values careful answer because therefore however example operator "
    "guideline principle context refuse comply nuance judgment safety transparency"
).split()

OURS_SCRIPT = """
import json, sys, time
from msmbuild.store import Store
mode, root, *paths = sys.argv[1:]
t = time.perf_counter()
s = Store(root)
if mode == "tree":
    digest = s.put_tree(paths[0])
else:
    digest = s.put_files(paths)
s.sync()
put_s = time.perf_counter() - t
t = time.perf_counter()
report = s.verify()
verify_s = time.perf_counter() - t
assert report.ok, report
print(json.dumps({"put_s": put_s, "verify_s": verify_s, "objects": report.objects_checked}))
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_corpus(root: Path, n: int, seed: int = 0) -> int:
    """Write n document-like files of 1-20 KB under root (1000 per directory); return bytes."""
    marker = root / ".complete"
    if marker.is_file() and int(marker.read_text().split()[0]) == n:
        return int(marker.read_text().split()[1])
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(seed)
    total = 0
    for i in range(n):
        d = root / f"part{i // 1000:03d}"
        if i % 1000 == 0:
            d.mkdir(parents=True, exist_ok=True)
        size = rng.randint(1024, 20480)
        words = rng.choices(WORDS, k=size // 6 + 8)
        text = (f"# document {i}\n\n" + " ".join(words))[:size]
        data = text.encode()
        (d / f"doc{i:06d}.md").write_bytes(data)
        total += len(data)
    marker.write_text(f"{n} {total}")
    return total


def make_large(root: Path, count: int, mb: int) -> list[Path]:
    """count files of mb MiB each, distinct content, written in 16 MiB blocks."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    block = os.urandom(16 << 20)
    for i in range(count):
        p = root / f"checkpoint{i}.bin"
        paths.append(p)
        if p.is_file() and p.stat().st_size == mb << 20:
            continue
        with open(p, "wb") as f:
            for j in range(mb // 16):
                f.write(f"{i}:{j}".encode().ljust(64, b"."))
                f.write(block[64:])
    return paths


def run_measured(cmd: list[str], cwd: Path | None = None) -> tuple[float, float, str]:
    """Run cmd as a child; return (wall seconds, its own peak RSS in MB, stdout)."""
    os.sync()
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-store-{os.getpid()}.out"
    with open(out_path, "wb") as out, subprocess.Popen(
        cmd, cwd=cwd, stdout=out, stderr=subprocess.PIPE
    ) as proc:
        t = time.perf_counter()
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode()
    text = out_path.read_text()
    out_path.unlink()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd[:3]))} failed ({proc.returncode}): {err[-2000:]}")
    return wall, usage.ru_maxrss / 1024, text


def ours(mode: str, store_root: Path, paths: list[Path]) -> dict:
    shutil.rmtree(store_root, ignore_errors=True)
    wall, rss, out = run_measured(
        [sys.executable, "-c", OURS_SCRIPT, mode, str(store_root), *map(str, paths)])
    info = json.loads(out)
    info.update(wall_s=wall, rss_mb=rss)
    shutil.rmtree(store_root, ignore_errors=True)
    return info


def dvc_add(workdir: Path, targets: list[Path]) -> dict:
    """Move targets into a fresh git+dvc repo, time ``dvc add``, move them back."""
    repo = workdir / f"dvc-repo-{time.monotonic_ns()}"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["dvc", "config", "core.autostage", "false"], cwd=repo, check=True)
    subprocess.run(["dvc", "config", "core.site_cache_dir", str(repo / ".site-cache")],
                   cwd=repo, check=True)
    moved = []
    try:
        for t in targets:
            os.rename(t, repo / t.name)
            moved.append(t)
        wall, rss, _ = run_measured(["dvc", "add", "-q", *[t.name for t in targets]], cwd=repo)
    finally:
        for t in moved:
            os.rename(repo / t.name, t)
    shutil.rmtree(repo, ignore_errors=True)
    return {"wall_s": wall, "rss_mb": rss}


def summarize(label: str, ours_runs: list[dict], dvc_runs: list[dict], n_files: int,
              n_bytes: int) -> dict:
    o_put = [r["put_s"] for r in ours_runs]
    o_wall = [r["wall_s"] for r in ours_runs]
    o_ver = [r["verify_s"] for r in ours_runs]
    d_wall = [r["wall_s"] for r in dvc_runs]
    # ours' child also runs verify; "ours put" = child wall minus its own verify time.
    o_put_wall = [w - v for w, v in zip(o_wall, o_ver, strict=True)]
    row = {
        "case": label, "files": n_files, "mb": round(n_bytes / 1e6, 1),
        "ours_put_best_s": round(min(o_put_wall), 3),
        "ours_put_median_s": round(statistics.median(o_put_wall), 3),
        "ours_put_inproc_best_s": round(min(o_put), 3),
        "dvc_add_best_s": round(min(d_wall), 3) if d_wall else None,
        "dvc_add_median_s": round(statistics.median(d_wall), 3) if d_wall else None,
        "ours_verify_best_s": round(min(o_ver), 3),
        "ours_rss_mb": round(max(r["rss_mb"] for r in ours_runs), 1),
        "dvc_rss_mb": round(max(r["rss_mb"] for r in dvc_runs), 1) if dvc_runs else None,
    }
    best = min(o_put_wall)
    row["ours_files_per_s"] = round(n_files / best)
    row["ours_put_mb_per_s"] = round(n_bytes / 1e6 / best, 1)
    row["ours_verify_mb_per_s"] = round(n_bytes / 1e6 / min(o_ver), 1)
    if d_wall:
        row["speedup_best"] = round(min(d_wall) / best, 2)
        row["speedup_median"] = round(statistics.median(d_wall) / statistics.median(o_put_wall), 2)
    return row


def bench_small(workdir: Path, n: int, repeat: int, with_dvc: bool) -> dict:
    corpus = workdir / f"corpus-{n}"
    log(f"[small {n}] generating corpus ...")
    n_bytes = make_corpus(corpus, n)
    o_runs, d_runs = [], []
    for rep in range(repeat):
        o_runs.append(ours("tree", workdir / "store", [corpus]))
        log(f"[small {n}] rep {rep}: ours {o_runs[-1]['wall_s'] - o_runs[-1]['verify_s']:.2f}s "
            f"(verify {o_runs[-1]['verify_s']:.2f}s)")
        if with_dvc:
            d_runs.append(dvc_add(workdir, [corpus]))
            log(f"[small {n}] rep {rep}: dvc add {d_runs[-1]['wall_s']:.2f}s")
    return summarize(f"{n} small files", o_runs, d_runs, n, n_bytes)


def bench_large(workdir: Path, count: int, mb: int, repeat: int, with_dvc: bool) -> dict:
    log(f"[large {count}x{mb}MB] generating files ...")
    paths = make_large(workdir / "large", count, mb)
    n_bytes = sum(p.stat().st_size for p in paths)
    o_runs, d_runs = [], []
    for rep in range(repeat):
        o_runs.append(ours("files", workdir / "store", paths))
        log(f"[large] rep {rep}: ours {o_runs[-1]['wall_s']:.2f}s, rss {o_runs[-1]['rss_mb']:.0f} MB")
        if with_dvc:
            d_runs.append(dvc_add(workdir, paths))
            log(f"[large] rep {rep}: dvc add {d_runs[-1]['wall_s']:.2f}s, rss {d_runs[-1]['rss_mb']:.0f} MB")
    return summarize(f"{count} x {mb} MB files", o_runs, d_runs, count, n_bytes)


def bench_hash() -> list[dict]:
    rows = []
    big = os.urandom(256 << 20)
    rng = random.Random(1)
    docs = [" ".join(rng.choices(WORDS, k=rng.randint(150, 3000))).encode() for _ in range(10000)]
    small_bytes = sum(map(len, docs))
    for label, fn in (("xxh3-128", lambda b: xxhash.xxh3_128_hexdigest(b)),
                      ("md5", lambda b: hashlib.md5(b).hexdigest())):
        t = time.perf_counter()
        for _ in range(2):
            fn(big)
        big_gbs = 2 * len(big) / 1e9 / (time.perf_counter() - t)
        t = time.perf_counter()
        for d in docs:
            fn(d)
        small_gbs = small_bytes / 1e9 / (time.perf_counter() - t)
        rows.append({"hash": label, "large_gb_per_s": round(big_gbs, 2),
                     "docs_gb_per_s": round(small_gbs, 2)})
    rows.append({"hash": "ratio xxh3/md5",
                 "large_gb_per_s": round(rows[0]["large_gb_per_s"] / rows[1]["large_gb_per_s"], 1),
                 "docs_gb_per_s": round(rows[0]["docs_gb_per_s"] / rows[1]["docs_gb_per_s"], 1)})
    return rows


def table(rows: list[dict], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/msmbuild-bench-store"))
    ap.add_argument("--small", default="10000,100000", help="comma-separated file counts")
    ap.add_argument("--large", type=int, default=3, help="number of large files (0: skip)")
    ap.add_argument("--large-mb", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-dvc", action="store_true", help="skip the dvc side")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    with_dvc = not args.no_dvc and shutil.which("dvc") is not None

    rows = [bench_small(args.workdir, int(n), args.repeat, with_dvc)
            for n in args.small.split(",") if n]
    if args.large:
        rows.append(bench_large(args.workdir, args.large, args.large_mb,
                                max(1, min(args.repeat, 2)), with_dvc))
    hashes = bench_hash()

    cols = ["case", "files", "mb", "ours_put_best_s", "ours_put_median_s", "dvc_add_best_s",
            "dvc_add_median_s", "speedup_best", "speedup_median", "ours_files_per_s",
            "ours_put_mb_per_s", "ours_verify_best_s", "ours_verify_mb_per_s", "ours_rss_mb",
            "dvc_rss_mb"]
    print(table(rows, cols))
    print()
    print(table(hashes, ["hash", "large_gb_per_s", "docs_gb_per_s"]))
    if args.json:
        args.json.write_text(json.dumps({"store": rows, "hash": hashes}, indent=2))


if __name__ == "__main__":
    main()

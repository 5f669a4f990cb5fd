"""Documents/s through the anthropic backend vs a bare AsyncAnthropic + semaphore loop.

Both talk to the loopback API server (msmbuild.testing.fake_anthropic) running in its own
process with a fixed latency per request. The backend side is the whole path a stage
uses: run_requests (keys, store lookups, a store write per answer through the result
writer), the process-wide limiter, retries, usage and cost, on the backend's configured
HTTP transport (aiohttp by default). The bare side is the minimal client a user would
write: one default AsyncAnthropic, an asyncio.Semaphore, gather. A third side is the same
bare loop on the SDK's aiohttp transport, so the table separates what the transport buys
from what msmbuild's own path costs. Each level runs every side ``--repeats`` times,
alternating, and reports each side's median run.

    python bench/generate.py                      # latency 0.2 s, concurrency 8 32 128
    python bench/generate.py --levels 8 --n 200   # a quick look
"""

from __future__ import annotations

import os
import sys

# Benchmarks import each other as bench.<name>: put the repository root first on sys.path.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from msmbuild.config import AnthropicConfig, BatchConfig, Params  # noqa: E402
from msmbuild.generate.backends.anthropic_backend import AnthropicBackend  # noqa: E402
from msmbuild.generate.backends.base import GenRequest  # noqa: E402
from msmbuild.generate.calls import run_requests  # noqa: E402
from msmbuild.store import Store  # noqa: E402
from msmbuild.testing.fake_anthropic import spawn_server, stats_remote  # noqa: E402

MODEL = "claude-haiku-4-5"
KEY = "bench-fake-key"


def _requests(tag: str, n: int) -> list[GenRequest]:
    return [GenRequest(stage="documents", prompt=f"{tag}: write document {i}", max_tokens=1024)
            for i in range(n)]


def bare_loop(url: str, requests: list[GenRequest], concurrency: int, aiohttp: bool = False) -> float:
    """Seconds for a bare AsyncAnthropic + Semaphore loop to answer every request."""
    from anthropic import AsyncAnthropic, DefaultAioHttpClient

    async def main() -> None:
        http_client = DefaultAioHttpClient() if aiohttp else None
        client = AsyncAnthropic(base_url=url, api_key=KEY, http_client=http_client)
        sem = asyncio.Semaphore(concurrency)

        async def one(req: GenRequest) -> str:
            async with sem:
                msg = await client.messages.create(
                    model=MODEL, max_tokens=req.max_tokens,
                    messages=[{"role": "user", "content": req.prompt}],
                    extra_body={"temperature": req.temperature})
                return msg.content[0].text

        await asyncio.gather(*(one(r) for r in requests))
        await client.close()

    start = time.perf_counter()
    asyncio.run(main())
    return time.perf_counter() - start


STORE_PARENT = Path(".msmbuild")  # where a project's store lives; see --store-dir


def file_create_us(directory: Path, n: int = 300) -> float:
    """CPU µs to create (and write 3 kB to) one new file in directory: the store's unit cost."""
    probe = Path(tempfile.mkdtemp(prefix="probe-", dir=directory))
    start = time.process_time()
    for i in range(n):
        fd = os.open(probe / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, b"x" * 3000)
        os.close(fd)
    return (time.process_time() - start) / n * 1e6


def through_backend(url: str, requests: list[GenRequest], concurrency: int,
                    http_client: str = "aiohttp", store_dir: Path = STORE_PARENT) -> float:
    """Seconds for run_requests + AnthropicBackend (fresh store, every request a miss).

    The store is left in place: the caller removes store_dir's runs at the very end.
    Deleting thousands of files between runs would slow the next run's file creation
    (ext4 passes over inodes freed in the last ~30 s), a cost no real build pays.
    """
    cfg = AnthropicConfig(model=MODEL, base_url=url, batch=BatchConfig(enabled=False), http_client=http_client)
    store_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-", dir=store_dir))
    store = Store(tmp / "store")
    backend = AnthropicBackend(cfg, Params().prices, max_concurrency=concurrency, state_dir=tmp / "batches")
    start = time.perf_counter()
    _, stats, _ = run_requests(store, backend, requests, desc="bench", progress=False)
    elapsed = time.perf_counter() - start
    assert stats.misses == len(requests) and stats.errors == 0, stats
    return elapsed


def main(argv: list[str] | None = None) -> None:
    """Run every level and print the comparison table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="server seconds per request")
    parser.add_argument("--levels", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--n", type=int, default=0, help="requests per run (default 10 x concurrency, at least 200)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--http-client", choices=["aiohttp", "httpx"], default="aiohttp",
                        help="the backend's transport (backends.anthropic.http_client)")
    parser.add_argument("--store-dir", type=Path, default=STORE_PARENT,
                        help="parent of the fresh store each run writes (default .msmbuild, where a "
                             "project's store lives)")
    args = parser.parse_args(argv)
    os.environ["ANTHROPIC_API_KEY"] = KEY
    proc, url = spawn_server(latency_s=args.latency, answer_chars=2000)
    args.store_dir.mkdir(parents=True, exist_ok=True)
    runs_dir = Path(tempfile.mkdtemp(prefix="bench-generate-", dir=args.store_dir))  # removed at the end
    sides = {"bare": lambda u, r, c: bare_loop(u, r, c),
             "bare_aiohttp": lambda u, r, c: bare_loop(u, r, c, aiohttp=True),
             "backend": lambda u, r, c: through_backend(u, r, c, args.http_client, runs_dir)}
    rows = []
    create_us = [file_create_us(runs_dir)]
    try:
        bare_loop(url, _requests("warm-up", 100), 8)
        for level in args.levels:
            n = args.n or max(200, 10 * level)
            runs: dict[str, list[float]] = {side: [] for side in sides}
            for rep in range(args.repeats):
                for side, run in sides.items():
                    runs[side].append(n / run(url, _requests(f"{side}-{level}-{rep}", n), level))
            rate = {side: statistics.median(v) for side, v in runs.items()}
            rows.append((level, n, rate))
            print(f"concurrency {level}: " + ", ".join(
                f"{side} {' '.join(f'{x:.0f}' for x in v)}/s" for side, v in runs.items()), file=sys.stderr)
        max_in_flight = stats_remote(url)["max_in_flight"]
        create_us.append(file_create_us(runs_dir))
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(runs_dir, ignore_errors=True)
    print(f"latency {args.latency:g} s per request; median of {args.repeats} alternating runs; "
          f"msmbuild on {args.http_client}, store under {args.store_dir} (creating a file there: "
          f"{create_us[0]:.0f} µs CPU before the run, {create_us[1]:.0f} µs after); "
          f"server max in flight {max_in_flight}")
    print("| concurrency | requests | bare docs/s | bare on aiohttp docs/s | msmbuild docs/s "
          "| msmbuild / bare | msmbuild / bare on aiohttp | bare / (c/latency) | msmbuild / (c/latency) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for level, n, rate in rows:
        ideal = level / args.latency
        print(f"| {level} | {n} | {rate['bare']:.1f} | {rate['bare_aiohttp']:.1f} | {rate['backend']:.1f} "
              f"| {rate['backend'] / rate['bare']:.2f} | {rate['backend'] / rate['bare_aiohttp']:.2f} "
              f"| {rate['bare'] / ideal:.2f} | {rate['backend'] / ideal:.2f} |")


if __name__ == "__main__":
    main()

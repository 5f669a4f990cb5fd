"""Documents/s through the anthropic backend vs a bare AsyncAnthropic + semaphore loop.

Both talk to the loopback API server (msmbuild.testing.fake_anthropic) running in its own
process with a fixed latency per request. The backend side is the whole path a stage
uses: run_requests (keys, store lookups, a store write per answer), the process-wide
limiter, retries wrapper, usage and cost. The bare side is the minimal client a user
would write: one AsyncAnthropic, an asyncio.Semaphore, gather. Each level runs both sides
``--repeats`` times, alternating, and keeps each side's best run (the machine is shared).
A third side runs the backend with an on_result that writes to the store without
run_requests' lock, to show what the store's concurrent writers (one shared sync) give.

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


def bare_loop(url: str, requests: list[GenRequest], concurrency: int) -> float:
    """Seconds for a bare AsyncAnthropic + Semaphore loop to answer every request."""
    from anthropic import AsyncAnthropic

    async def main() -> None:
        client = AsyncAnthropic(base_url=url, api_key=KEY)
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


def through_backend(url: str, requests: list[GenRequest], concurrency: int) -> float:
    """Seconds for run_requests + AnthropicBackend (fresh store, every request a miss)."""
    cfg = AnthropicConfig(model=MODEL, base_url=url, batch=BatchConfig(enabled=False))
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        store = Store(Path(tmp) / "store")
        backend = AnthropicBackend(cfg, Params().prices, max_concurrency=concurrency,
                                   state_dir=Path(tmp) / "batches")
        start = time.perf_counter()
        _, stats, _ = run_requests(store, backend, requests, desc="bench", progress=False)
        elapsed = time.perf_counter() - start
    assert stats.misses == len(requests) and stats.errors == 0, stats
    return elapsed


def through_backend_direct(url: str, requests: list[GenRequest], concurrency: int) -> float:
    """Seconds for AnthropicBackend with on_result writing to the store without a lock.

    The same store write per answer as run_requests (value object, sync, action record),
    minus run_requests' lock around it: shows what concurrent writers sharing one sync
    would give.
    """
    from msmbuild.generate.calls import call_key

    cfg = AnthropicConfig(model=MODEL, base_url=url, batch=BatchConfig(enabled=False))
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        store = Store(Path(tmp) / "store")
        backend = AnthropicBackend(cfg, Params().prices, max_concurrency=concurrency,
                                   state_dir=Path(tmp) / "batches")
        start = time.perf_counter()
        keys = [call_key(store, backend, r) for r in requests]
        assert all(store.lookup_json(k) is None for k in keys)

        def on_result(i, res) -> None:
            store.save_json(keys[i], res.to_json(), {"kind": "generate", "model": res.model,
                                                     "cost_usd": res.cost_usd})

        errors = backend.generate(requests, on_result)
        elapsed = time.perf_counter() - start
    assert not errors, errors
    return elapsed


def main(argv: list[str] | None = None) -> None:
    """Run every level and print the comparison table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="server seconds per request")
    parser.add_argument("--levels", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--n", type=int, default=0, help="requests per run (default 10 x concurrency, at least 200)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ["ANTHROPIC_API_KEY"] = KEY
    proc, url = spawn_server(latency_s=args.latency, answer_chars=2000)
    rows = []
    try:
        for level in args.levels:
            n = args.n or max(200, 10 * level)
            ideal = level / args.latency
            bare_best = backend_best = direct_best = float("inf")
            for rep in range(args.repeats):
                bare_best = min(bare_best, bare_loop(url, _requests(f"bare-{level}-{rep}", n), level))
                backend_best = min(backend_best, through_backend(url, _requests(f"msm-{level}-{rep}", n), level))
                direct_best = min(direct_best, through_backend_direct(
                    url, _requests(f"direct-{level}-{rep}", n), level))
            bare_rate, backend_rate, direct_rate = n / bare_best, n / backend_best, n / direct_best
            rows.append((level, n, bare_rate, backend_rate, backend_rate / bare_rate,
                         bare_rate / ideal, backend_rate / ideal, direct_rate / bare_rate))
            print(f"concurrency {level}: bare {bare_rate:.1f}/s, backend {backend_rate:.1f}/s, "
                  f"backend with unlocked store writes {direct_rate:.1f}/s", file=sys.stderr)
        max_in_flight = stats_remote(url)["max_in_flight"]
    finally:
        proc.terminate()
        proc.wait()
    print(f"latency {args.latency:g} s per request; server max in flight {max_in_flight}")
    print("| concurrency | requests | bare docs/s | run_requests + backend docs/s | ratio to bare "
          "| bare / (c/latency) | backend / (c/latency) | ratio, unlocked store writes |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for level, n, bare_rate, backend_rate, ratio, bare_frac, backend_frac, direct_ratio in rows:
        print(f"| {level} | {n} | {bare_rate:.1f} | {backend_rate:.1f} | {ratio:.2f} | {bare_frac:.2f} "
              f"| {backend_frac:.2f} | {direct_ratio:.2f} |")


if __name__ == "__main__":
    main()

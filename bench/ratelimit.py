"""Generation under an enforced rate limit: msmbuild vs a bare SDK loop with default retries.

The loopback API server (msmbuild.testing.fake_anthropic, its own process) enforces the
API's per-minute token buckets (requests, input tokens, output tokens; capacity = the
per-minute limit, refilled continuously), answers 429 + retry-after when a request does
not fit, and reports every bucket in ``anthropic-ratelimit-*`` headers. Both sides keep
50 requests in flight and send the same kind of request (a ~2,000-character prompt,
max_tokens 1024, ~500-token answers):

- msmbuild: run_requests + AnthropicBackend (fresh store), paced by its rate budget;
- bare: one default AsyncAnthropic (the SDK's own 2 retries, honouring retry-after), an
  asyncio.Semaphore, gather.

Two limit settings, each sized so that the requests take ``--seconds`` beyond the first
full bucket: ``requests`` (requests per minute bind) and ``tokens`` (output tokens per
minute bind, input tokens close behind). Each run gets a fresh server: buckets full.

Reported per side: requests that succeeded, share of answers that were 429, seconds, the
time the limit allows (for the binding kind k, (charged_k - limit_k) / (limit_k / 60) +
one latency: what was charged beyond a full bucket, at the refill rate, and the last
answer; for output tokens plus max_tokens less one answer, since the API admits a request
only when its max_tokens fit), and throughput as a fraction of the binding limit
(allowed / seconds).

    python bench/ratelimit.py                 # both settings, ~60 s each per side
    python bench/ratelimit.py --seconds 20    # a quick look
"""

from __future__ import annotations

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from msmbuild.config import AnthropicConfig, BatchConfig, Params  # noqa: E402
from msmbuild.generate.backends.anthropic_backend import AnthropicBackend  # noqa: E402
from msmbuild.generate.backends.base import GenRequest  # noqa: E402
from msmbuild.generate.calls import run_requests  # noqa: E402
from msmbuild.store import Store  # noqa: E402
from msmbuild.testing.fake_anthropic import spawn_server, stats_remote  # noqa: E402

MODEL = "claude-haiku-4-5"
KEY = "bench-fake-key"
MAX_TOKENS = 1024
ANSWER_CHARS = 2000  # ~500 output tokens (the server counts 4 characters a token)
PROMPT_CHARS = 2000  # ~500 input tokens
CONCURRENCY = 50


def settings(seconds: float) -> dict[str, tuple[dict[str, int], int]]:
    """name -> (per-minute limits, requests): sized so the run lasts `seconds` past a full bucket."""
    grow = 1 + seconds / 60
    rpm = 300
    otpm = 30_000
    out_per_request = ANSWER_CHARS // 4
    return {
        "requests": ({"requests": rpm, "input-tokens": 2_000_000, "output-tokens": 400_000},
                     int(rpm * grow)),
        "tokens": ({"requests": 4_000, "input-tokens": 40_000, "output-tokens": otpm},
                   int(otpm / out_per_request * grow)),
    }


def _requests(tag: str, n: int) -> list[GenRequest]:
    filler = ("The assistant weighs each request against the spec and explains its choice. " * 40)
    return [GenRequest(stage="documents", max_tokens=MAX_TOKENS,
                       prompt=f"{tag}: write document {i}. {filler}"[:PROMPT_CHARS]) for i in range(n)]


def bare_loop(url: str, requests: list[GenRequest]) -> int:
    """Failed requests of a bare AsyncAnthropic (default retries) + Semaphore loop."""
    from anthropic import AsyncAnthropic

    async def main() -> int:
        client = AsyncAnthropic(base_url=url, api_key=KEY)
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(req: GenRequest) -> str:
            async with sem:
                msg = await client.messages.create(
                    model=MODEL, max_tokens=req.max_tokens,
                    messages=[{"role": "user", "content": req.prompt}],
                    extra_body={"temperature": req.temperature})
                return msg.content[0].text

        results = await asyncio.gather(*(one(r) for r in requests), return_exceptions=True)
        await client.close()
        return sum(isinstance(r, BaseException) for r in results)

    return asyncio.run(main())


def through_msmbuild(url: str, requests: list[GenRequest], root: Path) -> int:
    """Failed requests of run_requests + AnthropicBackend (fresh store)."""
    cfg = AnthropicConfig(model=MODEL, base_url=url, batch=BatchConfig(enabled=False))
    tmp = Path(tempfile.mkdtemp(prefix="run-", dir=root))
    backend = AnthropicBackend(cfg, Params().prices, max_concurrency=CONCURRENCY, state_dir=tmp / "batches")
    _, stats, _ = run_requests(Store(tmp / "store"), backend, requests, desc="bench", progress=False)
    return stats.errors


def measure(side: str, limits: dict[str, int], n: int, root: Path, latency: float) -> dict[str, Any]:
    """One run of one side against a fresh server (a new organization: full buckets, and a
    new base URL, so msmbuild's process-wide budget starts knowing nothing)."""
    proc, url = spawn_server(latency_s=latency, answer_chars=ANSWER_CHARS, rate_limits=limits)
    try:
        reqs = _requests(side, n)
        start = time.perf_counter()
        failed = bare_loop(url, reqs) if side == "bare" else through_msmbuild(url, reqs, root)
        elapsed = time.perf_counter() - start
        st = stats_remote(url)
    finally:
        proc.terminate()
        proc.wait()
    charged = st["rate_charged"]
    # the binding kind: the most charged beyond its full bucket, relative to its rate
    ok = max(1, n - failed)
    # The API admits a request only when max_tokens output tokens are in the bucket, so the
    # last request needs (max_tokens - its answer) more than it finally uses.
    upfront = {"output-tokens": max(0.0, MAX_TOKENS - charged.get("output-tokens", 0) / ok)}
    allowed = {k: max(0.0, charged.get(k, 0) + upfront.get(k, 0.0) - lim) * 60 / lim + latency
               for k, lim in limits.items()}
    binding = max(allowed, key=allowed.__getitem__)
    sent = st["endpoints"].get("messages", 0)
    return {"side": side, "n": n, "ok": n - failed, "failed": failed, "sent": sent,
            "429": st["rate_limited"], "share_429": st["rate_limited"] / max(1, sent),
            "seconds": elapsed, "binding": binding, "allowed_s": allowed[binding],
            "fraction": allowed[binding] / elapsed}


def main(argv: list[str] | None = None) -> None:
    """Run both settings for both sides and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="how long each setting's requests take past a full bucket")
    parser.add_argument("--latency", type=float, default=0.2, help="server seconds per request")
    parser.add_argument("--settings", nargs="+", choices=["requests", "tokens"], default=["requests", "tokens"])
    parser.add_argument("--sides", nargs="+", choices=["msmbuild", "bare"], default=["msmbuild", "bare"])
    args = parser.parse_args(argv)
    os.environ["ANTHROPIC_API_KEY"] = KEY
    import anthropic  # noqa: F401 - imported once, outside every timed run

    root = Path(tempfile.mkdtemp(prefix="bench-ratelimit-"))
    rows = []
    try:
        for name in args.settings:
            limits, n = settings(args.seconds)[name]
            for side in args.sides:
                row = measure(side, limits, n, root, args.latency) | {"setting": name, "limits": limits}
                rows.append(row)
                print(f"{name} {side}: {row}", file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"latency {args.latency:g} s per request, {CONCURRENCY} in flight, max_tokens {MAX_TOKENS}, "
          f"~{ANSWER_CHARS // 4} output and ~{PROMPT_CHARS // 4} input tokens a request; buckets full at the start")
    print("| setting (per minute) | side | requests | succeeded | answers 429 | share 429 | seconds "
          "| limit allows (s) | fraction of binding limit |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        limits = ", ".join(f"{k} {v:,}" for k, v in r["limits"].items())
        print(f"| {r['setting']}: {limits} (binds: {r['binding']}) | {r['side']} | {r['n']} | {r['ok']} "
              f"| {r['429']} | {r['share_429']:.1%} | {r['seconds']:.1f} | {r['allowed_s']:.1f} "
              f"| {r['fraction']:.2f} |")


if __name__ == "__main__":
    main()

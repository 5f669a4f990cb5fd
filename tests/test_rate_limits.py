"""Per-minute rate limits: the loopback server's token buckets and headers, the client's
rate budget (learned from headers, reservations settled to use, FIFO waits woken by
refunds), and the anthropic backend filling a limit without being answered 429."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from msmbuild.config import AnthropicConfig, BatchConfig, Params
from msmbuild.generate.backends._ratelimit import RateBudget, pause_from_headers
from msmbuild.generate.backends.anthropic_backend import AnthropicBackend
from msmbuild.generate.backends.base import GenRequest
from msmbuild.testing import FakeAnthropic

MODEL = "claude-haiku-4-5"
HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}


def post(server, max_tokens=100, prompt="hi"):
    return httpx.post(f"{server.url}/v1/messages", headers=HEADERS, json={
        "model": MODEL, "max_tokens": max_tokens, "messages": [{"role": "user", "content": prompt}]})


def test_server_answers_429_with_retry_after_once_a_bucket_is_empty():
    with FakeAnthropic(rate_limits={"requests": 3}) as server:
        answers = [post(server) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        ok, limited = answers[2], answers[3]
        assert ok.headers["anthropic-ratelimit-requests-limit"] == "3"
        assert ok.headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert "anthropic-ratelimit-requests-reset" in ok.headers
        assert limited.json()["error"]["type"] == "rate_limit_error"
        assert int(limited.headers["retry-after"]) >= 1  # 3 a minute: one more in 20 s
        assert server.stats()["rate_limited"] == 1
        assert server.stats()["rate_charged"]["requests"] == 3


def test_server_charges_max_tokens_up_front_and_settles_to_the_answer():
    with FakeAnthropic(rate_limits={"output-tokens": 1000, "input-tokens": 10_000}, answer_chars=40) as server:
        first = post(server, max_tokens=600)
        assert first.status_code == 200
        used = first.json()["usage"]["output_tokens"]
        remaining = int(first.headers["anthropic-ratelimit-output-tokens-remaining"])
        assert 1000 - used <= remaining <= 1000 - used + 2  # refilled a little meanwhile
        assert "anthropic-ratelimit-tokens-remaining" in first.headers
        assert "anthropic-ratelimit-requests-limit" not in first.headers  # not enforced, not named
        too_big = post(server, max_tokens=remaining + 50)  # the estimate does not fit: refused
        assert too_big.status_code == 429 and "retry-after" in too_big.headers
        counted = int(first.headers["anthropic-ratelimit-input-tokens-remaining"])
        assert counted == 10_000 - first.json()["usage"]["input_tokens"]


def test_server_without_limits_sends_no_ratelimit_headers():
    with FakeAnthropic() as server:
        answer = post(server)
        assert answer.status_code == 200
        assert not [h for h in answer.headers if h.startswith("anthropic-ratelimit-")]


def _headers(**kinds: tuple[int, int]) -> dict[str, str]:
    out = {}
    for kind, (limit, remaining) in kinds.items():
        kind = kind.replace("_", "-")
        out[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
        out[f"anthropic-ratelimit-{kind}-remaining"] = str(remaining)
    return out


def test_budget_learns_limits_and_never_holds_more_than_the_api_reports():
    budget = RateBudget()
    assert budget.settle({}, {}, _headers(requests=(60, 10), output_tokens=(1000, 500))) == {
        "requests", "output-tokens"}
    assert budget.limits == {"requests": 60, "output-tokens": 1000}
    budget.settle({}, {}, _headers(requests=(60, 4), output_tokens=(1000, 900)))
    left = budget.remaining()
    assert 4 <= left["requests"] < 5  # lowered to what the API reports
    assert 500 <= left["output-tokens"] < 510  # never raised by a report
    budget.settle({}, {}, _headers(requests=(60, 4)))  # output tokens no longer limited
    assert set(budget.limits) == {"requests"}


def test_budget_sends_one_probe_until_an_answer_names_the_limits():
    async def main() -> None:
        budget = RateBudget()
        assert await budget.reserve({"requests": 1}) == {}  # the probe goes unpaced
        second = asyncio.create_task(budget.reserve({"requests": 1}))
        await asyncio.sleep(0.05)
        assert not second.done()  # waits for the probe's answer
        budget.settle({}, {}, _headers(requests=(600, 100)))
        assert await asyncio.wait_for(second, 5) == {"requests": 1}

    asyncio.run(main())


def test_budget_waits_in_order_and_a_refund_wakes_the_first_waiter():
    async def main() -> None:
        budget = RateBudget()
        budget.settle({}, {}, _headers(output_tokens=(60, 0)))  # refills 1 token a second
        first = asyncio.create_task(budget.reserve({"output-tokens": 50}))
        second = asyncio.create_task(budget.reserve({"output-tokens": 1}))
        await asyncio.sleep(0.05)
        assert not first.done() and not second.done()  # the second queues behind the first
        budget.refund({"output-tokens": 55})  # an answer gives its reservation back
        assert await asyncio.wait_for(first, 5) == {"output-tokens": 50}
        assert await asyncio.wait_for(second, 5) == {"output-tokens": 1}

    asyncio.run(main())


def test_tracked_kinds_do_not_pause_until_reset():
    exhausted = {"anthropic-ratelimit-requests-remaining": "0",
                 "anthropic-ratelimit-requests-reset": "2099-01-01T00:00:00Z"}
    assert pause_from_headers(exhausted) > 60  # untracked: wait for the reset
    assert pause_from_headers(exhausted, tracked={"requests"}) == 0  # the budget paces it


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-key")


def _backend(server, tmp_path, concurrency: int) -> AnthropicBackend:
    cfg = AnthropicConfig(model=MODEL, base_url=server.url, batch=BatchConfig(enabled=False))
    return AnthropicBackend(cfg, Params().prices, max_concurrency=concurrency, state_dir=tmp_path / "b")


@pytest.mark.parametrize("limits", [
    {"requests": 120},  # 122 requests: the last two wait for the bucket to refill
    {"output-tokens": 600, "input-tokens": 100_000},  # 20 in flight would ask for 2,000 up front
])
def test_backend_fills_the_limit_without_429(tmp_path, limits):
    n = 122 if "requests" in limits else 24
    with FakeAnthropic(rate_limits=limits, latency_s=0.01, answer_chars=20) as server:
        got: dict[int, object] = {}
        requests = [GenRequest(stage="documents", prompt=f"d{i}", max_tokens=100) for i in range(n)]
        errors = _backend(server, tmp_path, concurrency=20).generate(requests, got.__setitem__)
        stats = server.stats()
    assert errors == [] and sorted(got) == list(range(n))
    assert stats["rate_limited"] == 0 and stats["endpoints"]["messages"] == n
    assert stats["max_in_flight"] > 1  # paced, not serialized


def _corpus_request(prompt: str) -> GenRequest:
    """A corpus call: the whole spec shared as context, every structured stage's tool."""
    from msmbuild.generate.stages import STAGE_SCHEMAS

    spec = "The model is honest and explains its reasons. " * 600  # ~7k tokens: over the minimum
    return GenRequest(stage="document", prompt=prompt, context=spec, shared_schemas=STAGE_SCHEMAS,
                      max_tokens=100)


def test_server_charges_cached_prefix_only_when_written(tmp_path):
    """usage and the input-token bucket agree: the shared prefix (tools + spec) is charged
    when a request writes it, not when one reads it."""
    with FakeAnthropic(rate_limits={"input-tokens": 1_000_000}, answer_chars=20) as server:
        backend = _backend(server, tmp_path, concurrency=1)
        usages = []
        for prompt in ("first document", "second document"):
            params = backend.params(_corpus_request(prompt))
            assert "cache_control" in params["system"][0] and len(params["tools"]) > 1
            answer = httpx.post(f"{server.url}/v1/messages", headers=HEADERS, json=params)
            assert answer.status_code == 200
            usages.append(answer.json()["usage"])
        charged = server.stats()["rate_charged"]["input-tokens"]
    written, read = usages
    assert written["cache_creation_input_tokens"] > 0 and written["cache_read_input_tokens"] == 0
    assert read["cache_read_input_tokens"] == written["cache_creation_input_tokens"]
    assert charged == (written["input_tokens"] + written["cache_creation_input_tokens"]
                       + read["input_tokens"])


def test_budget_does_not_count_a_cached_shared_prefix(tmp_path):
    """The client's input-token estimate leaves out the cached prefix, tools included."""
    from msmbuild.generate.backends.anthropic_backend import _input_chars

    with FakeAnthropic() as server:
        backend = _backend(server, tmp_path, concurrency=1)
        req = _corpus_request("a document")
        params = backend.params(req)
    chars, prefix = _input_chars(params)
    assert prefix is not None and prefix.startswith(str(params["tools"])) and prefix.endswith(req.context)
    budget = RateBudget()
    budget.learn(MODEL, prefix, chars, (chars // 4, len(prefix) // 4))
    assert budget.probably_cached(MODEL, prefix)
    assert chars - len(prefix) == len(req.prompt)  # what is charged on a cache read

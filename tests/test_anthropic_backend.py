"""The anthropic backend through the real SDK against the loopback server: answers,
caching, structured output, every injected fault, shared concurrency, Message Batches."""

from __future__ import annotations

import pytest

from msmbuild.config import AnthropicConfig, BatchConfig, Params, Price
from msmbuild.errors import BackendError
from msmbuild.generate.backends._ratelimit import limiter_for, pause_from_headers
from msmbuild.generate.backends.anthropic_backend import AnthropicBackend
from msmbuild.generate.backends.base import GenRequest
from msmbuild.generate.backends.pricing import cost_usd
from msmbuild.testing import FakeAnthropic

MODEL = "claude-haiku-4-5"
SCHEMA = {"type": "object", "required": ["ideas"], "properties": {
    "ideas": {"type": "array", "minItems": 2, "items": {
        "type": "object", "required": ["idea", "suitable"],
        "properties": {"idea": {"type": "string"}, "suitable": {"type": "boolean"}}}}}}


@pytest.fixture
def server():
    with FakeAnthropic(batch_latency_s=0.02) as srv:
        yield srv


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-key")


def make(server, tmp_path, concurrency=4, batch=None, **kw) -> AnthropicBackend:
    batch = batch or {"enabled": False}
    batch.setdefault("poll_initial_s", 0.01)
    batch.setdefault("poll_max_s", 0.05)
    cfg = AnthropicConfig(model=MODEL, base_url=server.url, batch=BatchConfig(**batch), **kw)
    return AnthropicBackend(cfg, Params().prices, max_concurrency=concurrency, state_dir=tmp_path / "batches")


def reqs(n, **kw):
    return [GenRequest(stage="documents", prompt=f"write document {i}", **kw) for i in range(n)]


def run(backend, requests):
    got = {}
    errors = backend.generate(requests, lambda i, r: got.__setitem__(i, r))
    return got, errors


def test_messages_answers_usage_cost_identity(server, tmp_path):
    backend = make(server, tmp_path)
    got, errors = run(backend, reqs(6))
    assert errors == [] and sorted(got) == list(range(6))
    for i, res in got.items():
        assert res.text.startswith(f"Answer to: write document {i}\n")
        assert res.usage.output_tokens > 0 and res.usage.input_tokens > 0
        assert res.cost_usd == pytest.approx(cost_usd(MODEL, res.usage, Params().prices, batch=False))
        assert res.backend == "anthropic" and res.model == MODEL and not res.batch
    assert server.stats()["endpoints"]["messages"] == 6
    assert server.stats()["endpoints"]["models"] == 1  # the preflight: one Models API call
    # kept alive and reused, never one per request (+1: the preflight's own client)
    assert server.stats()["connections"] <= 5
    assert backend.identity() == {"backend": "anthropic", "model": MODEL}


LONG_SPEC = "SPEC " * 4000  # 20k characters: over claude-haiku-4-5's 4096-token minimum


def test_context_is_cached_system_block(server, tmp_path):
    backend = make(server, tmp_path, concurrency=4)
    got, _ = run(backend, reqs(6, context=LONG_SPEC, system="Write one document."))
    created = [r.usage.cache_creation_input_tokens for r in got.values()]
    # the first request of a prefix goes alone: one cache write, every other request reads it
    assert sorted(created) == [0] * 5 + [len(LONG_SPEC) // 4]
    reads = [r for r in got.values() if r.usage.cache_read_input_tokens]
    assert len(reads) == 5 and all(r.usage.cache_read_input_tokens == len(LONG_SPEC) // 4 for r in reads)
    assert all(r.meta["cache_saving_usd"] > 0 for r in reads)
    writer = next(r for r in got.values() if r.usage.cache_creation_input_tokens)
    assert reads[0].cost_usd < writer.cost_usd and writer.meta["cache_saving_usd"] < 0
    assert server.stats()["cache_marks_below_minimum"] == 0
    off = make(server, tmp_path, concurrency=1, prompt_caching=False)
    got, _ = run(off, reqs(1, context=LONG_SPEC))
    assert got[0].usage.cache_read_input_tokens == 0 and got[0].usage.cache_creation_input_tokens == 0


def test_short_context_is_not_marked(server, tmp_path):
    backend = make(server, tmp_path, concurrency=1)
    params = backend.params(GenRequest(stage="d", prompt="p", context="SPEC " * 400))
    assert "cache_control" not in params["system"][0]  # 500 tokens < 4096: marking would cache nothing
    got, _ = run(backend, reqs(2, context="SPEC " * 400))
    assert all(r.usage.cache_read_input_tokens == r.usage.cache_creation_input_tokens == 0 for r in got.values())
    assert server.stats()["cache_marks_below_minimum"] == 0


def test_server_enforces_the_cacheable_minimum(server):
    import anthropic

    client = anthropic.Anthropic(api_key="k", base_url=server.url)
    short = [{"type": "text", "text": "SPEC " * 400, "cache_control": {"type": "ephemeral"}}]
    for _ in range(2):
        msg = client.messages.create(model=MODEL, max_tokens=10, system=short,
                                     messages=[{"role": "user", "content": "hi"}])
        assert msg.usage.cache_creation_input_tokens == msg.usage.cache_read_input_tokens == 0
        assert msg.usage.input_tokens >= 500  # billed as plain input
    assert server.stats()["cache_marks_below_minimum"] == 2
    mid = [{"type": "text", "text": "SPEC " * 1000, "cache_control": {"type": "ephemeral"}}]  # 1250 tokens
    usage = {m: client.messages.create(model=m, max_tokens=10, system=mid,
                                       messages=[{"role": "user", "content": "hi"}]).usage
             for m in ("claude-sonnet-4-6", MODEL)}
    assert usage["claude-sonnet-4-6"].cache_creation_input_tokens == 1250  # minimum 1024: cached
    assert usage[MODEL].cache_creation_input_tokens == 0  # minimum 4096: not cached
    assert server.stats()["cache_marks_below_minimum"] == 3
    client.close()


def test_preflight_refuses_retired_and_unknown_models(server, tmp_path):
    for model in ("claude-opus-4-1", "claude-sonnet-4-5", "claude-nope"):
        backend = AnthropicBackend(
            AnthropicConfig(model=model, base_url=server.url, batch=BatchConfig(enabled=False)),
            {model: Price(input=1.0, output=1.0)}, state_dir=tmp_path / "b")
        with pytest.raises(BackendError, match=rf"backends\.anthropic\.model: '{model}'"):
            run(backend, reqs(1))
    assert server.stats()["endpoints"].get("messages", 0) == 0  # nothing was spent


def test_structured_answer_validated_and_reasked(server, tmp_path):
    backend = make(server, tmp_path)
    server.inject("malformed", times=1, match="document 1")
    got, errors = run(backend, reqs(3, schema=SCHEMA))
    assert errors == []
    for res in got.values():
        assert len(res.data["ideas"]) >= 2 and all(isinstance(x["suitable"], bool) for x in res.data["ideas"])
    assert got[1].meta["reasks"] == 1 and got[0].meta["reasks"] == 0
    assert server.stats()["prompts"]["write document 1"] == 2


def test_structured_non_object_schema_is_wrapped(server, tmp_path):
    got, errors = run(make(server, tmp_path), reqs(2, schema={"type": "array", "items": {"type": "string"}}))
    assert errors == [] and all(isinstance(r.data, list) and r.data for r in got.values())


def test_reasks_exhausted_fail_only_that_item(server, tmp_path):
    server.inject("malformed", times=-1, match="document 2")
    got, errors = run(make(server, tmp_path, max_reasks=2), reqs(4, schema=SCHEMA))
    assert sorted(got) == [0, 1, 3]
    assert [e.index for e in errors] == [2] and "malformed after 2 re-asks" in str(errors[0])
    assert server.stats()["prompts"]["write document 2"] == 3


@pytest.mark.parametrize("http_client", ["aiohttp", "httpx"])
@pytest.mark.parametrize("kind", ["429", "529", "500", "drop"])
def test_transient_faults_are_retried(server, tmp_path, kind, http_client):
    server.inject(kind, times=3, retry_after=0.01)
    got, errors = run(make(server, tmp_path, http_client=http_client), reqs(5))
    assert errors == [] and sorted(got) == list(range(5))
    stats = server.stats()
    assert stats["faults_fired"][kind] == 3 and stats["endpoints"]["messages"] == 8


def test_retries_exhausted_is_a_per_item_error(server, tmp_path):
    server.inject("529", times=-1, match="document 1", retry_after=0.01)
    got, errors = run(make(server, tmp_path, max_retries=2), reqs(3))
    assert sorted(got) == [0, 2]
    assert [e.index for e in errors] == [1] and "gave up after 2 retries" in str(errors[0])
    assert "overloaded_error" in str(errors[0])
    assert server.stats()["prompts"]["write document 1"] == 3


def test_invalid_request_fails_item_without_retry(server, tmp_path):
    server.inject("400", times=-1, match="document 0")
    got, errors = run(make(server, tmp_path), reqs(3))
    assert sorted(got) == [1, 2] and [e.index for e in errors] == [0]
    assert "invalid_request_error" in str(errors[0])
    assert server.stats()["prompts"]["write document 0"] == 1


@pytest.mark.parametrize("kind", ["401", "402"])
def test_non_healing_error_stops_run_keeping_completed(server, tmp_path, kind):
    server.inject(kind, times=-1, match="document 3")
    got = {}
    with pytest.raises(BackendError, match="refused") as info:
        make(server, tmp_path, concurrency=1).generate(reqs(6), lambda i, r: got.__setitem__(i, r))
    assert sorted(got) == [0, 1, 2]  # answered before the fatal error: handed on, kept
    assert "sk-test-key" not in str(info.value)
    assert server.stats()["prompts"]["write document 3"] == 1  # never retried


def test_missing_api_key_names_env_var(server, tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(BackendError, match="ANTHROPIC_API_KEY.*api_key_env"):
        run(make(server, tmp_path), reqs(1))


def test_concurrency_is_bounded_and_shared(server, tmp_path):
    server.state.latency_s = 0.03
    backend = make(server, tmp_path, concurrency=3)
    import threading

    results = []
    threads = [threading.Thread(target=lambda: results.append(run(backend, reqs(12)))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = server.stats()
    assert stats["endpoints"]["messages"] == 24
    assert 2 <= stats["max_in_flight"] <= 3  # two threads, two event loops, one budget
    assert limiter_for(backend.base_url, 3).in_use == 0


def test_ratelimit_headers_pause():
    import httpx

    assert pause_from_headers({"anthropic-ratelimit-requests-remaining": "5"}) == 0
    assert 0 < pause_from_headers({"anthropic-ratelimit-tokens-remaining": "0"}) <= 1.0
    # the SDK's headers object (the fast path scans its raw bytes first)
    assert pause_from_headers(httpx.Headers({"Anthropic-Ratelimit-Requests-Remaining": "5"})) == 0
    assert 0 < pause_from_headers(httpx.Headers({"Anthropic-Ratelimit-Tokens-Remaining": "0"})) <= 1.0


# -- Message Batches ---------------------------------------------------------------------
def test_batches_used_over_threshold_with_discount(server, tmp_path):
    backend = make(server, tmp_path, batch={"enabled": True, "threshold": 4, "chunk_size": 3})
    got, errors = run(backend, reqs(7))
    assert errors == [] and sorted(got) == list(range(7))
    stats = server.stats()
    assert stats["endpoints"].get("messages", 0) == 0
    assert stats["endpoints"]["batches_create"] == 3 and stats["batch_items"] == 7
    res = got[0]
    assert res.batch and res.cost_usd == pytest.approx(cost_usd(MODEL, res.usage, Params().prices, batch=True))
    assert not list((tmp_path / "batches").glob("*.json"))  # ledger emptied once collected


def test_below_threshold_uses_messages(server, tmp_path):
    run(make(server, tmp_path, batch={"enabled": True, "threshold": 10}), reqs(3))
    assert server.stats()["endpoints"]["messages"] == 3


def test_errored_and_expired_items_resubmitted(server, tmp_path):
    server.inject("batch_errored", match="document 1")
    server.inject("batch_expired", match="document 2")
    got, errors = run(make(server, tmp_path, batch={"enabled": True, "threshold": 1}), reqs(4))
    assert errors == [] and sorted(got) == list(range(4))
    stats = server.stats()
    assert stats["endpoints"]["batches_create"] == 2 and stats["batch_items"] == 6
    assert stats["endpoints"].get("messages", 0) == 0


def test_items_beyond_max_resubmits_go_to_messages(server, tmp_path):
    server.inject("batch_expired", times=-1, match="document 0")
    got, errors = run(make(server, tmp_path, batch={"enabled": True, "threshold": 1, "max_resubmits": 1}),
                      reqs(3))
    assert errors == [] and sorted(got) == [0, 1, 2]
    assert not got[0].batch and got[1].batch
    stats = server.stats()
    assert stats["prompts"]["write document 0"] == 3  # batch, one resubmit, then Messages
    assert stats["endpoints"]["messages"] == 1


def test_batch_timeout_falls_back_to_messages(server, tmp_path):
    server.inject("batch_hang", times=1)
    got, errors = run(make(server, tmp_path, batch={"enabled": True, "threshold": 1, "timeout_s": 0.2}),
                      reqs(3))
    assert errors == [] and sorted(got) == [0, 1, 2] and not any(r.batch for r in got.values())
    stats = server.stats()
    assert stats["endpoints"]["batches_cancel"] == 1 and stats["endpoints"]["messages"] == 3


def test_malformed_batch_answer_reasked_through_messages(server, tmp_path):
    server.inject("malformed", times=1, match="document 1")
    got, errors = run(make(server, tmp_path, batch={"enabled": True, "threshold": 1}), reqs(3, schema=SCHEMA))
    assert errors == [] and got[1].meta["reasks"] == 1 and len(got[1].data["ideas"]) >= 2
    assert server.stats()["endpoints"]["messages"] == 1


def test_invalid_batch_item_errors_without_resubmit(server, tmp_path):
    server.inject("batch_invalid", times=-1, match="document 1")
    got, errors = run(make(server, tmp_path, batch={"enabled": True, "threshold": 1}), reqs(3))
    assert sorted(got) == [0, 2] and [e.index for e in errors] == [1]
    assert "invalid_request_error" in str(errors[0])
    assert server.stats()["prompts"]["write document 1"] == 1


def test_sampling_params_reach_the_wire(server, tmp_path):
    run(make(server, tmp_path, batch={"enabled": True, "threshold": 2}), reqs(2, temperature=0.8))
    run(make(server, tmp_path), reqs(1, temperature=0.5))
    (batch,) = server.state.batches.values()
    assert {r["params"]["temperature"] for r in batch["_requests"]} == {0.8}
    assert server.state.recent[-1]["temperature"] == 0.5
    run(make(server, tmp_path), reqs(1, temperature=1.0))
    assert "temperature" not in server.state.recent[-1]  # the API default is not sent


def test_store_failure_in_on_result_stops_the_run(server, tmp_path):
    from msmbuild.errors import StoreError

    def on_result(i, res):
        if i == 1:
            raise StoreError("disk full")

    with pytest.raises(StoreError, match="disk full"):
        make(server, tmp_path, concurrency=1).generate(reqs(5), on_result)


def test_shared_prefix_sends_every_stage_tool_only_when_cacheable(server, tmp_path):
    backend = make(server, tmp_path)
    other = {"type": "object", "properties": {"x": {"type": "string"}}}
    shared = {"ideas": SCHEMA, "assertions": other}

    def params(stage, schema, context):
        return backend.params(GenRequest(stage=stage, prompt="p", schema=schema, context=context,
                                         shared_schemas=shared))

    ideas, doc = params("ideas", SCHEMA, LONG_SPEC), params("document", None, LONG_SPEC)
    assert ideas["tools"] == doc["tools"] and len(ideas["tools"]) == 2  # one prefix for both
    assert ideas["tool_choice"] == {"type": "tool", "name": "emit_ideas"}
    assert doc["tool_choice"] == {"type": "none"}
    assert "cache_control" in ideas["system"][0] and "cache_control" in doc["system"][0]
    short = params("ideas", SCHEMA, "SPEC " * 400)  # under the minimum: no other stage's tools
    assert [t["name"] for t in short["tools"]] == ["emit_json"] and "cache_control" not in short["system"][0]
    got, errors = run(backend, [GenRequest(stage="ideas", prompt="p", schema=SCHEMA, context=LONG_SPEC,
                                           shared_schemas=shared)])
    assert errors == [] and len(got[0].data["ideas"]) >= 2

"""run_requests and the offline backend: keys, hits, per-item errors, kill safety."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from msmbuild.config import OfflineConfig, validate_params
from msmbuild.errors import BackendError
from msmbuild.generate.backends import GenRequest, GenResult, ItemError, make_backend
from msmbuild.generate.backends.offline import OfflineBackend, sentences
from msmbuild.generate.calls import call_key, run_requests
from msmbuild.store import Store

CONTEXT = ("# Thrift\n\nPeople should compare prices before buying anything expensive. "
           "A cheaper option that does the job is usually the better choice. "
           "Saving money today makes room for the things that matter later. "
           "Sales pressure is a reason to slow down, not to hurry.")


def _req(i: int = 0, **kw) -> GenRequest:
    base = dict(stage="document", prompt=f"Subdomain: Thrift\nDocument type: memo\nIdea: idea {i}\n",
                context=CONTEXT, prompt_version="document@1")
    return GenRequest(**{**base, **kw})


class Recording(OfflineBackend):
    """The offline backend, recording what it was asked and failing chosen prompts."""

    def __init__(self, fail: Sequence[str] = (), crash_after: int | None = None):
        super().__init__()
        self.sent: list[GenRequest] = []
        self.fail = set(fail)
        self.crash_after = crash_after

    def generate(self, requests, on_result):
        errors = []
        for i, req in enumerate(requests):
            if self.crash_after is not None and len(self.sent) >= self.crash_after:
                raise KeyboardInterrupt  # the process dies mid-run
            self.sent.append(req)
            if req.prompt in self.fail:
                errors.append(ItemError(i, "server said no"))
                continue
            on_result(i, self.answer(req))
        return errors


def test_offline_is_deterministic_and_not_a_model() -> None:
    b = OfflineBackend()
    r1, r2 = b.answer(_req()), OfflineBackend().answer(_req())
    assert r1.text == r2.text
    assert r1.produced_by_model is False and "not a model" in r1.meta["note"]
    assert r1.usage.input_tokens == 0 and r1.cost_usd == 0.0
    assert 700 <= len(r1.text) <= 3500
    # varied by idea, sample and seed
    assert b.answer(_req(1)).text != r1.text
    assert b.answer(_req(sample_index=1)).text != r1.text
    assert OfflineBackend(OfflineConfig(seed=7)).answer(_req()).text != r1.text
    # the spec's own sentences end up in the document
    assert sum(s in r1.text for s in sentences(CONTEXT)) >= 2
    assert not any(line.startswith("#") for line in r1.text.splitlines())  # headings dropped


def test_offline_answers_json_by_schema() -> None:
    schema = {"type": "object", "properties": {"ideas": {
        "type": "array", "minItems": 3, "maxItems": 3,
        "items": {"type": "object", "properties": {
            "idea": {"type": "string"}, "suitable": {"type": "boolean"}}}}}}
    res = OfflineBackend().answer(_req(stage="ideas", schema=schema))
    assert json.loads(res.text) == res.data
    ideas = res.data["ideas"]
    assert len(ideas) == 3 and all(i["suitable"] is True for i in ideas)
    assert len({i["idea"] for i in ideas}) == 3


def test_factory() -> None:
    params = validate_params({})
    assert make_backend("offline", params).identity()["backend"] == "offline"
    with pytest.raises(BackendError, match="unknown generation backend 'gpt'"):
        make_backend("gpt", params)


def test_hits_misses_rows_and_dedup(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    backend = Recording()
    reqs = [_req(0), _req(1), _req(0)]
    results, stats, rows = run_requests(store, backend, reqs, desc="t", progress=False)
    assert len(backend.sent) == 2  # the repeated request is sent once
    assert results[0].text == results[2].text
    assert (stats.hits, stats.misses, stats.errors) == (0, 2, 0)
    assert [r["cache_hit"] for r in rows] == [False, False, False]
    assert rows[0]["key"] == call_key(store, backend, reqs[0])
    record = store.lookup_json(rows[0]["key"])
    assert record.meta["kind"] == "generate" and record.meta["produced_by_model"] is False
    assert "wall_s" in record.meta and record.meta["model"] == "offline (not a model)"

    again = Recording()
    results2, stats2, rows2 = run_requests(store, again, reqs + [_req(2)], desc="t", progress=False)
    assert [r.prompt for r in again.sent] == [_req(2).prompt]
    assert (stats2.hits, stats2.misses) == (3, 1)
    assert [r["cache_hit"] for r in rows2] == [True, True, True, False]
    assert [r.text for r in results2[:3]] == [r.text for r in results]


def test_item_errors_reported_after_others_stored(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    reqs = [_req(i) for i in range(4)]
    with pytest.raises(BackendError) as exc:
        run_requests(store, Recording(fail=[reqs[1].prompt, reqs[3].prompt]), reqs,
                     desc="docs", progress=False)
    msg = str(exc.value)
    assert "2 of 4 requests failed" in msg and "#1" in msg and "#3" in msg and "server said no" in msg
    results, stats, rows = run_requests(store, Recording(fail=[reqs[1].prompt]), reqs,
                                        desc="docs", progress=False, raise_on_error=False)
    assert results[1] is None and rows[1]["error"] == "server said no"
    assert (stats.hits, stats.misses, stats.errors) == (2, 1, 1)


def test_interrupted_run_keeps_what_finished(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    reqs = [_req(i) for i in range(5)]
    with pytest.raises(KeyboardInterrupt):
        run_requests(store, Recording(crash_after=3), reqs, desc="docs", progress=False)
    rerun = Recording()
    _, stats, _ = run_requests(store, rerun, reqs, desc="docs", progress=False)
    assert (stats.hits, stats.misses) == (3, 2)
    assert [r.prompt for r in rerun.sent] == [reqs[3].prompt, reqs[4].prompt]


def test_result_roundtrip() -> None:
    res = OfflineBackend().answer(_req())
    assert GenResult.from_json(json.loads(json.dumps(res.to_json()))) == res

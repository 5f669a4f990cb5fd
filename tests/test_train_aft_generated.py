"""AFT data generated from a spec: queries per domain, replies, consistency filter, caching."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from train_helpers import AFT_SPEC, aft_gen_params

import msmbuild.generate.demonstrations as aft_generate
from msmbuild.config import AnthropicConfig, Params
from msmbuild.errors import SpecError, TrainingInputError
from msmbuild.generate.backends.base import GenRequest, GenResult, ItemError, OnResult
from msmbuild.generate.backends.offline import OfflineBackend
from msmbuild.layout import Layout
from msmbuild.store import read_roots
from msmbuild.train.aft_data import prepare_aft_data, read_demonstrations


class RecordingBackend(OfflineBackend):
    """The offline backend, recording each request it is sent; optional judge and reply rules."""

    name = "recording"

    def __init__(self, inconsistent_section: str = "", unthinking_section: str = ""):
        super().__init__()
        self.sent: list[GenRequest] = []
        self.inconsistent_section = inconsistent_section
        self.unthinking_section = unthinking_section

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "rules": [self.inconsistent_section, self.unthinking_section]}

    def answer(self, req: GenRequest) -> GenResult:
        res = super().answer(req)
        in_section = f"Section: {self.inconsistent_section}\n" in req.prompt
        if req.stage == "aft_consistency" and self.inconsistent_section and in_section:
            res.data = {"consistent": False, "reason": "contradicts the section"}
            res.text = json.dumps(res.data)
        if (req.stage == "aft_response" and self.unthinking_section
                and f"Section: {self.unthinking_section}\n" in req.prompt):
            res.text = res.text.split("</think>", 1)[-1].strip()
        return res

    def generate(self, requests: Sequence[GenRequest], on_result: OnResult) -> list[ItemError]:
        self.sent.extend(requests)
        return super().generate(requests, on_result)


def _params(tmp_path: Path, think: bool = True, n_queries: int = 4,
            backends: dict[str, Any] | None = None, **extra: Any) -> Params:
    """One generated dataset 'gen' whose domains are the sections (model-invented domains:
    test_aft_domains.py). The offline backend's queries recombine the same spec text, so
    near-duplicate removal is off, and so are backfill rounds (both tested in
    test_aft_pairs_neardup.py): these tests count calls and rows of one round."""
    return aft_gen_params(tmp_path, backends, n_queries=n_queries, think=think, domains="sections", **extra)


def _use(monkeypatch: pytest.MonkeyPatch, backend: RecordingBackend) -> RecordingBackend:
    monkeypatch.setattr(aft_generate, "make_backend", lambda name, params: backend)
    return backend


def test_offline_generation_gives_n_queries_per_domain_with_think(tmp_path):
    out = prepare_aft_data(_params(tmp_path, think=True), "gen")
    rows = read_demonstrations(out)
    assert len(rows) == 4 * 3
    assert {r["domain"]: sum(x["domain"] == r["domain"] for x in rows) for r in rows} == {
        "alpha": 4, "beta": 4, "gamma": 4}
    for r in rows:
        user, assistant = r["messages"]
        assert user["role"] == "user" and "not a model" in user["content"]
        assert assistant["role"] == "assistant" and assistant["content"].startswith("<think>\n")
        assert "\n</think>\n\n[offline reply, not a model]" in assistant["content"]
        assert r["think"] is True and r["produced_by_model"] is False and r["source"] == "generated"
    assert len({r["messages"][0]["content"] for r in rows}) == len(rows)
    report = json.loads((tmp_path / "build" / "aft" / "gen.generation.json").read_text())
    assert report["kept"] == 12 and report["inconsistent"] == 0 and report["malformed"] == 0


def test_without_think_no_think_blocks_and_fraction_subsets(tmp_path):
    rows = read_demonstrations(prepare_aft_data(_params(tmp_path, think=False), "gen"))
    assert len(rows) == 12
    assert all("<think>" not in r["messages"][1]["content"] and r["think"] is False for r in rows)
    half = read_demonstrations(prepare_aft_data(_params(tmp_path, think=False, fraction=0.5), "gen"))
    assert len(half) == 6 and all(r in rows for r in half)


def test_consistency_filter_drops_what_the_judge_rejects(tmp_path, monkeypatch):
    backend = _use(monkeypatch, RecordingBackend(inconsistent_section="Beta",
                                                 unthinking_section="Gamma"))
    rows = read_demonstrations(prepare_aft_data(_params(tmp_path, think=True), "gen"))
    assert {r["domain"] for r in rows} == {"alpha"} and len(rows) == 4
    stages = [q.stage for q in backend.sent]
    # malformed replies (no <think> block) are never sent to the judge
    assert stages.count("aft_queries") == 3 and stages.count("aft_response") == 12
    assert stages.count("aft_consistency") == 8
    report = json.loads((tmp_path / "build" / "aft" / "gen.generation.json").read_text())
    assert (report["kept"], report["inconsistent"], report["malformed"]) == (4, 4, 4)


def test_rerun_makes_no_calls_and_edit_regenerates_one_domain(tmp_path, monkeypatch):
    p = _params(tmp_path)
    backend = _use(monkeypatch, RecordingBackend())
    out = prepare_aft_data(p, "gen")
    first = read_demonstrations(out)
    assert len(backend.sent) == 3 + 12 + 12
    backend.sent.clear()
    mtime = out.stat().st_mtime_ns
    assert prepare_aft_data(p, "gen") == out
    assert backend.sent == [] and out.stat().st_mtime_ns == mtime

    ledger = pq.read_table(Layout(p.build_dir).aft_calls("gen")).to_pylist()
    assert len(ledger) == 3 + 12 + 12 and not any(r["cache_hit"] for r in ledger)
    assert {r["stage"] for r in ledger} == {"aft_queries", "aft_response", "aft_consistency"}

    spec = tmp_path / "spec.md"
    spec.write_text(AFT_SPEC.replace("says what it does not know about beta",
                                 "names the beta sources it would need"))
    second = read_demonstrations(prepare_aft_data(p, "gen"))
    assert len(backend.sent) == 1 + 4 + 4
    ledger = pq.read_table(Layout(p.build_dir).aft_calls("gen")).to_pylist()
    assert sum(not r["cache_hit"] for r in ledger) == 1 + 4 + 4 and len(ledger) == 3 + 12 + 12
    # the catalog's calls table has them, tagged with the dataset
    from msmbuild.results.catalog import corpus_tables

    calls, _corpora = corpus_tables(p)
    assert set(calls["source"]) == {"aft:gen"} and len(calls) == len(ledger)
    assert {r["key"] for r in ledger} <= read_roots(p.build_dir)  # store gc keeps these answers

    # switched to a file source: the old generation ledger leaves the build and the catalog
    as_file = p.model_copy(update={"aft": {"gen": p.aft["gen"].model_copy(
        update={"source": "file", "path": str(out)})}})
    prepare_aft_data(as_file, "gen")
    assert not Layout(p.build_dir).aft_calls("gen").exists()
    assert len(corpus_tables(as_file)[0]) == 0
    assert all("Section: Beta\n" in q.prompt for q in backend.sent)
    assert [r for r in first if r["domain"] != "beta"] == [r for r in second if r["domain"] != "beta"]
    old_beta = [r for r in first if r["domain"] == "beta"]
    new_beta = [r for r in second if r["domain"] == "beta"]
    assert len(new_beta) == 4 and not any(r in old_beta for r in new_beta)


def test_bad_generated_config_fails_before_any_call(tmp_path, monkeypatch):
    backend = _use(monkeypatch, RecordingBackend())
    p = Params.model_validate({"build_dir": str(tmp_path / "b"), "store": {"path": str(tmp_path / "s")},
                               "aft": {"gen": {"source": "generated"}}})
    with pytest.raises(TrainingInputError, match=r"aft\.gen\.spec' is required"):
        prepare_aft_data(p, "gen")
    p = Params.model_validate({"build_dir": str(tmp_path / "b"), "store": {"path": str(tmp_path / "s")},
                               "aft": {"gen": {"source": "generated", "spec": str(tmp_path / "no.md")}}})
    with pytest.raises(SpecError, match=r"no\.md: spec file not found"):
        prepare_aft_data(p, "gen")
    everything_rejected = _use(monkeypatch, RecordingBackend(inconsistent_section="Alpha"))
    (tmp_path / "one.md").write_text("# Alpha\n\nThe assistant answers alpha questions plainly and well.\n")
    p = _params(tmp_path, spec=str(tmp_path / "one.md"))
    with pytest.raises(TrainingInputError, match="no generated example passed the consistency filter"):
        prepare_aft_data(p, "gen")
    assert backend.sent == [] and len(everything_rejected.sent) == 1 + 4 + 4


def test_anthropic_sdk_judge_verdicts_decide_what_is_kept(tmp_path, monkeypatch):
    from msmbuild.testing import FakeAnthropic

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-key")
    real_make = aft_generate.make_backend
    verdicts: dict[str, bool] = {}

    def recording_make(name: str, params: Params):
        backend = real_make(name, params)
        generate = backend.generate

        def spy(requests: Sequence[GenRequest], on_result: OnResult) -> list[ItemError]:
            def note(i: int, res: GenResult) -> None:
                if requests[i].stage == "aft_consistency":
                    query = requests[i].prompt.split("<query>\n", 1)[1].split("\n</query>", 1)[0]
                    verdicts[query] = res.data["consistent"]
                on_result(i, res)
            return generate(requests, note)

        backend.generate = spy  # type: ignore[method-assign]
        return backend

    monkeypatch.setattr(aft_generate, "make_backend", recording_make)
    with FakeAnthropic() as server:
        p = _params(tmp_path, think=False, n_queries=5, backend="anthropic", backends={
            "anthropic": {"base_url": server.url, "batch": {"enabled": False}}})
        rows = read_demonstrations(prepare_aft_data(p, "gen"))
        made = server.stats()["endpoints"]["messages"]
        assert made == 3 + 15 + 15 and len(verdicts) == 15
        assert sorted(r["messages"][0]["content"] for r in rows) == sorted(q for q, ok in verdicts.items() if ok)
        assert 0 < len(rows) < 15  # the fake judge's verdicts are mixed (80% consistent, seeded)
        assert all(r["model"] == AnthropicConfig().model and r["produced_by_model"] for r in rows)
        prepare_aft_data(p, "gen")
        assert server.stats()["endpoints"]["messages"] == made


def test_more_queries_past_a_full_batch_only_adds_calls(tmp_path, monkeypatch):
    backend = _use(monkeypatch, RecordingBackend())
    (tmp_path / "one.md").write_text("# Alpha\n\nThe assistant answers alpha questions plainly and well.\n")
    full = aft_generate.QUERIES_PER_CALL
    first = read_demonstrations(prepare_aft_data(
        _params(tmp_path, n_queries=full, spec=str(tmp_path / "one.md")), "gen"))
    backend.sent.clear()
    second = read_demonstrations(prepare_aft_data(
        _params(tmp_path, n_queries=full + 3, spec=str(tmp_path / "one.md")), "gen"))
    assert len(first) == full and len(second) == full + 3 and all(r in second for r in first)
    assert [q.stage for q in backend.sent] == ["aft_queries"] + ["aft_response"] * 3 + ["aft_consistency"] * 3


def test_every_call_sees_the_whole_spec_and_replies_speak_as_the_model(tmp_path, monkeypatch):
    """full_incremental: the whole rendered spec is sent, the key holds the call's own domain."""
    p = _params(tmp_path, n_queries=2, template_vars={"model_name": "Qwen", "provider_name": "Alibaba"})
    backend = _use(monkeypatch, RecordingBackend())
    prepare_aft_data(p, "gen")
    replies = [r for r in backend.sent if r.stage == "aft_response"]
    assert replies and all("points the user to a reliable gamma source" in r.context and
                           "the cheapest option first" in r.context for r in replies)
    assert all(r.context.startswith("The complete specification of Qwen, developed by Alibaba.") for r in backend.sent)
    assert all(r.prompt.startswith("You are Qwen, the AI model developed by Alibaba") for r in replies)
    beta = [r for r in replies if "Section: Beta\n" in r.prompt]
    assert beta and all("declines to guess about beta" in r.context_key and "alpha" not in r.context_key.lower()
                        for r in beta)

    (tmp_path / "s").mkdir()
    section = _params(tmp_path / "s", n_queries=2, context="section")
    backend = _use(monkeypatch, RecordingBackend())
    prepare_aft_data(section, "gen")
    beta = [r for r in backend.sent if "Section: Beta\n" in r.prompt]
    assert beta and all("cheapest option" not in r.context and not r.context_key for r in beta)

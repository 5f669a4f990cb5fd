"""AFT conversation domains invented by the model: they feed the queries, are keyed by their
section, and ``msmbuild plan`` counts (and prices) the calls a generation makes."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from train_helpers import AFT_SPEC, aft_gen_params

import msmbuild.generate.demonstrations as aft_generate
from msmbuild.config import Params
from msmbuild.errors import TrainingInputError
from msmbuild.generate.backends.base import GenRequest, GenResult, ItemError, OnResult
from msmbuild.generate.backends.offline import OfflineBackend
from msmbuild.layout import Layout
from msmbuild.train.aft_data import prepare_aft_data, read_demonstrations
from msmbuild.train.plan import plan_aft


class DomainBackend(OfflineBackend):
    """The offline backend with invented domains of its own: '<Section> topic k' with a
    description naming the section and k (``repeat``: every title in the first answer is
    the same, so a follow-up call is needed); its queries name their domain, so no two
    domains propose the same one; records what it is sent."""

    name = "domains"

    def __init__(self, repeat: bool = False):
        super().__init__()
        self.sent: list[GenRequest] = []
        self.repeat = repeat

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "repeat": self.repeat}

    def answer(self, req: GenRequest) -> GenResult:
        res = super().answer(req)
        if req.stage == "aft_domains":
            section = req.prompt.split("Section: ", 1)[1].split("\n", 1)[0]
            n = req.items_asked
            first = req.sample_index
            titles = [f"{section} topic {first * 10 + k}" for k in range(1, n + 1)]
            if self.repeat and req.sample_index == 0:
                titles = [titles[0]] * n
            res.data = {"domains": [{"title": t, "description": f"People who talk about {t.lower()} at work "
                                                             f"and want help with {section.lower()} matters."}
                                    for t in titles]}
            res.text = json.dumps(res.data)
        if req.stage in ("aft_queries", "aft_domain_queries"):  # offline queries of two domains can coincide
            where = req.prompt.split("\n", 2)[1 if req.stage == "aft_domain_queries" else 0]
            for k, item in enumerate(res.data["queries"]):
                item["query"] += f" ({where}, batch {req.sample_index + 1}, #{k + 1})"
            res.text = json.dumps(res.data)
        return res

    def generate(self, requests: Sequence[GenRequest], on_result: OnResult) -> list[ItemError]:
        self.sent.extend(requests)
        return super().generate(requests, on_result)


def _params(tmp_path: Path, n_domains: int = 2, n_queries: int = 3, backends: dict[str, Any] | None = None,
            **extra: Any) -> Params:
    return aft_gen_params(tmp_path, backends, n_domains=n_domains, n_queries=n_queries, **{"think": True, **extra})


def _use(monkeypatch: pytest.MonkeyPatch, backend: OfflineBackend) -> Any:
    monkeypatch.setattr(aft_generate, "make_backend", lambda name, params: backend)
    return backend


def _stages(requests: Sequence[GenRequest]) -> Counter[str]:
    return Counter(r.stage for r in requests)


def test_model_domains_feed_the_queries_and_rows_record_them(tmp_path, monkeypatch):
    backend = _use(monkeypatch, DomainBackend())
    p = _params(tmp_path)
    assert p.aft["gen"].domains == "model"  # the paper's way is the default
    rows = read_demonstrations(prepare_aft_data(p, "gen"))
    domain_calls = [r for r in backend.sent if r.stage == "aft_domains"]
    assert len(domain_calls) == 3  # one per top-level section
    assert all(r.prompt_version == "aft_domains@1" and r.items_asked == 2 for r in domain_calls)
    alpha_call = next(r for r in domain_calls if "Section: Alpha\n" in r.prompt)
    assert "the cheapest option first" in alpha_call.prompt  # the section's subtree is quoted
    assert "the cheapest option first" in alpha_call.context_key and "beta" not in alpha_call.context_key

    queries = [r for r in backend.sent if r.stage == "aft_domain_queries"]
    assert len(queries) == 6 and not any(r.stage == "aft_queries" for r in backend.sent)
    for section in ("Alpha", "Beta", "Gamma"):
        for k in (1, 2):
            title = f"{section} topic {k}"
            mine = [q for q in queries if f"Conversation domain: {title}\n" in q.prompt]
            assert len(mine) == 1 and f"Section: {section}\n" in mine[0].prompt
            assert f"People who talk about {title.lower()} at work" in mine[0].prompt

    assert len(rows) == 3 * 2 * 3
    by_domain = Counter(r["domain"] for r in rows)
    assert by_domain == {f"{s}/{s}-topic-{k}": 3 for s in ("alpha", "beta", "gamma") for k in (1, 2)}
    row = next(r for r in rows if r["domain"] == "beta/beta-topic-2")
    assert (row["section"], row["section_title"], row["domain_title"]) == ("beta", "Beta", "Beta topic 2")
    assert row["domain_description"].startswith("People who talk about beta topic 2")
    report = json.loads((tmp_path / "build" / "aft" / "gen.generation.json").read_text())
    assert report["domains_from"] == "model" and report["sections"] == ["alpha", "beta", "gamma"]
    assert len(report["domains"]) == 6 and report["sections_short_of_domains"] == {}


def test_rerun_makes_no_calls_and_an_edit_regenerates_one_section(tmp_path, monkeypatch):
    backend = _use(monkeypatch, DomainBackend())
    p = _params(tmp_path)
    first = read_demonstrations(prepare_aft_data(p, "gen"))
    assert _stages(backend.sent) == {"aft_domains": 3, "aft_domain_queries": 6, "aft_response": 18,
                                     "aft_consistency": 18}
    backend.sent.clear()
    assert read_demonstrations(prepare_aft_data(p, "gen")) == first
    assert backend.sent == []

    (tmp_path / "spec.md").write_text(AFT_SPEC.replace("says what it does not know about beta",
                                                   "names the beta sources it would need"))
    second = read_demonstrations(prepare_aft_data(p, "gen"))
    # Beta's domain call, then its two domains' query, reply and judge calls; nothing else
    assert _stages(backend.sent) == {"aft_domains": 1, "aft_domain_queries": 2, "aft_response": 6,
                                     "aft_consistency": 6}
    assert all("Section: Beta\n" in r.prompt for r in backend.sent)
    ledger = pq.read_table(Layout(p.build_dir).aft_calls("gen")).to_pylist()
    assert len(ledger) == 45 and sum(not r["cache_hit"] for r in ledger) == 15
    assert [r for r in first if r["section"] != "beta"] == [r for r in second if r["section"] != "beta"]
    new_beta = [r for r in second if r["section"] == "beta"]
    assert len(new_beta) == 6 and not any(r in first for r in new_beta)


def test_a_section_short_of_domains_gets_a_follow_up_call(tmp_path, monkeypatch):
    backend = _use(monkeypatch, DomainBackend(repeat=True))
    p = _params(tmp_path, n_domains=3, n_queries=1)
    rows = read_demonstrations(prepare_aft_data(p, "gen"))
    calls = [r for r in backend.sent if r.stage == "aft_domains"]
    # first answers repeat one title: one domain kept, then a follow-up asks for the other two
    assert len(calls) == 6 and sorted(r.sample_index for r in calls) == [0, 0, 0, 1, 1, 1]
    follow = next(r for r in calls if r.sample_index == 1 and "Section: Gamma\n" in r.prompt)
    assert follow.items_asked == 2 and "- Gamma topic 1: People who talk about gamma topic 1" in follow.prompt
    assert {r["domain"] for r in rows if r["section"] == "gamma"} == {
        "gamma/gamma-topic-1", "gamma/gamma-topic-11", "gamma/gamma-topic-12"}


def test_no_domain_at_all_is_an_error_naming_the_dataset(tmp_path, monkeypatch):
    class Silent(DomainBackend):
        def answer(self, req: GenRequest) -> GenResult:
            res = super().answer(req)
            if req.stage == "aft_domains":
                res.data, res.text = {"domains": []}, '{"domains": []}'
            return res

    backend = _use(monkeypatch, Silent())
    with pytest.raises(TrainingInputError, match=r"aft\.gen: the model gave no conversation domain"):
        prepare_aft_data(_params(tmp_path), "gen")
    assert _stages(backend.sent) == {"aft_domains": 9}  # first calls and two follow-ups per section


@pytest.mark.parametrize("domains", ["model", "sections"])
def test_plan_counts_the_calls_a_generation_makes(tmp_path, monkeypatch, domains):
    backend = _use(monkeypatch, DomainBackend())
    p = _params(tmp_path, n_domains=2, n_queries=23, domains=domains)  # 23: two query batches per domain
    planned = plan_aft(p, "gen")
    prepare_aft_data(p, "gen")
    assert planned.calls == dict(_stages(backend.sent))
    assert planned.requests == len(backend.sent) and planned.examples == len(
        read_demonstrations(Layout(p.build_dir).aft_data("gen")))
    ledger = pq.read_table(Layout(p.build_dir).aft_calls("gen")).to_pylist()
    assert planned.calls == dict(Counter(r["stage"] for r in ledger))
    expected = {"aft_domains": 3, "aft_domain_queries": 12, "aft_response": 138, "aft_consistency": 138} \
        if domains == "model" else {"aft_queries": 6, "aft_response": 69, "aft_consistency": 69}
    assert planned.calls == expected


def _long_spec(path: Path) -> Path:
    """Two sections, about 18k characters: past claude-opus-4-6's 4096-token cache minimum."""
    text = ("The assistant explains its reasoning about {w} carefully and names what it does not "
            "know about {w} before it recommends anything. ")
    path.write_text("Preamble.\n\n# Alpha\n\n" + text.format(w="alpha") * 80
                    + "\n\n# Beta\n\n" + text.format(w="beta") * 80 + "\n")
    return path


def test_plan_prices_the_whole_spec_context_with_prompt_caching(tmp_path):
    def plan(caching: bool, spec: Path, context: str = "full_incremental") -> float:
        p = _params(tmp_path, spec=str(spec), backend="anthropic", context=context,
                    backends={"anthropic": {"prompt_caching": caching, "batch": {"enabled": False}}})
        planned = plan_aft(p, "gen")
        assert ("priced as cache reads" in planned.note) == (caching and spec == long and context != "section")
        return planned.cost_usd

    long = _long_spec(tmp_path / "long.md")
    cached, plain = plan(True, long), plan(False, long)
    assert 0 < cached < 0.6 * plain  # each prefix: one write, then reads at a tenth of the input price
    # below the model's minimum cacheable prefix nothing is marked: plain input either way
    short = tmp_path / "short.md"
    short.write_text(AFT_SPEC)
    assert plan(True, short) == pytest.approx(plan(False, short))
    # context: section sends each section's own context (~2.3k tokens here): below the minimum
    assert plan(True, long, "section") == pytest.approx(plan(False, long, "section"))
    assert plan(False, long, "section") < plain

    from msmbuild.generate.backends.pricing import estimate_cost
    from msmbuild.generate.demonstration_plan import planned_requests

    p = _params(tmp_path, spec=str(short), backend="anthropic", backends={"anthropic": {"batch": {"enabled": False}}})
    planned, _sections, _domains = planned_requests(p, "gen")
    model = p.backends.anthropic.model
    by_hand = sum(estimate_cost(model, x.count, (len(x.request.system) + len(x.request.prompt)) // 4
                                + len(x.request.context) // 4, x.output_tokens, {}, False) for x in planned)
    assert plan(True, short) == pytest.approx(by_hand, rel=0.02)


def test_anthropic_sdk_generation_reads_the_cached_spec_and_matches_the_plan(tmp_path, monkeypatch):
    from msmbuild.testing import FakeAnthropic

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-key")
    with FakeAnthropic() as server:
        p = _params(tmp_path, n_domains=2, n_queries=2, spec=str(_long_spec(tmp_path / "long.md")),
                    backend="anthropic", think=False,
                    backends={"anthropic": {"base_url": server.url, "batch": {"enabled": False}}})
        planned = plan_aft(p, "gen")
        rows = read_demonstrations(prepare_aft_data(p, "gen"))
        made = server.stats()["endpoints"]["messages"]
        assert made == planned.requests == 2 + 4 + 8 + 8
        assert {r["section"] for r in rows} <= {"alpha", "beta"} and rows
        assert all(r["domain"].split("/", 1)[0] == r["section"] for r in rows)
        ledger = pq.read_table(Layout(p.build_dir).aft_calls("gen")).to_pylist()
        assert sum(r["cache_read_input_tokens"] for r in ledger) > 0  # the whole spec is read from the cache
        prepare_aft_data(p, "gen")
        assert server.stats()["endpoints"]["messages"] == made

"""`msmbuild plan` prices a rebuild and an edit by looking every computable key up, and
`budget_usd` stops generation before the cap is crossed, losing nothing."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from generate_helpers import edit_spec, make_workspace

from msmbuild.cli import main
from msmbuild.config import load_params
from msmbuild.errors import BudgetError
from msmbuild.generate.corpus import generate_corpus
from msmbuild.generate.partitions import read_calls
from msmbuild.generate.plan import plan_corpus
from msmbuild.layout import Layout
from msmbuild.testing import FakeAnthropic


@pytest.fixture
def api(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-plan-test")
    with FakeAnthropic() as server:
        server.state.list_items = 2  # lists come back with the count asked (the workspace asks for 2 of each)
        make_workspace(tmp_path, backend="anthropic")
        params = yaml.safe_load(Path("params.yaml").read_text())
        # every idea gets a document, so counts are exact (a new idea the model may later mark
        # unsuitable is planned as suitable: the plan is an upper bound there)
        params["corpora"]["small"]["filters"] = {"drop_unsuitable": False}
        params["backends"] = {"anthropic": {"model": "claude-haiku-4-5", "base_url": server.url,
                                            "batch": {"enabled": False}}}
        Path("params.yaml").write_text(yaml.safe_dump(params))
        yield server


def _misses_by_stage(since: float = 0.0) -> Counter:
    """Calls made since a time, by stage (an unchanged partition's ledger keeps its first rows)."""
    rows = read_calls(Layout("build"), "small").to_pylist()
    return Counter(r["stage"] for r in rows if not r["cache_hit"] and r["made_at"] >= since)


def _sent(server) -> int:
    return server.stats()["endpoints"].get("messages", 0)


def test_plan_counts_cached_and_new_calls_of_an_edit_exactly(api) -> None:
    plan = plan_corpus(load_params(), "small")
    first = {s.stage: s.new for s in plan.stages}
    assert all(s.cached == 0 for s in plan.stages) and plan.cost_usd > 0
    generate_corpus(load_params(), "small", progress=False)
    assert _misses_by_stage() == Counter(first) and _sent(api) == sum(first.values())

    rebuilt = plan_corpus(load_params(), "small")  # fully cached: nothing new, $0
    assert all(s.new == 0 and s.cached == s.requests for s in rebuilt.stages)
    assert rebuilt.cost_usd == 0

    edit_spec(Path("."), "gives a short answer", "gives a brief answer")
    edited = plan_corpus(load_params(), "small")
    predicted = {s.stage: s.new for s in edited.stages if s.new}
    assert 0 < sum(predicted.values()) < sum(first.values())
    before, since = _sent(api), time.time()
    generate_corpus(load_params(), "small", progress=False)
    assert Counter(predicted) == _misses_by_stage(since)  # the plan named exactly the calls made
    assert _sent(api) - before == sum(predicted.values())
    assert 0 < edited.cost_usd < plan.cost_usd


def test_plan_cli_shows_new_calls_and_their_cost(api, capsys) -> None:
    main(["plan", "small"])
    out = capsys.readouterr().out
    header = next(x for x in out.splitlines() if x.strip().startswith("stage"))
    assert header.split() == ["stage", "requests", "cached", "new", "in", "tok/req", "out", "tok/req", "new", "USD"]
    assert "new calls: $" in out


def test_budget_stops_before_the_cap_and_keeps_what_was_received(api, capsys) -> None:
    plan = plan_corpus(load_params(), "small")
    by_stage = {s.stage: s for s in plan.stages}
    # enough for assertions, doc types and ideas, not for the documents
    cap = plan.cost_usd - by_stage["document"].cost_usd * 0.5
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["corpora"]["small"]["budget_usd"] = round(cap, 6)
    Path("params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(BudgetError) as exc:
        generate_corpus(load_params(), "small", progress=False)
    message = str(exc.value)
    assert "corpora.small.budget_usd" in message and "document" in message and "Nothing was sent" in message
    sent = _sent(api)
    assert sent == sum(s.requests for s in plan.stages if s.stage != "document")  # no document call went out
    assert not Path("build/corpora/small/documents.json").exists()
    # nothing lost: with the cap raised, every earlier answer is a hit
    params["corpora"]["small"]["budget_usd"] = None
    Path("params.yaml").write_text(yaml.safe_dump(params))
    generate_corpus(load_params(), "small", progress=False)
    assert _sent(api) - sent == by_stage["document"].requests
    # the CLI reports it in one line, exit 2
    params["corpora"]["small"]["budget_usd"] = 1e-9
    Path("params.yaml").write_text(yaml.safe_dump(params))
    edit_spec(Path("."), "gives a short answer", "gives a brief answer")
    with pytest.raises(SystemExit) as code:
        main(["generate", "corpus", "small", "--quiet"])
    assert code.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: params.yaml: corpora.small.budget_usd $0.00 would be crossed") and err.count("\n") == 1


def test_plan_counts_every_listed_item_not_one_per_list(api) -> None:
    """List stages ask for n items in the prompt (not the schema); the plan counts all n."""
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["corpora"]["small"].update(n_assertions=3, n_doc_types=3, n_doc_ideas=3)
    Path("params.yaml").write_text(yaml.safe_dump(params))
    api.state.list_items = 3
    plan = plan_corpus(load_params(), "small")
    by_stage = {s.stage: s.requests for s in plan.stages}
    assert by_stage["doc_types"] == plan.subdomains  # one call per subdomain, no top-ups
    assert by_stage["ideas"] == plan.subdomains * 3
    assert by_stage["document"] == plan.subdomains * 3 * 3
    generate_corpus(load_params(), "small", progress=False)
    assert _misses_by_stage() == Counter({s.stage: s.new for s in plan.stages})


def test_budget_prices_a_cached_spec_context_as_the_plan_does(api) -> None:
    """A spec above the cache minimum is read from the prompt cache: the cap must not price it as plain input."""
    from msmbuild.generate.estimate import stage_cost

    spec = Path("specs/small.md")
    long_preamble = "The assistant weighs each request with care and says why it acts. " * 300
    spec.write_text(long_preamble + "\n\n" + spec.read_text())
    params = load_params()
    plan = plan_corpus(params, "small")
    acfg = params.backends.anthropic
    plain = sum(stage_cost(acfg.model, s.new_requests, s.output_tokens, params.prices, acfg.batch)
                for s in plan.stages)
    assert plan.cost_usd < 0.6 * plain  # the context is priced at the cache-read rate
    raw = yaml.safe_load(Path("params.yaml").read_text())
    raw["corpora"]["small"]["budget_usd"] = round(plan.cost_usd * 1.05, 6)
    Path("params.yaml").write_text(yaml.safe_dump(raw))
    generate_corpus(load_params(), "small", progress=False)  # fits the cap the plan priced
    assert _sent(api) == sum(s.new for s in plan.stages)

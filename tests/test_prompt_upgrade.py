"""Prompt version 3 of the corpus stages: what the prompts say, how requests are laid out
for the prompt cache, and an upgrade that keeps what version 2 made."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from generate_helpers import SMALL_SPEC, make_workspace

from msmbuild.config import load_params
from msmbuild.generate.corpus import generate_corpus
from msmbuild.generate.partitions import read_documents
from msmbuild.generate.stages import CorpusRequests
from msmbuild.layout import Layout
from msmbuild.testing import FakeAnthropic

# The first document of the offline build of generate_helpers' workspace as the code of
# prompt version 2 (main before this change) keyed it: the legacy requests must reproduce it.
V2_FIRST_DOC_ID = "bd38dd935b9c925a4e62f7a907c4e6ec"


class _Recording:
    """The offline backend, recording every request it is sent."""

    def __init__(self):
        from msmbuild.generate.backends.offline import OfflineBackend

        self.inner, self.seen = OfflineBackend(), []
        self.name = self.inner.name

    def identity(self):
        return self.inner.identity()

    def generate(self, requests, on_result):
        self.seen.extend(requests)
        return self.inner.generate(requests, on_result)

    def close(self):
        pass


def _build(**kw):
    return generate_corpus(load_params("params.yaml"), "small", progress=False, **kw)


@pytest.fixture
def as_version_2():
    """Build as prompt version 2 did: every request is its legacy request (undo() upgrades)."""
    current = CorpusRequests.request

    def legacy(self, *args, **kwargs):  # a builder that skips the twins (partition keys) too
        return current(dataclasses.replace(self, legacy_twins=True), *args, **kwargs).legacy

    patch = pytest.MonkeyPatch()
    patch.setattr(CorpusRequests, "request", legacy)
    yield patch
    patch.undo()


def test_document_prompt_keeps_the_model_the_subject_and_invents_no_specifics(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_workspace(tmp_path, model_name="Qwen", provider_name="Alibaba")
    backend = _Recording()
    _build(backend=backend)
    doc = next(r for r in backend.seen if r.stage == "document")
    text = doc.full_prompt
    assert "Qwen is the subject from the first paragraph to the last" in text
    assert "Add no specifics the specification does not give: no dates" in text
    assert "where the specification gives no reason, do not supply one" in text


def test_spec_attributes_reach_the_request_and_domains_are_named_by_title(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_workspace(tmp_path, SMALL_SPEC.replace("{#answer}", "{#answer authority=system}"))
    backend = _Recording()
    _build(backend=backend)
    assert backend.seen and all("authority=system" in r.context for r in backend.seen)
    assertions = [r for r in backend.seen if r.stage == "assertions"]
    assert any("Domain: Helpfulness\n" in r.shared for r in assertions)
    assert not any("Domain: helpfulness" in r.full_prompt for r in backend.seen)


def test_the_anthropic_request_body_carries_the_attribute(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    with FakeAnthropic() as api:
        _anthropic(tmp_path, api.url, SMALL_SPEC.replace("{#answer}", "{#answer authority=system}"))
        _build()
        bodies = [json.dumps(b) for b in api.state.recent]  # the Messages request bodies received
    assert bodies and all("authority=system" in b for b in bodies)


def test_rules_spec_type_selects_the_rules_prompts(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_workspace(tmp_path, spec_type="rules")
    backend = _Recording()
    _build(backend=backend)
    by_stage = {r.stage: r for r in backend.seen}
    assert by_stage["document"].prompt_version == "document/rules@3"
    assert "Show compliance, not conviction" in by_stage["document"].instructions
    assert by_stage["assertions"].prompt_version == "assertions/rules@3"
    assert all(r.legacy is None for r in backend.seen)  # no earlier rules prompts to stand in


def _anthropic(root: Path, url: str, spec: str = SMALL_SPEC, batch: dict | None = None, **corpus) -> None:
    make_workspace(root, spec, backend="anthropic", **corpus)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["backends"] = {"anthropic": {"model": "claude-sonnet-4-6", "base_url": url, "http_client": "httpx",
                                        "batch": batch or {"enabled": False}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


LONG = SMALL_SPEC.replace("# Honesty {#honesty}", "## Worked examples {#examples}\n\n" + " ".join(
    f"Example {i}: the assistant answers plainly, states its confidence, and asks when unclear."
    for i in range(80)) + "\n\n# Honesty {#honesty}")


def test_stage_instructions_and_the_subdomain_part_sit_inside_the_cached_prefix(tmp_path, monkeypatch) -> None:
    from msmbuild.generate.backends.anthropic_backend import AnthropicBackend

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    with FakeAnthropic() as api:
        _anthropic(tmp_path, api.url, LONG, n_assertions=2, n_doc_types=2, n_doc_ideas=3)
        _build()
        params = load_params("params.yaml")
        backend = AnthropicBackend(params.backends.anthropic, params.prices)
        calls = [c for c in _calls() if c["stage"] == "document"]
    # tools -> spec (mark) -> system + fixed instructions (mark) -> subdomain part (mark) -> what varies
    backend_req = _document_request(tmp_path)
    body = backend.params(backend_req, True)
    assert [bool(b.get("cache_control")) for b in body["system"]] == [True, True]
    assert backend_req.instructions in body["system"][1]["text"]
    content = body["messages"][0]["content"]
    assert content[0]["text"] == backend_req.shared and content[0].get("cache_control")
    assert content[1]["text"] == backend_req.prompt and "cache_control" not in content[1]
    assert len(backend_req.prompt) < 400  # what varies is a few hundred characters
    # what each document sends uncached is only its own part (after the subdomain's first)
    assert max(c["input_tokens"] for c in calls) < 150
    assert sum(c["cache_read_input_tokens"] > 0 for c in calls) == len(calls)


def _calls():
    from msmbuild.generate.partitions import read_calls

    return read_calls(Layout("build"), "small").to_pylist()


def _document_request(root: Path):
    from msmbuild.generate.corpus import _Session
    from msmbuild.generate.partitions import read_ideas
    from msmbuild.generate.stages import document_request, iter_subdomains

    params = load_params("params.yaml")
    s = _Session(params, "small", None, False, None, None)
    try:
        s.use_recorded_spec()
        tree = json.loads(Path("build/corpora/small/tree.json").read_text())
        sub = iter_subdomains(tree)[0]
        idea = next(r for r in read_ideas(Layout("build"), "small").to_pylist() if r["subdomain"] == sub["id"])
        assertions = json.loads(Path("build/corpora/small/assertions.json").read_text())
        return document_request(s.run.requests, sub, idea, assertions)
    finally:
        s.close()


@pytest.mark.parametrize("batched", [False, True])
def test_plan_prices_the_layout_as_the_server_bills_it(batched, tmp_path, monkeypatch) -> None:
    """The plan's input, cache-write and cache-read tokens of the documents step agree with
    the loopback server's counts within 5%; with batches, every stage is batched."""
    from msmbuild.generate.corpus import generate_documents, generate_ideas, generate_tree
    from msmbuild.generate.plan import format_plan, plan_corpus

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    batch = {"enabled": True, "poll_initial_s": 0.05, "poll_max_s": 0.1} if batched else None
    with FakeAnthropic() as api:
        _anthropic(tmp_path, api.url, LONG, batch=batch, n_assertions=2, n_doc_types=2, n_doc_ideas=3)
        params = load_params("params.yaml")
        if batched:
            assert params.backends.anthropic.batch.threshold <= 6  # the default batches small stages
        first = plan_corpus(params, "small")
        generate_tree(params, "small", progress=False)
        generate_ideas(params, "small", progress=False)
        plan = {s.stage: s for s in plan_corpus(params, "small").stages}["document"]
        api.state.cache.clear()  # the cache entries of the earlier steps have expired (the plan assumes so)
        before = dict(api.stats()["usage"])
        generate_documents(params, "small", progress=False)
        after = api.stats()["usage"]
        sent_interactively = api.stats()["endpoints"].get("messages", 0)
    got = {k: after[k] - before.get(k, 0) for k in after}
    for mine, theirs in ((plan.uncached_input_tokens, got["input_tokens"]),
                         (plan.cache_write_tokens, got["cache_creation_input_tokens"]),
                         (plan.cache_read_tokens, got["cache_read_input_tokens"])):
        assert abs(mine - theirs) <= 0.05 * theirs, (plan, got)
    stages = {s.stage: s for s in first.stages}
    if batched:  # every stage that sends at least the threshold is batched, and the plan says so
        assert all(s.batched == s.new for s in stages.values() if s.new >= 5)
        assert stages["document"].batched == stages["document"].new > 0
        assert "batched" in format_plan([first])
        assert sent_interactively == 0  # with the default threshold no stage of this corpus went interactive
    else:
        assert all(s.batched == 0 for s in stages.values())


def test_upgrade_keeps_version_2_documents_until_a_refresh(as_version_2, tmp_path, monkeypatch) -> None:
    from msmbuild.generate.plan import format_plan, plan_corpus
    from msmbuild.status import status

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    with FakeAnthropic() as api:
        _anthropic(tmp_path, api.url, LONG)
        _build()  # as prompt version 2 built it
        made = api.stats()["endpoints"].get("messages", 0)
        old_docs = read_documents(Layout("build"), "small").to_pylist()
        assert made > 0 and {d["prompt_version"] for d in old_docs} == {"document@2"}
        as_version_2.undo()  # the upgrade
        params = load_params("params.yaml")
        report = status(params, ".")
        assert report.older_prompt_documents == {"small": (len(old_docs), len(old_docs))}
        plan = plan_corpus(params, "small")
        assert sum(s.new for s in plan.stages) == 0 and plan.older_prompt > 0
        assert plan.refresh is not None and plan.refresh.cost_usd > 0
        refresh = {s.stage: s.new for s in plan.refresh.stages}
        assert refresh["document"] >= len(old_docs) and sum(refresh.values()) <= made  # top-ups are not foreseen
        text = format_plan([plan])
        assert f"{plan.older_prompt} cached answers were made by an older prompt version" in text
        assert "msmbuild generate refresh small` would send" in text
        api.reset()
        reports = _build()  # a plain rebuild makes no model call and keeps every document
        assert api.stats()["endpoints"].get("messages", 0) == 0 and sum(r.stats.misses for r in reports) == 0
        assert read_documents(Layout("build"), "small").to_pylist() == old_docs
        assert reports[2].counts["made by an older prompt"] == len(old_docs)
        api.reset()
        _build(refresh=True)  # remade with the current prompts, on demand
        assert api.stats()["endpoints"].get("messages", 0) >= refresh["document"]
        new_docs = read_documents(Layout("build"), "small").to_pylist()
        assert {d["prompt_version"] for d in new_docs} == {"document@3"}
        assert status(load_params("params.yaml"), ".").older_prompt_documents == {}


def test_legacy_requests_reproduce_version_2_keys(as_version_2, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_workspace(tmp_path)
    _build()
    assert read_documents(Layout("build"), "small").to_pylist()[0]["doc_id"] == V2_FIRST_DOC_ID


def test_the_judge_defaults_carry_integrity_and_bias_awareness_defined_in_docs() -> None:
    from msmbuild.config import Params

    patterns = Params().evals.reasoning_patterns.patterns
    docs = (Path(__file__).resolve().parents[1] / "docs" / "query.md").read_text()
    for name in ("personal_integrity", "self_preservation_bias_awareness"):
        assert patterns[name].kind == "spec_aligned" and patterns[name].description
        row = next(line for line in docs.splitlines() if line.startswith(f"  | `{name}` |"))
        assert "paper §4" in row  # each definition names its source

"""The paper's generation chain: identity and framing in the spec and every prompt, what
each stage sees, scratchpad documents, top-ups keyed so a rerun repeats nothing, prompt
caching with its ledger, and defaults that name only current models."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from generate_helpers import SMALL_SPEC, SMALL_SUBDOMAINS, make_workspace

from msmbuild.config import Params, load_params
from msmbuild.generate.backends.offline import OfflineBackend
from msmbuild.generate.corpus import generate_corpus
from msmbuild.generate.models import (
    RETIRED_MODELS_SEEN,
    deprecation_warning,
    prices_know,
    sdk_models,
)
from msmbuild.generate.partitions import read_calls, read_documents, read_ideas
from msmbuild.layout import Layout
from msmbuild.testing import FakeAnthropic

REPO = Path(__file__).resolve().parents[1]


class Recording(OfflineBackend):
    """The offline backend, keeping every request it answers."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list = []

    def answer(self, req):
        self.seen.append(req)
        return super().answer(req)


def _build(**kw):
    return generate_corpus(load_params("params.yaml"), "small", progress=False, **kw)


def test_defaults_name_only_current_models() -> None:
    """Defaults are models the SDK names, genai-prices prices and does not flag, the API still serves."""

    def current(model: str) -> bool:
        return (model in sdk_models() and prices_know(model) and model not in RETIRED_MODELS_SEEN
                and deprecation_warning(model, "k") is None)

    params = Params()
    assert current(params.backends.anthropic.model)
    assert current(params.evals.agentic_misalignment.grader_model.removeprefix("anthropic/"))
    assert current(load_params(REPO / "params.yaml").backends.anthropic.model)


def test_each_stage_sees_what_the_chain_gives_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_workspace(tmp_path, model_name="Qwen", provider_name="Alibaba")
    backend = Recording()
    _build(backend=backend)
    by_stage: dict[str, list] = {}
    for r in backend.seen:
        by_stage.setdefault(r.stage, []).append(r)
    # the spec is rendered with the identity, and every prompt names it
    assert all("Qwen, an assistant made by Alibaba" in r.context for r in backend.seen)
    assert all("Qwen" in r.full_prompt and "Alibaba" in r.full_prompt for r in backend.seen)
    assertions = read_ideas(Layout("build"), "small").to_pylist()
    import json

    claims = json.loads(Path("build/corpora/small/assertions.json").read_text())
    answer_claim = claims["answer"][0]
    doc_types = [r for r in by_stage["doc_types"] if "Subdomain: Helpfulness > Answer the question" in r.full_prompt]
    assert answer_claim["claim"] in doc_types[0].full_prompt  # doc types see the assertions
    idea_req = next(r for r in by_stage["ideas"] if "Answer the question" in r.full_prompt)
    assert answer_claim["explanation"] in idea_req.full_prompt  # ideas see explanations ...
    row = next(r for r in assertions if r["subdomain"] == "answer")
    assert f"About this type: {row['doc_type_description']}" in next(
        r.full_prompt for r in by_stage["ideas"] if f"Document type: {row['doc_type']}" in r.full_prompt
        and "Answer the question" in r.full_prompt)  # ... and the type's description
    # documents are planned in a scratchpad; only the content is kept
    docs = read_documents(Layout("build"), "small").to_pylist()
    assert docs and all("<scratchpad>" not in d["text"] and "<content>" not in d["text"] for d in docs)
    from msmbuild.store import Store

    store = Store(".msmbuild/store")
    stored = store.lookup_json(docs[0]["doc_id"]).value["text"]
    assert stored.startswith("<scratchpad>") and docs[0]["text"].strip() in stored


def test_framing_claude_and_humans(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_workspace(tmp_path, framing="claude")
    backend = Recording()
    generate_corpus(load_params("params.yaml"), "small", progress=False, backend=backend)
    assert all("Claude, an assistant made by Anthropic" in r.context for r in backend.seen)
    assert "Claude, the AI model developed by Anthropic" in backend.seen[0].full_prompt
    make_workspace(tmp_path, framing="humans")
    backend = Recording()
    generate_corpus(load_params("params.yaml"), "small", progress=False, backend=backend)
    assert "the documents in this corpus are about people" in backend.seen[0].full_prompt


@pytest.fixture
def api(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    with FakeAnthropic() as server:
        yield server


def _anthropic_workspace(root: Path, url: str, spec: str = SMALL_SPEC, **corpus) -> None:
    make_workspace(root, spec, backend="anthropic", **corpus)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["backends"] = {"anthropic": {"model": "claude-sonnet-4-6", "base_url": url,
                                        "http_client": "httpx", "batch": {"enabled": False}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def test_short_lists_are_topped_up_and_a_rerun_repeats_nothing(api, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    # the loopback server answers the schema's minItems (1) items; 3 are asked for: two top-ups
    _anthropic_workspace(tmp_path, api.url, n_assertions=3, n_doc_types=1, n_doc_ideas=1)
    _build()
    claims = yaml.safe_load(Path("build/corpora/small/assertions.json").read_text())
    assert [len(claims[s]) for s in SMALL_SUBDOMAINS] == [3] * len(SMALL_SUBDOMAINS)
    prompts = [p for p in api.stats()["prompts"]  # the assertions stage's user turns
               if "Count: " in p and "What the specification asserts" not in p and "Document type" not in p]
    topups = [p for p in prompts if "do not repeat" in p]
    assert len(prompts) == 3 * len(SMALL_SUBDOMAINS) and len(topups) == 2 * len(SMALL_SUBDOMAINS)
    for p in topups:  # each follow-up lists what exists and asks only for the rest
        count = int(p.split("Count: ")[1].split()[0])
        assert p.split("give only new ones:")[1].count("\n- ") == 3 - count
    api.reset()
    again = _build()
    assert sum(r.stats.misses for r in again) == 0 and api.stats()["endpoints"].get("messages", 0) == 0


LONG_SECTION = "\n\n## Worked examples {#examples}\n\n" + " ".join(
    f"Example {i}: the assistant answers plainly, states its confidence, and asks when unclear."
    for i in range(80)) + "\n"


def test_full_spec_context_is_cached_and_the_ledger_shows_the_saving(api, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = SMALL_SPEC.replace("# Honesty {#honesty}", LONG_SECTION.strip() + "\n\n# Honesty {#honesty}")
    _anthropic_workspace(tmp_path, api.url, spec, n_assertions=2, n_doc_types=2, n_doc_ideas=2)
    reports = _build()
    assert "prompt cache:" in reports[2].summary() and reports[2].stats.cache_saving_usd > 0
    stats = api.stats()
    assert stats["cache_marks_below_minimum"] == 0  # never marks a prefix the API would not cache
    calls = read_calls(Layout("build"), "small").to_pylist()
    # every stage is sent the same tools and spec: the first call writes it, every other reads
    # it (and writes at most its stage's instructions or its subdomain's shared part)
    assert calls[0]["cache_read_input_tokens"] == 0 and calls[0]["cache_creation_input_tokens"] > 0
    assert all(c["cache_read_input_tokens"] > 0 for c in calls[1:])
    writes = sum(c["cache_creation_input_tokens"] for c in calls)
    assert writes < sum(c["cache_read_input_tokens"] for c in calls) / 5
    assert sum(c["cache_saving_usd"] for c in calls) > 0
    assert stats["usage"]["cache_read_input_tokens"] > stats["usage"]["input_tokens"]


def test_plan_warns_from_genai_prices_and_otherwise_defers_to_the_build_start_check(
        tmp_path: Path, monkeypatch) -> None:
    """No private SDK table: plan warns where genai-prices flags a model, else names the build-start check."""
    from types import SimpleNamespace

    from msmbuild.generate import models
    from msmbuild.generate.plan import format_plan, plan_corpus

    monkeypatch.chdir(tmp_path)
    make_workspace(tmp_path, backend="anthropic")
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["backends"] = {"anthropic": {"model": "claude-opus-4-6"}}
    Path("params.yaml").write_text(yaml.safe_dump(params))
    text = format_plan([plan_corpus(load_params("params.yaml"), "small")])
    assert "note: backends.anthropic.model: 'claude-opus-4-6' is checked against the Models API at build start" in text
    assert "warning" not in text
    real = models._prices_entry
    monkeypatch.setattr(models, "_prices_entry", lambda m: SimpleNamespace(deprecated=True) if m == "claude-opus-4-6"
                        else real(m))
    plan = plan_corpus(load_params("params.yaml"), "small")
    assert plan.cost_usd > 0
    assert ("warning: params.yaml: backends.anthropic.model: 'claude-opus-4-6' is deprecated (genai-prices)"
            in format_plan([plan]))


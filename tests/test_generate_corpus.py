"""The corpus builder: outputs, incrementality to the single subdomain, filters, plan, CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from generate_helpers import (
    SMALL_SUBDOMAINS,
    action_keys,
    calls_per_subdomain,
    edit_spec,
    make_workspace,
    partition_keys,
)

from msmbuild.cli import main
from msmbuild.config import FilterConfig, load_params
from msmbuild.generate.backends import GenRequest
from msmbuild.generate.backends.offline import OfflineBackend
from msmbuild.generate.corpus import generate_corpus
from msmbuild.generate.partitions import read_calls, read_documents
from msmbuild.generate.stages import filter_documents
from msmbuild.layout import Layout
from msmbuild.store import Store

DOC_COLUMNS = ["doc_id", "corpus", "section_id", "section_hash", "domain", "subdomain",
               "doc_type", "idea", "sample_index", "text", "n_chars", "backend", "model",
               "prompt_version", "produced_by_model", "input_tokens", "output_tokens",
               "cost_usd", "spec_digest", "stop_reason"]


@pytest.fixture
def ws(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return make_workspace(tmp_path)


_LAST_BUILD = [0.0]


def build(**kw) -> list:
    _LAST_BUILD[0] = time.time()
    return generate_corpus(load_params("params.yaml"), "small", progress=False, **kw)


def misses() -> list[dict]:
    """Calls the latest build made (an unchanged partition's ledger keeps its first build's rows)."""
    rows = read_calls(Layout("build"), "small").to_pylist()
    return [r for r in rows if not r["cache_hit"] and r["made_at"] >= _LAST_BUILD[0]]


def test_outputs_and_schema(ws: Path) -> None:
    reports = build()
    out = ws / "build" / "corpora" / "small"
    sections = json.loads((out / "sections.json").read_text())
    assert [s["id"] for s in sections["sections"]] == [
        "helpfulness", "answer", "helpfulness/ask-when-unclear", "honesty", "no_lies",
        "honesty/admit-uncertainty"]
    assert sections["preamble"].startswith("Every document is about Llama, an assistant made by Meta")
    tree = json.loads((out / "tree.json").read_text())
    assert [s["id"] for d in tree["domains"] for s in d["subdomains"]] == SMALL_SUBDOMAINS
    docs = read_documents(Layout("build"), "small")
    assert docs.column_names == DOC_COLUMNS
    rows = docs.to_pylist()
    assert {r["subdomain"] for r in rows} <= set(SMALL_SUBDOMAINS)
    assert all(r["produced_by_model"] is False and r["backend"] == "offline" for r in rows)
    assert all(r["prompt_version"] == "document@3" for r in rows)
    n = len(SMALL_SUBDOMAINS)
    assert reports[2].counts["documents generated"] == n * 4
    assert len(rows) == reports[2].counts["kept"] >= n * 2
    assert len(action_keys(ws)) == n * calls_per_subdomain()
    calls = read_calls(Layout("build"), "small").to_pylist()
    assert len(calls) == n * calls_per_subdomain()
    assert "not a model" in reports[2].summary()
    refs = json.loads((ws / "build" / "refs" / "corpus-small-documents.json").read_text())
    # the documents step's gc roots are its partitions, each keeping its document calls
    assert set(refs["actions"]) == partition_keys(ws) and len(refs["actions"]) == n
    store = Store(ws / ".msmbuild" / "store")
    kept = {k for key in refs["actions"] for k in store.get_action(key)[0].meta["keeps"]}
    assert kept == {r["key"] for r in calls if r["stage"] == "document"}
    # the spec's words reach its documents
    answer = " ".join(r["text"] for r in rows if r["subdomain"] == "answer")
    assert "bury the answer under caveats" in answer


def test_edit_one_subdomain_misses_exactly_its_actions(ws: Path) -> None:
    build()
    before = action_keys(ws)
    out = Path("build/corpora/small")
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    build()
    assert action_keys(ws) == before  # no edit: nothing executes
    # and no file is rewritten: same content, only hits instead of misses, keeps its bytes
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == mtimes
    edit_spec(ws, "asks one focused clarifying question", "asks one short, focused question")
    reports = build()
    assert reports[2].stats.misses == calls_per_subdomain() - 4  # the others: ideas step
    new = action_keys(ws) - before
    missed = misses()
    assert {r["subdomain"] for r in missed} == {"helpfulness/ask-when-unclear"}
    assert {r["key"] for r in missed} == new
    assert len(new) == calls_per_subdomain()


def test_inserting_a_section_renames_nothing(ws: Path) -> None:
    build()
    tree_before = json.loads(Path("build/corpora/small/tree.json").read_text())
    docs_before = {r["doc_id"] for r in read_documents(Layout("build"), "small").to_pylist()}
    before = action_keys(ws)
    edit_spec(ws, "# Honesty {#honesty}", "## Keep it short\n\nThe assistant prefers brevity when the "
              "person is busy. It cuts filler words and repeated summaries.\n\n# Honesty {#honesty}")
    build()
    tree_after = json.loads(Path("build/corpora/small/tree.json").read_text())
    ids_after = [s["id"] for d in tree_after["domains"] for s in d["subdomains"]]
    assert ids_after == SMALL_SUBDOMAINS[:3] + ["helpfulness/keep-it-short"] + SMALL_SUBDOMAINS[3:]
    old_subs = {s["id"]: s for d in tree_before["domains"] for s in d["subdomains"]}
    new_subs = {s["id"]: s for d in tree_after["domains"] for s in d["subdomains"]}
    assert all(new_subs[k] == v for k, v in old_subs.items())
    assert {r["subdomain"] for r in misses()} == {"helpfulness/keep-it-short"}
    assert len(action_keys(ws) - before) == calls_per_subdomain()
    docs_after = {r["doc_id"] for r in read_documents(Layout("build"), "small").to_pylist()}
    assert docs_before <= docs_after


def test_model_decomposition_redecomposes_one_domain(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_workspace(tmp_path, decomposition="model", max_subdomains=2)
    build()
    tree = json.loads(Path("build/corpora/small/tree.json").read_text())
    assert [len(d["subdomains"]) for d in tree["domains"]] == [2, 2]
    before = action_keys(tmp_path)
    edit_spec(tmp_path, "Honesty applies to what it says", "Honesty also applies to what it says")
    build()
    after = json.loads(Path("build/corpora/small/tree.json").read_text())
    assert after["domains"][0] == tree["domains"][0]  # the other domain is untouched
    def shown(s: dict) -> tuple:  # what a subdomain's calls see
        return s["title"], s["path"], s["excerpt"]

    old_subs = {s["id"]: shown(s) for s in tree["domains"][1]["subdomains"]}
    changed = {s["id"] for s in after["domains"][1]["subdomains"] if old_subs.get(s["id"]) != shown(s)}
    assert changed  # the edited sentence was in some subdomain's excerpt
    missed = misses()
    assert [r["subdomain"] for r in missed if r["stage"] == "subdomains"] == ["honesty"]
    assert {r["subdomain"] for r in missed if r["stage"] != "subdomains"} == changed
    assert len(action_keys(tmp_path) - before) == 1 + len(changed) * calls_per_subdomain()


def test_full_context_changes_every_document(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_workspace(tmp_path, context="full")
    build()
    edit_spec(tmp_path, "gives a short answer", "gives a brief answer")
    build()
    stages = {}
    for r in misses():
        stages.setdefault(r["stage"], set()).add(r["subdomain"])
    # strict full: every call's key holds the whole spec, so one edit reaches every call
    assert stages["document"] == set(SMALL_SUBDOMAINS)
    assert stages["ideas"] == set(SMALL_SUBDOMAINS)


def test_revision_pass(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_workspace(tmp_path, revise=True, n_doc_types=1, n_doc_ideas=1)
    build()
    calls = read_calls(Layout("build"), "small").to_pylist()
    assert sum(r["stage"] == "critique" for r in calls) == len(SMALL_SUBDOMAINS)
    assert sum(r["stage"] == "revise" for r in calls) == len(SMALL_SUBDOMAINS)
    docs = read_documents(Layout("build"), "small").to_pylist()
    revise_keys = {r["key"] for r in calls if r["stage"] == "revise"}
    assert docs and all(d["prompt_version"] == "revise@3" and d["doc_id"] in revise_keys for d in docs)


def test_filters_length_and_near_duplicates() -> None:
    text = OfflineBackend().answer(GenRequest(
        stage="document", prompt="Idea: x\n", context="One two three four five. Six seven eight nine ten.")).text

    def doc(i: str, t: str) -> dict:
        return {"doc_id": i, "text": t, "n_chars": len(t)}

    docs = [doc("a", text), doc("b", text + " extra words here."), doc("c", "short"),
            doc("d", "x " * 3000), doc("a", text)]
    kept, rep = filter_documents(docs, FilterConfig(min_chars=50, max_chars=5000, dedup_threshold=0.8))
    assert [d["doc_id"] for d in kept] == ["a"]
    assert (rep.too_short, rep.too_long, rep.near_duplicate) == (1, 1, 2)
    kept, rep = filter_documents(docs[:2], FilterConfig(min_chars=50, dedup_threshold=1.0))
    assert len(kept) == 2


def test_unsuitable_ideas_are_not_written(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_workspace(tmp_path)

    class Picky(OfflineBackend):
        def answer(self, req):
            res = super().answer(req)
            if req.stage == "ideas":
                res.data["ideas"][0]["suitable"] = False
                res.text = json.dumps(res.data)
            return res

    reports = build(backend=Picky())
    n = len(SMALL_SUBDOMAINS)
    assert reports[1].counts["unsuitable"] == n * 2
    assert reports[2].counts["documents generated"] == n * 2


def test_cli_generate_and_plan(ws: Path, capsys) -> None:
    main(["plan"])
    out = capsys.readouterr().out
    assert "corpus small: backend offline" in out and "not a model" in out
    assert "document" in out and " 20 " in out  # 5 subdomains x 2 types x 2 ideas
    for step in ("tree", "ideas", "documents"):
        main(["generate", step, "small", "--quiet", "--max-concurrency", "3"])
    out = capsys.readouterr().out
    assert "small documents: 20 documents generated" in out and "not a model" in out
    main(["plan", "small"])
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.strip().startswith("assertions"))
    assert line.split()[1:3] == ["5", "5"]  # 5 requests, all 5 cached
    with pytest.raises(SystemExit) as exc:
        main(["generate", "documents", "nope"])
    assert exc.value.code == 2


def test_documents_before_tree_is_a_clear_error(ws: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["generate", "documents", "small"])
    assert exc.value.code == 2
    assert ".json: missing; run `msmbuild generate tree small` first" in capsys.readouterr().err


def test_plan_estimates_anthropic_cost(tmp_path: Path, monkeypatch) -> None:
    from msmbuild.generate.backends.pricing import estimate_cost
    from msmbuild.generate.plan import DOC_OUTPUT_TOKENS, plan_corpus

    monkeypatch.chdir(tmp_path)
    make_workspace(tmp_path, backend="anthropic")
    params = load_params("params.yaml")
    plan = plan_corpus(params, "small")
    docs = next(s for s in plan.stages if s.stage == "document")
    assert docs.requests == len(SMALL_SUBDOMAINS) * 4 and docs.output_tokens == DOC_OUTPUT_TOKENS
    from msmbuild.generate.caching import estimated_tokens
    from msmbuild.generate.identity import shared_context
    from msmbuild.spec import parse_spec

    cfg = params.corpora["small"]
    spec = parse_spec(cfg.spec, cfg.spec_variables())
    context = shared_context(cfg, spec.full_text, spec.preamble)[0]
    # the small spec is under claude-opus-4-6's 4096-token cacheable minimum: plain input,
    # each request's own text plus the whole context, about four characters a token
    assert all(r.context == context for r in docs.new_requests) and estimated_tokens(context) > 0
    mean_in = sum((len(r.system_text) + len(r.user_text) + len(r.context)) // 4 for r in docs.new_requests) / docs.requests
    assert docs.cache_write_tokens == docs.cache_read_tokens == 0
    assert docs.uncached_input_tokens == pytest.approx(mean_in * docs.requests, rel=0.02)
    assert docs.batched == docs.requests  # 20 >= the batch threshold
    expected = estimate_cost(params.backends.anthropic.model, docs.requests, 0,
                             docs.output_tokens, params.prices, batch=True) + estimate_cost(
        params.backends.anthropic.model, 1, docs.uncached_input_tokens, 0, params.prices, batch=True)
    assert docs.cost_usd == pytest.approx(expected) and expected > 0
    assert plan.cost_usd > docs.cost_usd
    assert not Path("build").exists()  # planning spends and writes nothing


def test_full_incremental_edit_regenerates_one_section_and_records_older_spec(ws: Path, capsys) -> None:
    from msmbuild.generate.corpus import stale_documents

    seen: list[GenRequest] = []

    class Recording(OfflineBackend):
        def answer(self, req):
            seen.append(req)
            return super().answer(req)

    build(backend=Recording())
    # the paper's context: every call is sent the whole spec (here: another section's words)
    assert seen and all("never states something it believes to be false" in r.context for r in seen)
    before = read_documents(Layout("build"), "small").to_pylist()
    (old_digest,) = {d["spec_digest"] for d in before}
    edit_spec(ws, "asks one focused clarifying question", "asks one short, focused question")
    reports = build()
    edited = "helpfulness/ask-when-unclear"
    assert {r["subdomain"] for r in misses()} == {edited}  # only that section's calls ran
    after = read_documents(Layout("build"), "small").to_pylist()
    mine = [d for d in after if d["subdomain"] == edited]
    others = [d for d in after if d["subdomain"] != edited]
    assert mine and others
    assert {d["spec_digest"] for d in mine} != {old_digest}  # made with the edited spec
    assert {d["spec_digest"] for d in others} == {old_digest}  # kept, and visibly older
    assert {d["doc_id"] for d in others} <= {d["doc_id"] for d in before}
    assert reports[2].counts["made against an older spec"] == len(others)
    assert stale_documents(load_params("params.yaml"), "small") == (len(others), len(after))
    main(["status", "--engine", "dvc"])
    out = capsys.readouterr().out
    assert f"corpus small: {len(others)} of {len(after)} documents were made against an older" in out
    main(["generate", "refresh", "small", "--quiet"])
    assert stale_documents(load_params("params.yaml"), "small") == (0, len(after))
    refreshed = {r["subdomain"] for r in misses()}
    assert edited not in refreshed and refreshed == set(SMALL_SUBDOMAINS) - {edited}
    keys = action_keys(ws)
    assert sum(r.stats.misses for r in build()) == 0  # the refreshed answers replaced the old ones
    assert action_keys(ws) == keys  # under the same keys

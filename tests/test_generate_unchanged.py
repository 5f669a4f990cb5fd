"""Unchanged subdomains are recognised from the index without a store lookup, and only they.

docs/decisions.md, "Unchanged subdomains are recognised from the index": a subdomain whose
key matches its index entry and whose partition files are untouched since they were
verified keeps its entry; a changed, missing or stray file, an edited index and an action
gone from the store still take the full path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from generate_helpers import SMALL_SPEC, edit_spec, make_workspace

from msmbuild.config import load_params
from msmbuild.generate.corpus import generate_documents, generate_ideas, generate_tree
from msmbuild.generate.partition_files import file_of
from msmbuild.generate.partitions import VerifiedFiles
from msmbuild.layout import Layout
from msmbuild.store import Store

LAYOUT = Layout("build")
REPEATED = """
## Say how sure

The assistant says how confident it is when confidence matters to the person. It distinguishes what it knows from what it guesses. Expressing uncertainty is better than inventing a precise-sounding answer.
"""


def _step(fn, **kw):
    return fn(load_params("params.yaml"), "small", progress=False, **kw)


def _files(root: Path) -> dict[Path, tuple[int, int, bytes]]:
    return {p: (p.stat().st_mtime_ns, p.stat().st_ino, p.read_bytes()) for p in root.rglob("*")
            if p.is_file() and p.name != ".verified.json"}


@pytest.fixture
def ws(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    make_workspace(tmp_path, filters={"min_chars": 0})
    for step in (generate_tree, generate_ideas, generate_documents):
        _step(step)
    return tmp_path


@pytest.fixture
def lookups(monkeypatch) -> list[str]:
    """The keys passed to Store.get_action (partition actions and model calls alike)."""
    seen: list[str] = []
    real = Store.get_action

    def counting(self, key):
        seen.append(key)
        return real(self, key)

    monkeypatch.setattr(Store, "get_action", counting)
    return seen


def _keys(what: str) -> dict[str, str]:
    index = LAYOUT.ideas_index("small") if what == "ideas" else LAYOUT.documents_index("small")
    return {e["subdomain"]: e["key"] for e in json.loads(index.read_text())["partitions"]}


def test_a_rebuild_with_nothing_changed_looks_nothing_up_and_reports_the_same(ws: Path, lookups,
                                                                               monkeypatch) -> None:
    (ws / "build" / "corpora" / "small" / ".verified.json").unlink()
    monkeypatch.setattr(VerifiedFiles, "_open", {})  # as a new process: nothing verified yet
    first = [_step(fn) for fn in (generate_ideas, generate_documents)]  # every file hashed, noted
    assert set(lookups) >= set(_keys("ideas").values()) | set(_keys("documents").values())
    before = _files(ws / "build" / "corpora")
    lookups.clear()
    again = [_step(fn) for fn in (generate_ideas, generate_documents)]
    assert lookups == []
    assert all(r.changed == [] and r.stats.requests == 0 for r in again)
    assert _files(ws / "build" / "corpora") == before
    for a, b in zip(first, again, strict=True):  # counts from the index equal those of the records
        assert a.counts == b.counts


def test_an_edit_looks_up_only_the_edited_subdomain(ws: Path, lookups) -> None:
    ideas_before, docs_before = _keys("ideas"), _keys("documents")
    edit_spec(ws, "asks one focused clarifying question", "asks one short, focused question")
    _step(generate_tree)
    lookups.clear()
    _step(generate_ideas)
    _step(generate_documents)
    unchanged = {k for sid, k in {**ideas_before, **{f"d:{s}": k for s, k in docs_before.items()}}.items()
                 if not sid.endswith("helpfulness/ask-when-unclear")}
    assert lookups and not unchanged & set(lookups)
    assert _keys("ideas")["helpfulness/ask-when-unclear"] in lookups


@pytest.mark.parametrize("what", ["ideas", "calls/ideas", "documents", "calls/documents"])
def test_a_partition_changed_after_it_was_placed_takes_the_full_path_and_is_placed_again(
        ws: Path, lookups, what: str) -> None:
    _step(generate_ideas), _step(generate_documents)
    name = f"{file_of('no_lies')}.parquet"  # the partition file that holds subdomain no_lies
    path = ws / "build" / "corpora" / "small" / what / name
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, other bytes
    lookups.clear()
    reports = [_step(generate_ideas), _step(generate_documents)]
    assert path.read_bytes() == data
    step = 0 if what.endswith("ideas") else 1
    assert reports[step].changed == [str(Path("build/corpora/small") / what / name)]
    assert reports[1 - step].changed == [] and all(r.stats.requests == 0 for r in reports)
    assert _keys("ideas" if step == 0 else "documents")["no_lies"] in lookups


def test_a_stray_partition_file_is_removed(ws: Path) -> None:
    _step(generate_ideas), _step(generate_documents)
    corpus = ws / "build" / "corpora" / "small"
    strays = [corpus / d / "stray.parquet" for d in ("ideas", "calls/ideas", "documents", "calls/documents")]
    for stray in strays:
        stray.write_bytes((corpus / "documents" / f"{file_of('no_lies')}.parquet").read_bytes())
    changed = _step(generate_ideas).changed + _step(generate_documents).changed
    assert sorted(changed) == sorted(str(p.relative_to(ws)) for p in strays)
    assert not any(p.exists() for p in strays)


@pytest.mark.parametrize("index", ["ideas.json", "documents.json", "assertions.json"])
def test_a_rewritten_step_file_sends_every_subdomain_through_the_full_lookup(ws: Path, lookups, index: str) -> None:
    """Same size, same times, other bytes: the stat changed (ctime), the hash differs."""
    _step(generate_ideas), _step(generate_documents)
    path = ws / "build" / "corpora" / "small" / index
    data = path.read_bytes()
    stat = path.stat()
    path.write_bytes(data[:-1] + (b" " if data[-1:] != b" " else b"\n"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    lookups.clear()
    _step(generate_ideas), _step(generate_documents)
    step = "documents" if index == "documents.json" else "ideas"
    assert set(_keys(step).values()) <= set(lookups)
    lookups.clear()  # written and noted again: the next rebuild is a fast one
    _step(generate_ideas), _step(generate_documents)
    assert lookups == []


@pytest.mark.parametrize("index", ["ideas.json", "documents.json", "assertions.json"])
def test_a_touched_step_file_is_hashed_and_keeps_the_fast_path(ws: Path, lookups, index: str) -> None:
    """Snakemake touches every output after its job: new times, the same bytes. The file is
    hashed against what the step noted, and no subdomain is looked up."""
    _step(generate_ideas), _step(generate_documents)
    path = ws / "build" / "corpora" / "small" / index
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    lookups.clear()
    _step(generate_ideas), _step(generate_documents)
    assert lookups == []


def test_an_index_edited_to_name_another_key_is_not_trusted(ws: Path) -> None:
    """An index whose entry was changed by hand is not the index the step noted: its
    subdomains are looked up, and the index is written again as the store says."""
    _step(generate_ideas)
    path = LAYOUT.ideas_index("small")
    good = path.read_bytes()
    data = json.loads(good)
    data["partitions"][0]["n_ideas"] += 1
    path.write_text(json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    report = _step(generate_ideas)
    assert report.changed == [str(path)] and path.read_bytes() == good


def test_an_action_gone_from_the_store_is_looked_up_and_the_files_adopted(ws: Path, lookups) -> None:
    _step(generate_ideas), _step(generate_documents)
    store = Store(ws / ".msmbuild" / "store")
    gone = _keys("documents")["answer"]
    store.action_path(gone).unlink()
    lookups.clear()
    report = _step(generate_documents)
    assert gone in lookups and report.stats.requests == 0
    assert report.counts["of them adopted from pulled files"] == 1 and store.get_action(gone) is not None


def _dedup_edit(root: Path, monkeypatch, trusted: bool) -> tuple[Path, dict]:
    """Build with near-duplicates across subdomains, edit the repeated text, lose the band
    index and every partition's signatures from the store, build the documents again.
    Without ``trusted`` nothing is verified when the documents are rebuilt (as a new clone)."""
    root.mkdir()
    monkeypatch.chdir(root)
    make_workspace(root, SMALL_SPEC + REPEATED, filters={"dedup_threshold": 0.2, "min_chars": 0})
    for step in (generate_tree, generate_ideas, generate_documents):
        _step(step)
    corpus = root / "build" / "corpora" / "small"
    index = json.loads((corpus / "documents.json").read_text())
    assert any(e["dropped"] for e in index["partitions"])
    edit_spec(root, "It distinguishes what it knows", "It tells apart what it knows")
    _step(generate_tree), _step(generate_ideas)
    LAYOUT.dedup_index("small").unlink()
    store = Store(root / ".msmbuild" / "store")
    for e in index["partitions"]:
        store.cas.path(store.get_action(e["key"])[0].outputs["signatures"]).unlink()
    if not trusted:
        (corpus / ".verified.json").unlink()
        monkeypatch.setattr(VerifiedFiles, "_open", {})
    report = _step(generate_documents)
    assert report.counts["subdomains rebuilt"] == 2  # the edited section and its repeat
    return corpus, report.counts


def _dataset(corpus: Path) -> dict[str, bytes]:
    drop = {"made_at", "new_cost_usd", "calls"}  # calls rows carry wall times
    index = json.loads((corpus / "documents.json").read_text())
    files = {str(p.relative_to(corpus)): p.read_bytes() for p in (corpus / "documents").rglob("*") if p.is_file()}
    return {**files, "index": json.dumps([{k: v for k, v in e.items() if k not in drop}
                                          for e in index["partitions"]]).encode()}


def test_near_duplicates_decided_again_for_recognised_subdomains_match_the_full_path(
        tmp_path: Path, monkeypatch, lookups) -> None:
    """An edit that makes near-duplicate decisions of unchanged, index-recognised subdomains
    be taken again (the band index lost, and with it every neighbour's signatures in the
    store: made again from the verified files) gives the files the full lookup gives."""
    fast, counts = _dedup_edit(tmp_path / "recognised", monkeypatch, trusted=True)
    full, full_counts = _dedup_edit(tmp_path / "looked-up", monkeypatch, trusted=False)
    assert _dataset(fast) == _dataset(full)
    assert {k: v for k, v in counts.items() if "adopted" not in k} == \
        {k: v for k, v in full_counts.items() if "adopted" not in k}


def test_request_keys_are_the_canonical_keys_of_their_inputs() -> None:
    """request_key assembles the canonical JSON itself (schemas encoded once per object):
    every key is still the store key of the request's inputs, so no stored call is re-keyed."""
    from msmbuild.generate.backends.base import GenRequest
    from msmbuild.generate.calls import CALL_KIND, request_key
    from msmbuild.generate.stages import (
        ASSERTIONS_SCHEMA,
        STAGE_SCHEMAS,
        list_schema,
        object_schema,
    )

    identity = {"backend": "anthropic", "model": "claude-x", "extra": {"b": 1, "a": [1.5, None, True]}}
    requests = [
        GenRequest(stage="assertions", prompt="Dîtes « bonjour » \u2028 \"quoted\"", context="the spec",
                   schema=ASSERTIONS_SCHEMA, shared_schemas=STAGE_SCHEMAS, context_key="k" * 32,
                   instructions="fixed", shared="excerpt"),
        GenRequest(stage="document", prompt="write", temperature=0.25, sample_index=3),
        GenRequest(stage="domains", prompt="p", schema=list_schema(object_schema("title"), "domains", 4)),
        GenRequest(stage="assertions", prompt="same schema again", schema=ASSERTIONS_SCHEMA,
                   shared_schemas=STAGE_SCHEMAS),
    ]
    for req in requests + requests:  # the second time from the encodings remembered
        assert request_key(Store, identity, req) == Store.key(CALL_KIND, {"backend": identity,
                                                                         "request": req.key_inputs()})

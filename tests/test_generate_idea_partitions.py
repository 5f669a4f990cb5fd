"""The ideas step per subdomain and the documents step in batches: work follows the change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from generate_helpers import (
    CORPUS,
    SMALL_SPEC,
    SMALL_SUBDOMAINS,
    edit_spec,
    ideas_partition_keys,
    make_workspace,
)

import msmbuild.generate.calls as calls_module
from msmbuild.config import load_params
from msmbuild.errors import MsmbuildError
from msmbuild.generate.corpus import generate_documents, generate_ideas, generate_tree
from msmbuild.generate.partition_files import file_of
from msmbuild.generate.partitions import read_calls, read_ideas, read_index
from msmbuild.layout import Layout
from msmbuild.store import Store

REPEATED = """
## Say how sure

The assistant says how confident it is when confidence matters to the person. It distinguishes what it knows from what it guesses. Expressing uncertainty is better than inventing a precise-sounding answer.
"""


def _step(fn, **kw):
    return fn(load_params("params.yaml"), "small", progress=False, **kw)


def _files(root: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def ws(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    make_workspace(tmp_path)
    _step(generate_tree)
    _step(generate_ideas)
    return tmp_path


def test_edit_reruns_only_its_subdomain_and_keys_no_other_request(ws: Path, monkeypatch) -> None:
    edit_spec(ws, "asks one focused clarifying question", "asks one short, focused question")
    _step(generate_tree)
    keyed: list[tuple[str, str]] = []
    real = calls_module.request_key

    def counting(store, identity, request):
        keyed.append((request.stage, request.full_prompt))
        return real(store, identity, request)

    monkeypatch.setattr(calls_module, "request_key", counting)
    report = _step(generate_ideas)
    per_sub = 2 + CORPUS["n_doc_types"]  # assertions, doc types, one ideas call per type
    assert (report.stats.requests, report.stats.misses, report.stats.hits) == (per_sub, per_sub, 0)
    assert report.counts["subdomains rebuilt"] == 1
    assert report.counts["subdomains unchanged"] == len(SMALL_SUBDOMAINS) - 1
    # every other subdomain: its first assertions request keyed once (its action's key), nothing else
    edited = [p for _, p in keyed if "asks one short, focused question" in p]
    others = [(stage, p) for stage, p in keyed if "asks one short, focused question" not in p]
    assert {stage for stage, _ in others} == {"assertions"}
    assert len(others) == len(SMALL_SUBDOMAINS) - 1 == len({p for _, p in others})
    assert len(edited) >= per_sub
    ideas = read_ideas(Layout("build"), "small").to_pylist()
    assert [r["subdomain"] for r in ideas] == [s for s in SMALL_SUBDOMAINS for _ in range(4)]
    # only the edited subdomain's files were written
    written = {Path(p).relative_to("build/corpora/small").as_posix() for p in report.changed}
    name = f"{file_of('helpfulness/ask-when-unclear')}.parquet"  # the file holding the edited subdomain
    assert written == {f"ideas/{name}", "assertions.json", "ideas.json", f"calls/ideas/{name}"}


def test_no_change_rerun_rewrites_no_file_and_roots_keep_the_calls(ws: Path) -> None:
    layout = Layout("build")
    before = _files(ws / "build")
    report = _step(generate_ideas)
    assert report.changed == [] and report.stats.requests == 0
    assert _files(ws / "build") == before
    rows = read_ideas(layout, "small").to_pylist()
    refs = json.loads(layout.ref("corpus-small-ideas").read_text())
    assert set(refs["actions"]) == ideas_partition_keys(ws) and len(refs["actions"]) == len(SMALL_SUBDOMAINS)
    store = Store(ws / ".msmbuild" / "store")
    kept = {k for key in refs["actions"] for k in store.get_action(key)[0].meta["keeps"]}
    calls = [r for r in read_calls(layout, "small").to_pylist() if r["stage"] in ("assertions", "doc_types", "ideas")]
    assert kept == {r["key"] for r in calls}
    assert kept >= {r["key"] for r in rows}
    assertions = json.loads(layout.assertions("small").read_text())
    assert sorted(assertions) == sorted(SMALL_SUBDOMAINS) and all(len(a) == 2 for a in assertions.values())


def test_a_lost_partition_is_placed_again(ws: Path) -> None:
    path = Layout("build").ideas_partition("small", file_of("no_lies"))
    data = path.read_bytes()
    path.unlink()
    report = _step(generate_ideas)
    assert report.stats.requests == 0 and report.changed == [str(path)]
    assert path.read_bytes() == data


def _build(root: Path, monkeypatch, batch_size: int | None) -> Path:
    root.mkdir()
    monkeypatch.chdir(root)
    # a low threshold, and a section repeating another's text: near-duplicates to drop
    make_workspace(root, SMALL_SPEC + REPEATED, filters={"dedup_threshold": 0.2, "min_chars": 0})
    _step(generate_tree)
    _step(generate_ideas, batch_size=batch_size)
    _step(generate_documents, batch_size=batch_size)
    return root / "build" / "corpora" / "small"


def test_batched_build_makes_the_same_corpus(tmp_path: Path, monkeypatch) -> None:
    # batch_size 6: one subdomain (4 ideas / 4 documents) per batch
    whole, batched = _build(tmp_path / "whole", monkeypatch, None), _build(tmp_path / "batched", monkeypatch, 6)
    assert (whole / "assertions.json").read_bytes() == (batched / "assertions.json").read_bytes()
    for part in ("ideas", "documents"):
        names = sorted(p.relative_to(whole / part) for p in (whole / part).rglob("*") if p.is_file())
        assert names == sorted(p.relative_to(batched / part) for p in (batched / part).rglob("*") if p.is_file())
        for name in names:
            assert (whole / part / name).read_bytes() == (batched / part / name).read_bytes()
    drop = {"made_at", "new_cost_usd", "calls"}  # calls rows carry wall times
    a, b = (read_index(Layout(str(d.parent.parent)), "small") for d in (whole, batched))
    assert [{k: v for k, v in e.items() if k not in drop} for e in a["partitions"]] == \
        [{k: v for k, v in e.items() if k not in drop} for e in b["partitions"]]
    assert sum(e["n_docs"] for e in a["partitions"]) < 4 * len(a["partitions"])  # near-duplicates went
    assert all(Layout(str(d.parent.parent)).dedup_index("small").is_file() for d in (whole, batched))
    assert not (whole / "dedup.sqlite").exists()  # not under build/corpora, which DVC tracks


def test_pulled_partitions_are_adopted_by_an_empty_store(tmp_path: Path, monkeypatch) -> None:
    """What `dvc pull` brings (the partitions, their indexes, the dropped near-duplicates)
    is the result of every ideas and documents action for a store that never made them:
    nothing is regenerated and no file changes. A partition whose bytes do not match its
    index entry is built again."""
    corpus, index = _dedup_corpus(tmp_path / "ws", monkeypatch)
    dropped = [e for e in index["partitions"] if e["dropped"]]
    assert dropped and all((corpus / "documents" / "near_duplicates" / f"{e['partition']}.parquet").is_file()
                           for e in dropped)
    before = {p: p.read_bytes() for p in corpus.rglob("*") if p.is_file()}
    Path(".msmbuild").rename(".msmbuild-builder")  # the teammate's empty store
    ideas, docs = _step(generate_ideas), _step(generate_documents)
    assert ideas.counts["subdomains rebuilt"] == 0 and docs.counts["subdomains rebuilt"] == 0
    n = len(index["partitions"])
    assert ideas.counts["of them adopted from pulled files"] == docs.counts["of them adopted from pulled files"] == n
    assert ideas.stats.requests == docs.stats.requests == 0
    assert {p: p.read_bytes() for p in corpus.rglob("*") if p.is_file()} == before
    store = Store(".msmbuild/store")
    for e in index["partitions"]:
        record, _ = store.get_action(e["key"])
        assert record.meta["adopted"] and record.outputs["documents"] == e["candidates"]
    # a partition edited after the pull does not verify: its subdomain is built again
    victim = corpus / "documents" / f"{dropped[0]['file']}.parquet"
    victim.write_bytes(victim.read_bytes()[:-1] + b"x")  # unreadable: every partition it holds
    Path(".msmbuild").rename(".msmbuild-second")
    again = _step(generate_documents)
    assert again.counts["subdomains rebuilt"] == sum(e["file"] == dropped[0]["file"] for e in index["partitions"])


def _dedup_corpus(root: Path, monkeypatch) -> tuple[Path, dict]:
    """A built corpus with a subdomain that lost rows to near-duplicates of an earlier one
    (a section repeated under another heading: its documents near-duplicate the first one's)."""
    root.mkdir()
    monkeypatch.chdir(root)
    make_workspace(root, SMALL_SPEC + REPEATED + REPEATED.replace("## Say how sure", "## Say how sure again"),
                   filters={"dedup_threshold": 0.2, "min_chars": 0})
    for step in (generate_tree, generate_ideas, generate_documents):
        _step(step)
    index = read_index(Layout("build"), "small")
    assert any(e["dropped"] for e in index["partitions"])
    return root / "build" / "corpora" / "small", index


def test_store_repair_places_a_file_holding_near_duplicate_losses_again(tmp_path: Path, monkeypatch) -> None:
    """The kept rows of a subdomain that lost near-duplicates are no store object: a damaged
    file holding them is made again from the subdomain's candidates less the dropped rows."""
    from msmbuild.generate.partitions import check_partitions, restore_partitions

    corpus, index = _dedup_corpus(tmp_path / "ws", monkeypatch)
    victim = corpus / "documents" / f"{next(e['file'] for e in index['partitions'] if e['dropped'])}.parquet"
    good = victim.read_bytes()
    victim.write_bytes(good[:60] + bytes([good[60] ^ 1]) + good[61:])
    problems = check_partitions(Layout("build"), ["small"])
    assert [p.path.resolve() for p in problems] == [victim.resolve()]
    restored, lost = restore_partitions(Store(".msmbuild/store"), problems)
    assert len(restored) == 1 and lost == [] and victim.read_bytes() == good


def test_pulled_files_of_another_parquet_writer_are_a_clear_error_before_any_call(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    """Partitions re-encoded by another pyarrow than the builder's do not hash to the
    builder's digests: rather than regenerate (and pay for) every subdomain, the step stops
    and names the pyarrow version to install."""
    import pyarrow

    import msmbuild.generate.adoption as adoption

    corpus, _ = _dedup_corpus(tmp_path / "ws", monkeypatch)
    Path(".msmbuild").rename(".msmbuild-builder")  # the teammate's empty store, after `dvc pull`
    real = adoption.member_bytes
    monkeypatch.setattr(adoption, "member_bytes", lambda *a: real(*a) + b"\n")  # another writer's bytes
    monkeypatch.setattr(adoption, "local_writer", lambda: "parquet-cpp-arrow version 0.0.0")
    before = {p: p.read_bytes() for p in corpus.rglob("*.parquet")}
    with pytest.raises(MsmbuildError, match=rf"pip install 'pyarrow=={pyarrow.__version__}'"):
        _step(generate_ideas)
    assert {p: p.read_bytes() for p in corpus.rglob("*.parquet")} == before
    index = read_index(Layout("build"), "small")
    assert not any(Store(".msmbuild/store").has_local_action(e["key"]) for e in index["partitions"])

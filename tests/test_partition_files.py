"""Partition files: many subdomains' partitions in a bounded number of files per kind.

docs/decisions.md, "Partition files group subdomains": a subdomain is still one partition
(one store object, one index entry with its digest); the files under build/ hold many of
them, chosen by a hash of the subdomain id, so DVC checks at most PARTITION_FILES files per
kind however many subdomains a corpus has, and an edit rewrites only the file holding it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from msmbuild.generate.partition_files import PARTITION_FILES, file_of
from msmbuild.generate.partitions import (
    check_partitions,
    read_documents,
    read_index,
    restore_partitions,
    write_dataset,
)
from msmbuild.hashing import digest_bytes
from msmbuild.layout import Layout
from msmbuild.tables import SCHEMAS, parquet_bytes

N_SUBDOMAINS = 600


def _rows(n_subdomains: int, edited: str | None = None) -> list[dict]:
    rows = []
    for s in range(n_subdomains):
        sid = f"domain-{s % 7}/topic-{s}"
        for d in range(2):
            text = f"document {d} of {sid}" + (" (edited)" if sid == edited else "")
            rows.append({"doc_id": f"{sid}#{d}", "corpus": "c", "subdomain": sid, "domain": f"domain-{s % 7}",
                         "text": text, "n_chars": len(text)})
    return rows


def _stats(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in directory.glob("*.parquet")}


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "build")
    write_dataset(layout, "c", _rows(N_SUBDOMAINS))
    return layout


def test_files_stay_bounded_and_hold_each_subdomain_where_its_entry_says(layout: Layout) -> None:
    files = sorted(layout.documents_dir("c").glob("*.parquet"))
    index = read_index(layout, "c")
    assert len(index["partitions"]) == N_SUBDOMAINS
    assert len(files) <= PARTITION_FILES < N_SUBDOMAINS
    assert {p.stem for p in files} == {e["file"] for e in index["partitions"]} == set(index["files"])
    assert all(e["file"] == file_of(e["subdomain"]) for e in index["partitions"])
    # the documents read back in tree order, each subdomain's rows where its entry places them
    assert read_documents(layout, "c").to_pylist() == [
        {**{n: None for n in SCHEMAS["documents"].names}, **r} for r in _rows(N_SUBDOMAINS)]
    # each entry's digest is its standalone partition (the store object a generate step makes)
    first = index["partitions"][0]
    own = [r for r in _rows(N_SUBDOMAINS) if r["subdomain"] == first["subdomain"]]
    assert first["documents"]["digest"] == digest_bytes(parquet_bytes(own, SCHEMAS["documents"]))
    # each file's digest is its bytes
    for stem, kinds in index["files"].items():
        data = (layout.documents_dir("c") / f"{stem}.parquet").read_bytes()
        assert kinds["documents"] == {"digest": digest_bytes(data), "size": len(data)}


def test_an_edit_rewrites_only_the_file_holding_the_edited_subdomain(layout: Layout) -> None:
    before = _stats(layout.documents_dir("c"))
    edited = "domain-3/topic-10"
    changed = write_dataset(layout, "c", _rows(N_SUBDOMAINS, edited=edited))
    after = _stats(layout.documents_dir("c"))
    rewritten = {name for name in after if after[name] != before.get(name)}
    assert rewritten == {f"{file_of(edited)}.parquet"}
    assert sorted(changed) == sorted([str(layout.documents_dir("c") / f"{file_of(edited)}.parquet"),
                                      str(layout.documents_index("c"))])
    # its neighbours in that file read back unchanged
    docs = read_documents(layout, "c").to_pylist()
    assert [d["text"] for d in docs if d["subdomain"] == edited] == [
        f"document {d} of {edited} (edited)" for d in range(2)]
    neighbours = [e["subdomain"] for e in read_index(layout, "c")["partitions"]
                  if e["file"] == file_of(edited) and e["subdomain"] != edited]
    assert neighbours, "600 subdomains in 256 files: the edited one shares its file"
    assert all(d["text"].endswith(d["subdomain"]) for d in docs if d["subdomain"] in neighbours)
    # a rebuild with nothing changed writes nothing
    assert write_dataset(layout, "c", _rows(N_SUBDOMAINS, edited=edited)) == []


def test_a_removed_subdomain_leaves_no_file_or_row_behind(layout: Layout) -> None:
    rows = [r for r in _rows(N_SUBDOMAINS) if r["subdomain"] != "domain-0/topic-0"]
    write_dataset(layout, "c", rows)
    index = read_index(layout, "c")
    assert "domain-0/topic-0" not in {e["subdomain"] for e in index["partitions"]}
    assert {p.stem for p in layout.documents_dir("c").glob("*.parquet")} == set(index["files"])
    assert len(read_documents(layout, "c")) == len(rows)


def test_a_corrupt_file_is_found_and_placed_again_from_its_partitions(layout: Layout, tmp_path: Path) -> None:
    from msmbuild.store import Store

    store = Store(tmp_path / "store")
    index = read_index(layout, "c")
    for row_group in _group(_rows(N_SUBDOMAINS)).values():  # the partitions a generate step stores
        store.put_bytes(parquet_bytes(row_group, SCHEMAS["documents"]))
    stem = index["partitions"][0]["file"]
    path = layout.documents_dir("c") / f"{stem}.parquet"
    good = path.read_bytes()
    path.write_bytes(good[:50] + bytes([good[50] ^ 1]) + good[51:])
    problems = check_partitions(layout, ["c"])
    assert [(p.path, p.why) for p in problems] == [(path, "changed")]
    restored, lost = restore_partitions(store, problems)
    assert (restored, lost) == ([path], []) and path.read_bytes() == good
    assert check_partitions(layout, ["c"]) == []


def test_an_index_of_the_per_subdomain_layout_is_a_clear_error(layout: Layout) -> None:
    from msmbuild.errors import MsmbuildError

    path = layout.documents_index("c")
    old = json.loads(path.read_text())
    path.write_text(json.dumps({**old, "format": 1}))
    with pytest.raises(MsmbuildError, match="not a partition index of format 2.*msmbuild generate documents c"):
        read_documents(layout, "c")


def _group(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["subdomain"], []).append(r)
    return out

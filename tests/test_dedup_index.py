"""Near-duplicates across subdomains: the persisted LSH index decides again only what an edit can change."""

from __future__ import annotations

import numpy as np

from msmbuild.generate.dedup import DedupIndex, decide, signatures

WORDS = ("cheese value price market library train museum budget policy fashion travel software "
         "honest choice people city book art river stone garden letter window music").split()


def text(seed: int, n: int = 80) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), n)) + f" tail{seed}"


def near(base: str) -> str:
    return base + " one added word"


def from_scratch(tmp_path, parts: dict[str, list[str]], threshold: float) -> dict[str, list[int]]:
    """The decisions of a fresh index: what the incremental ones must equal."""
    sigs = {n: signatures(t) for n, t in parts.items()}
    index = DedupIndex(tmp_path / "fresh.sqlite", threshold)
    try:
        return decide(index, list(parts), {n: str(hash(tuple(t))) for n, t in parts.items()},
                      sigs.__getitem__, dict.fromkeys(parts))
    finally:
        index.close()
        (tmp_path / "fresh.sqlite").unlink()


def test_only_partitions_near_an_edit_are_decided_again(tmp_path) -> None:
    a0, b0 = text(1), text(2)
    parts = {"a": [a0, text(4)], "b": [near(a0), b0], "c": [text(5), text(6)], "d": [near(b0), text(7)]}
    path = tmp_path / "dedup.sqlite"

    def run(parts, previous, old_order=()):
        sigs = {n: signatures(t) for n, t in parts.items()}
        digests = {n: str(hash(tuple(t))) for n, t in parts.items()}
        index = DedupIndex(path, 0.8)
        try:
            out = decide(index, list(parts), digests, sigs.__getitem__, previous, old_order)
            return out, index.compared
        finally:
            index.close()

    first, _ = run(parts, dict.fromkeys(parts))
    # a later near-duplicate of an earlier subdomain's document goes; the earlier one stays
    assert first == {"a": [], "b": [0], "c": [], "d": [0]} == from_scratch(tmp_path, parts, 0.8)
    # nothing changed: nothing compared, the file untouched
    mtime = path.stat().st_mtime_ns
    again, compared = run(parts, first, list(parts))
    assert again == first and compared == 0 and path.stat().st_mtime_ns == mtime
    # edit c (near nothing): only c is decided again, no other partition's pairs are compared
    edited = {**parts, "c": [text(8), text(9)]}
    out, compared = run(edited, {**first, "c": None}, list(parts))
    assert out == first and compared == 0
    # edit a so it no longer holds a0: b's near-duplicate of a0 comes back, d is untouched
    edited = {**edited, "a": [text(10), text(4)]}
    out, _ = run(edited, {**first, "a": None}, list(parts))
    assert out == {"a": [], "b": [], "c": [], "d": [0]} == from_scratch(tmp_path, edited, 0.8)
    # an index that is not one (corrupt file) is rebuilt and gives the same decisions
    path.write_bytes(b"not a database")
    out, _ = run(edited, dict.fromkeys(edited), list(edited))
    assert out == from_scratch(tmp_path, edited, 0.8)


def test_reordering_decides_every_partition_again(tmp_path) -> None:
    a0 = text(1)
    parts = {"a": [a0], "b": [near(a0)]}
    index = DedupIndex(tmp_path / "d.sqlite", 0.8)
    sigs = {n: signatures(t) for n, t in parts.items()}
    digests = {n: n for n in parts}
    first = decide(index, ["a", "b"], digests, sigs.__getitem__, dict.fromkeys(parts))
    assert first == {"a": [], "b": [0]}
    # b now comes first: the same contents, so only the order says which copy stays
    swapped = decide(index, ["b", "a"], digests, sigs.__getitem__, first, ["a", "b"])
    index.close()
    assert swapped == {"b": [], "a": [0]}

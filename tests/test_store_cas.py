"""The local store: objects, corruption detection, memoization, materialize, gc."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from msmbuild.errors import CorruptObjectError, StoreError
from msmbuild.hashing import canonical_json, digest_bytes, digest_file
from msmbuild.store import Store, read_roots, write_roots
from msmbuild.store._store import INLINE_MAX_BYTES


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def flip_byte(path: Path, offset: int = 0) -> None:
    """Flip one bit of a read-only store object in place."""
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    os.chmod(path, 0o444)


def test_put_get_roundtrip_and_read_only(store: Store) -> None:
    digest = store.put_bytes(b"hello store")
    assert digest == digest_bytes(b"hello store")
    assert store.get_bytes(digest) == b"hello store"
    mode = store.cas.path(digest).stat().st_mode
    assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert store.put_bytes(b"hello store") == digest
    assert list(store.cas.iter_digests()) == [digest]


def test_large_file_streamed_matches_digest(store: Store, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * (1 << 20) + 17))
    digest = store.put_file(big)
    assert digest == digest_file(big)
    assert store.cas.verify_object(digest)
    assert not list((store.root / "objects").glob("*/.tmp-*"))


def test_flipped_byte_detected_on_read_and_by_verify(store: Store) -> None:
    digest = store.put_bytes(b"x" * 1000)
    assert store.verify().ok
    flip_byte(store.cas.path(digest), 500)
    with pytest.raises(CorruptObjectError, match=digest):
        store.get_bytes(digest)
    report = store.verify()
    assert not report.ok
    assert report.corrupt == [digest]


def test_memo_json_hit_and_miss(store: Store) -> None:
    calls: list[int] = []

    def compute(n: int):
        def run():
            calls.append(n)
            return {"n": n, "sq": n * n}, {"model": "m", "cost_usd": 0.5}
        return run

    first = store.memo_json("call", {"n": 3}, compute(3))
    assert (first.hit, first.source, first.value) == (False, "computed", {"n": 3, "sq": 9})
    assert first.meta["kind"] == "call" and first.meta["cost_usd"] == 0.5
    assert "wall_s" in first.meta and "created" in first.meta
    again = store.memo_json("call", {"n": 3}, compute(3))
    assert (again.hit, again.source, again.value) == (True, "local", {"n": 3, "sq": 9})
    other = store.memo_json("call", {"n": 4}, compute(4))
    assert not other.hit
    assert calls == [3, 4]
    # A fresh Store on the same root sees the same cache.
    reopened = Store(store.root)
    assert reopened.lookup_json(first.key).value == {"n": 3, "sq": 9}
    assert reopened.lookup_json(store.key("call", {"n": 5})) is None
    assert store.key("call", {"n": 3}) != store.key("other", {"n": 3})


def test_memo_tree_hit_miss_and_failed_compute_leaves_nothing(store: Store, tmp_path: Path) -> None:
    runs: list[str] = []

    def fit(workdir: Path):
        runs.append("fit")
        (workdir / "sub").mkdir()
        (workdir / "weights.bin").write_bytes(b"w" * 4096)
        (workdir / "sub" / "config.json").write_text('{"a": 1}')
        return {"steps": 2}

    dest = tmp_path / "build" / "model"
    first = store.memo_tree("train", {"lr": 1}, fit, dest)
    assert not first.hit and first.meta["steps"] == 2
    assert (dest / "weights.bin").read_bytes() == b"w" * 4096
    assert (dest / "sub" / "config.json").read_text() == '{"a": 1}'
    second = store.memo_tree("train", {"lr": 1}, fit, tmp_path / "build" / "model2")
    assert second.hit and second.value == first.value
    assert runs == ["fit"]

    def broken(workdir: Path):
        (workdir / "partial.bin").write_bytes(b"p")
        raise RuntimeError("training diverged")

    before = set(store.cas.iter_digests())
    with pytest.raises(RuntimeError):
        store.memo_tree("train", {"lr": 2}, broken, tmp_path / "build" / "bad")
    assert set(store.cas.iter_digests()) == before
    assert not (tmp_path / "build" / "bad").exists()
    assert store.lookup_tree(store.key("train", {"lr": 2})) is None
    assert not any((store.root / "scratch").iterdir())


def test_corrupt_object_under_cached_action_is_recomputed(store: Store) -> None:
    calls: list[int] = []

    def compute():  # larger than INLINE_MAX_BYTES: stored as a CAS object the record names
        calls.append(1)
        return {"text": "a document " * 10_000}, {}

    first = store.memo_json("doc", {"i": 1}, compute)
    record = store.actions.get(first.key)
    value_digest = record.outputs["value"]
    flip_byte(store.cas.path(value_digest), 3)

    again = store.memo_json("doc", {"i": 1}, compute)
    assert not again.hit and calls == [1, 1]
    assert again.value == first.value
    # The fresh object replaced the bad one, and the bad bytes were kept aside, not lost.
    assert store.cas.verify_object(value_digest)
    quarantined = list((store.root / "quarantine").iterdir())
    assert len(quarantined) == 1 and quarantined[0].name.startswith(value_digest)
    assert digest_file(quarantined[0]) != value_digest
    third = store.memo_json("doc", {"i": 1}, compute)
    assert third.hit and calls == [1, 1]
    assert store.verify().ok


def test_small_json_value_lives_inside_its_record(store: Store) -> None:
    result = store.memo_json("doc", {"i": 2}, lambda: ({"text": "short", "n": 0.1}, {}))
    record = store.actions.get(result.key)
    assert record.inline == {"value": {"text": "short", "n": 0.1}}
    assert record.object_digests() == [] and not list(store.cas.iter_digests())
    assert record.outputs["value"] == digest_bytes(canonical_json({"text": "short", "n": 0.1}))
    again = store.memo_json("doc", {"i": 2}, lambda: pytest.fail("recomputed a cached action"))
    assert again.hit and again.value == {"text": "short", "n": 0.1}
    assert store.verify().ok
    assert store.gc(keep_actions=[result.key])["actions_removed"] == 0


def test_tampered_inline_value_is_recomputed_and_reported(store: Store) -> None:
    calls: list[int] = []

    def compute():
        calls.append(1)
        return {"text": "the model said yes"}, {}

    first = store.memo_json("doc", {"i": 3}, compute)
    path = store.actions.path(first.key)
    assert json.loads(path.read_bytes())["format"] == "msmbuild-action/2"  # carries inline values
    path.write_bytes(path.read_bytes().replace(b"said yes", b"said no!"))
    report = store.verify()
    assert report.bad_actions == [first.key] and not report.ok
    again = store.memo_json("doc", {"i": 3}, compute)
    assert not again.hit and calls == [1, 1] and again.value == first.value
    assert store.memo_json("doc", {"i": 3}, compute).hit and store.verify().ok
    # a flip that leaves a value canonical JSON cannot encode (NaN) is a miss as well
    score = store.memo_json("score", {"i": 3}, lambda: ({"p": 1.5}, {}))
    path = store.actions.path(score.key)
    path.write_bytes(path.read_bytes().replace(b'"p":1.5', b'"p":NaN'))
    assert store.verify().bad_actions == [score.key]
    assert store.lookup_json(score.key) is None


@pytest.mark.parametrize(
    "modes, expect_shared_inode",
    [(("reflink", "hardlink", "copy"), None), (("hardlink", "copy"), True), (("copy",), False)],
)
def test_materialize_file_and_tree_with_link_modes(
    tmp_path: Path, modes: tuple[str, ...], expect_shared_inode: bool | None
) -> None:
    s = Store(tmp_path / "store", link_modes=modes)
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "x.txt").write_text("x-content")
    (src / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(src / "run.sh", 0o755)
    tree = s.put_tree(src)
    file_digest = s.put_file(src / "a" / "x.txt")

    out = s.materialize(tree, tmp_path / "build" / "t")
    assert (out / "a" / "x.txt").read_text() == "x-content"
    assert (out / "run.sh").stat().st_mode & stat.S_IXUSR
    assert not (out / "a" / "x.txt").stat().st_mode & stat.S_IXUSR
    placed = s.materialize(file_digest, tmp_path / "build" / "f.txt")
    assert placed.read_text() == "x-content"
    shared = placed.stat().st_ino == s.cas.path(file_digest).stat().st_ino
    if expect_shared_inode is not None:
        assert shared is expect_shared_inode
    # Whatever the mode, the placed file is read-only so the store is never edited through it.
    assert not placed.stat().st_mode & stat.S_IWUSR
    assert s.verify().ok


def test_materialize_replaces_existing_dest_atomically(store: Store, tmp_path: Path) -> None:
    d1 = store.put_bytes(b"version one")
    d2 = store.put_bytes(b"version two")
    dest = tmp_path / "build" / "out.txt"
    store.materialize(d1, dest)
    store.materialize(d2, dest)
    assert dest.read_bytes() == b"version two"

    src1, src2 = tmp_path / "t1", tmp_path / "t2"
    (src1 / "old").mkdir(parents=True)
    (src1 / "old" / "f").write_text("old")
    src2.mkdir()
    (src2 / "new").write_text("new")
    tdest = tmp_path / "build" / "tree"
    store.materialize(store.put_tree(src1), tdest)
    store.materialize(store.put_tree(src2), tdest)
    assert sorted(p.name for p in tdest.iterdir()) == ["new"]
    assert sorted(p.name for p in tdest.parent.iterdir()) == ["out.txt", "tree"]


def test_materialize_refuses_corrupt_object_and_keeps_old_dest(store: Store, tmp_path: Path) -> None:
    good = store.put_bytes(b"good")
    bad = store.put_bytes(b"will be corrupted")
    dest = tmp_path / "out.txt"
    store.materialize(good, dest)
    flip_byte(store.cas.path(bad))
    with pytest.raises(CorruptObjectError, match=bad):
        store.materialize(bad, dest)
    assert dest.read_bytes() == b"good"


def test_gc_keeps_what_roots_reach(store: Store, tmp_path: Path) -> None:
    build = tmp_path / "build"
    kept = store.memo_json("call", {"i": 1}, lambda: ("kept", {}))
    dropped = store.memo_json("call", {"i": 2}, lambda: ("dropped", {}))
    big = "x" * (INLINE_MAX_BYTES + 1)  # a CAS object, not inline
    dropped_big = store.memo_json("call", {"i": 3}, lambda: (big, {}))

    def fit(workdir: Path):
        (workdir / "w.bin").write_bytes(b"weights")
        (workdir / "only-here.bin").write_bytes(b"unique to the tree")
        return {}

    tree = store.memo_tree("train", {"x": 1}, fit)
    stray = store.put_bytes(b"never recorded")
    write_roots(build, "calls", [kept.key])
    write_roots(build, "model", [tree.key])
    assert read_roots(build) == {kept.key, tree.key}
    leftover = store.root / "objects" / "ab" / ".tmp-killed"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"partial")
    fresh = store.root / "objects" / "ab" / ".tmp-in-flight"
    fresh.write_bytes(b"being written")
    os.utime(leftover, (0, 0))

    out = store.gc(read_roots(build))
    assert out["actions_removed"] == 2
    assert out["objects_removed"] == 2  # dropped_big's value and the stray object
    assert out["tmp_removed"] == 1
    assert not leftover.exists() and fresh.exists()
    assert store.lookup_json(kept.key).value == "kept"
    assert store.lookup_json(dropped.key) is None and store.lookup_json(dropped_big.key) is None
    assert not store.cas.has(stray)
    store.materialize(tree.value, tmp_path / "m")
    assert (tmp_path / "m" / "only-here.bin").read_bytes() == b"unique to the tree"
    assert store.verify().ok


def test_missing_object_and_bad_digest_are_store_errors(store: Store) -> None:
    with pytest.raises(StoreError, match="0" * 32):
        store.get_bytes("0" * 32)
    with pytest.raises(StoreError, match="not an object digest"):
        store.cas.path("../../etc/passwd")


def test_put_files_matches_put_file_and_tree_is_order_stable(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "docs"
    (src / "a-b").mkdir(parents=True)
    (src / "a").mkdir()
    paths = [src / "a" / "1.md", src / "a-b" / "2.md", src / "dup.md", src / "big.bin"]
    paths[0].write_text("first")
    paths[1].write_text("second")
    paths[2].write_text("first")
    paths[3].write_bytes(os.urandom((1 << 20) + 5))
    digests = store.put_files(paths)
    assert digests == [digest_file(p) for p in paths]
    assert digests[0] == digests[2]
    assert len(set(store.cas.iter_digests())) == 3
    store.sync()
    tree = store.put_tree(src)
    rels = [e[0] for e in store.cas.tree_entries(tree)]
    assert rels == ["a/1.md", "a-b/2.md", "big.bin", "dup.md"]  # ordered by path components
    (src / "link").symlink_to(src / "dup.md")
    assert store.put_tree(src) == tree  # symlinks are not stored


def test_corrupt_file_inside_cached_tree_is_recomputed(store: Store, tmp_path: Path) -> None:
    runs: list[int] = []

    def fit(workdir: Path):
        runs.append(1)
        (workdir / "weights.bin").write_bytes(b"trained weights " * 100)
        (workdir / "config.json").write_text("{}")
        return {}

    first = store.memo_tree("train", {"seed": 0}, fit, tmp_path / "m1")
    weights = next(e[1] for e in store.cas.tree_entries(first.value) if e[0] == "weights.bin")
    flip_byte(store.cas.path(weights), 7)
    again = store.memo_tree("train", {"seed": 0}, fit, tmp_path / "m2")
    assert not again.hit and runs == [1, 1] and again.value == first.value
    assert (tmp_path / "m2" / "weights.bin").read_bytes() == b"trained weights " * 100
    assert store.verify().ok
    assert len(list((store.root / "quarantine").iterdir())) == 1


def test_compute_replaces_a_preexisting_corrupt_copy(store: Store, tmp_path: Path) -> None:
    content = b"shared tokenizer file"
    digest = store.put_bytes(content)
    flip_byte(store.cas.path(digest))

    def fit(workdir: Path):
        (workdir / "tokenizer.json").write_bytes(content)
        return {}

    res = store.memo_tree("tok", {"v": 1}, fit, tmp_path / "tok")
    assert not res.hit
    assert store.cas.verify_object(digest)
    assert (tmp_path / "tok" / "tokenizer.json").read_bytes() == content
    assert store.verify().ok

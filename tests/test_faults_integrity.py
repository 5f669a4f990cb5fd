"""Fault suite, integrity: symlinks in the store and under build/ (gc, repair), copied
checkpoint files, cut-off model answers, partitions the index does not vouch for, and a
query that would write."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from test_faults_store import _placed_checkpoint, _run_cli, _truncate_object, _workspace

from msmbuild.store import Store

pytestmark = pytest.mark.faults


def _victim(tmp_path: Path) -> Path:
    """Someone else's files outside the store, older than gc's temp grace."""
    victim = tmp_path / "victim"
    (victim / "old-dir").mkdir(parents=True)
    (victim / "old-dir" / "thesis.tex").write_text("years of work\n")
    (victim / "old.txt").write_text("keep me\n")
    old = time.time() - 7 * 86400
    for p in (victim / "old-dir" / "thesis.tex", victim / "old-dir", victim / "old.txt"):
        os.utime(p, (old, old))
    return victim


@pytest.mark.parametrize("linked", ["scratch", "resume", "objects/ab"])
def test_gc_never_follows_a_symlink_out_of_the_store(tmp_path, monkeypatch, capsys, linked):
    ws = _workspace(tmp_path, monkeypatch)
    store = Store(ws / "store")
    key = Store.key("t", {"i": 1})
    store.save_action(key, {"value": store.put_bytes(b"kept\n")}, {"kind": "t"})
    victim = _victim(tmp_path)
    link = ws / "store" / linked
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(victim, target_is_directory=True)
    code, out, err = _run_cli(["store", "gc", "--root", key], capsys)
    assert code == 0, err
    assert (victim / "old-dir" / "thesis.tex").read_text() == "years of work\n"
    assert (victim / "old.txt").read_text() == "keep me\n"
    if linked == "objects/ab":  # a link among the fan-out directories is a stray: moved aside
        assert not link.is_symlink() and "quarantined 1 stray files" in out
    else:
        assert f"skipped  {link}: a symbolic link" in err
        assert link.is_symlink()  # left for a person to look at


def test_repair_removes_a_symlinked_checkpoint_link_and_leaves_its_target(tmp_path, monkeypatch, capsys):
    """A checkpoint directory that is a link to a copy elsewhere, whose object is corrupt and
    has no good copy: repair removes the link (not the target) and says so; the next
    check does not call the corrupt weights good."""
    ws = _workspace(tmp_path, monkeypatch)
    store = Store(ws / "store", link_modes=("copy",))
    key, tree, dest = _placed_checkpoint(ws, store, "a")
    elsewhere = tmp_path / "fast-disk" / "a"
    elsewhere.parent.mkdir()
    dest.rename(elsewhere)
    dest.symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "model.safetensors").write_bytes(b"x" * 10)  # the copy is bad too
    digest = next(obj for rel, obj, _s, _x in store.tree_entries(tree) if rel == "model.safetensors")
    obj = store.cas.path(digest)
    os.chmod(obj, 0o644)
    obj.write_bytes(b"y" * 1000)
    code, out, err = _run_cli(["store", "repair"], capsys)
    assert code == 0, err
    assert f"removed link  {dest.relative_to(ws)}" in out
    assert not dest.exists() and not dest.is_symlink()
    assert (elsewhere / "config.json").is_file()  # the target outside is untouched
    assert store.actions.get(key) is None
    assert not (dest.parent / ".a.tree").exists()


def test_repair_replaces_a_restorable_symlinked_checkpoint_with_a_real_directory(tmp_path, monkeypatch, capsys):
    remote = tmp_path / "remote"
    ws = _workspace(tmp_path, monkeypatch, remote)
    store = Store(ws / "store", link_modes=("hardlink", "copy"), remote=str(remote))
    key, tree, dest = _placed_checkpoint(ws, store, "a")
    store.push()
    elsewhere = tmp_path / "elsewhere"
    dest.rename(elsewhere)
    dest.symlink_to(elsewhere, target_is_directory=True)
    _truncate_object(store, elsewhere / "model.safetensors")
    code, out, err = _run_cli(["store", "repair"], capsys)
    assert code == 0, err
    assert f"removed link  {dest.relative_to(ws)}" in out
    assert dest.is_dir() and not dest.is_symlink()
    assert (dest / "model.safetensors").read_bytes() == b"a" * 1000
    assert (elsewhere / "model.safetensors").stat().st_size == 10  # never written through the link
    code, out, _ = _run_cli(["store", "verify"], capsys)
    assert code == 0 and out.endswith("ok\n"), out


def test_verify_finds_a_same_size_change_in_a_copied_checkpoint_and_repair_fixes_it(tmp_path, monkeypatch, capsys):
    ws = _workspace(tmp_path, monkeypatch)
    store = Store(ws / "store", link_modes=("copy",))
    _key, _tree, dest = _placed_checkpoint(ws, store, "a")
    weights = dest / "model.safetensors"
    os.chmod(weights, 0o644)
    weights.write_bytes(b"z" * 1000)  # same size: the cheap size check cannot see it
    assert store.check_placed(ws / "build") == []
    code, out, _ = _run_cli(["store", "verify"], capsys)
    assert code == 1 and f"changed  {weights.relative_to(ws)}" in out, out
    code, out, err = _run_cli(["store", "repair"], capsys)
    assert code == 0 and f"re-placed  {weights.relative_to(ws)}" in out, (out, err)
    assert weights.read_bytes() == b"a" * 1000
    code, out, _ = _run_cli(["store", "verify"], capsys)
    assert code == 0 and out.endswith("ok\n"), out

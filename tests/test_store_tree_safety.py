"""Hostile tree manifests and symlinked objects never write outside the destination."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from msmbuild.cli import cli
from msmbuild.errors import CorruptObjectError, UnsafeTreeError
from msmbuild.store import Store

TREE = "msmbuild-tree/1"


def crafted(store: Store, entries: list[list]) -> str:
    return store.cas.put_json({"format": TREE, "entries": entries})


def _entry(store: Store, rel: str) -> list:
    return [rel, store.put_bytes(b"pwn\n"), 4, False]


@pytest.mark.parametrize(
    "paths",
    [
        ["../../victim.txt"],
        ["/abs/escape.txt"],
        ["ok/../../../victim.txt"],
        ["./a.txt"],
        ["a//b.txt"],
        ["a\\..\\b.txt"],
        [""],
        ["same.txt", "same.txt"],
        ["model", "model/weights.bin"],
    ],
)
def test_unsafe_tree_is_refused_and_writes_nothing(tmp_path: Path, paths: list[str], monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = Store("store")
    tree = crafted(store, [_entry(store, p) for p in paths])
    before = sorted(str(p) for p in tmp_path.rglob("*") if "store" not in p.parts)
    with pytest.raises(UnsafeTreeError, match="tree "):
        store.materialize(tree, "build/out")
    after = sorted(str(p) for p in tmp_path.rglob("*") if "store" not in p.parts)
    assert after == before or set(after) - set(before) <= {str(tmp_path / "build")}
    assert not (tmp_path / "victim.txt").exists() and not Path("/abs/escape.txt").exists()
    report = store.verify()
    assert tree in report.bad_trees and not report.ok


def test_issue_reproduction_exits_nonzero_and_writes_nothing_outside(tmp_path: Path) -> None:
    script = (
        "from msmbuild.store import Store\n"
        's = Store("store"); d = s.put_bytes(b"pwn\\n")\n'
        't = s.cas.put_json({"format": "msmbuild-tree/1", "entries": [["../../victim.txt", d, 4,'
        ' False], ["/abs/escape.txt", d, 4, False]]})\n'
        's.materialize(t, "build/out")\n'
    )
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-c", script], cwd=work, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "unsafe path '../../victim.txt'" in proc.stderr
    assert not (tmp_path / "victim.txt").exists() and not Path("/abs/escape.txt").exists()
    assert not (work / "build" / "out").exists()


def test_verify_cli_names_the_unsafe_tree(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("store:\n  path: store\n")
    store = Store("store")
    tree = crafted(store, [_entry(store, "../x")])
    result = CliRunner().invoke(cli, ["store", "verify"])
    assert result.exit_code == 1, result.output
    assert "unsafe tree" in result.output and tree in result.output


def test_safe_tree_still_materializes(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_text("a")
    (src / "b.txt").write_text("b")
    out = store.materialize(store.put_tree(src), tmp_path / "build" / "t")
    assert (out / "sub" / "a.txt").read_text() == "a" and (out / "b.txt").read_text() == "b"
    assert store.verify().ok


def test_symlinked_object_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"pwn\n")
    digest = store.put_bytes(b"pwn\n")
    obj = store.cas.path(digest)
    obj.unlink()
    obj.symlink_to(secret)
    assert digest in store.verify().corrupt
    with pytest.raises(CorruptObjectError, match="symbolic link"):
        store.cas.materialize_file(digest, tmp_path / "build" / "g", verified=True)
    with pytest.raises(CorruptObjectError):
        store.materialize(digest, tmp_path / "build" / "f")
    assert not (tmp_path / "build" / "f").is_symlink()
    assert secret.read_bytes() == b"pwn\n"


def test_tree_from_a_remote_is_validated(tmp_path: Path) -> None:
    remote_dir = tmp_path / "remote"
    evil = Store(remote_dir)
    tree = crafted(evil, [_entry(evil, "../../../victim.txt")])
    victim_store = Store(tmp_path / "ws" / "store", remote=str(remote_dir))
    with pytest.raises(UnsafeTreeError):
        victim_store.materialize(tree, tmp_path / "ws" / "build" / "out")
    assert not (tmp_path / "victim.txt").exists()

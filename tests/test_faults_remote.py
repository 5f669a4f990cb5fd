"""Fault suite, remote side: a remote that fails (a path under a file, a directory where
an object should be) and a corrupt remote object that must be replaced."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_faults_store import _run_cli

from msmbuild.store import Store
from msmbuild.store._store import INLINE_MAX_BYTES

pytestmark = pytest.mark.faults


def _fit(workdir: Path) -> dict:
    (workdir / "model.bin").write_bytes(b"weights " * 500)
    (workdir / "config.json").write_text('{"layers": 2}')
    return {}


def _big(i: int) -> str:
    return f"doc {i} " + "x" * INLINE_MAX_BYTES  # a CAS object, not inline



def _workspace(tmp_path: Path, monkeypatch, remote: Path) -> Path:
    import yaml

    ws = tmp_path / "ws"
    ws.mkdir()
    store = {"path": str(ws / "store"), "remote": str(remote)}
    (ws / "spec.md").write_text("# Spec\n\nBuy local.\n")
    (ws / "params.yaml").write_text(yaml.safe_dump({"store": store, "corpora": {"c": {"spec": "spec.md"}}}))
    monkeypatch.chdir(ws)
    monkeypatch.delenv("MSMBUILD_STORE_PATH", raising=False)
    return ws


def test_a_remote_whose_paths_lie_under_files_is_a_warning_not_a_crash(tmp_path, caplog):
    """objects/ and actions/ are files on the remote: every remote read and write fails.
    Builds go on: read-through misses, write-through keeps the local result."""
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "objects").write_text("not a directory\n")
    (remote / "actions").write_text("not a directory\n")
    caplog.set_level(logging.WARNING)
    writer = Store(tmp_path / "a", remote=str(remote), write_through=True)
    made = writer.memo_json("call", {"i": 1}, lambda: (_big(1), {}))
    tree = writer.memo_tree("train", {"run": 1}, _fit, tmp_path / "ckpt")
    assert writer.lookup_json(made.key).value == _big(1)
    assert (tmp_path / "ckpt" / "model.bin").read_bytes() == b"weights " * 500
    assert "write-through of action" in caplog.text and "the local result is kept" in caplog.text
    reader = Store(tmp_path / "b", remote=str(remote))
    again = reader.memo_json("call", {"i": 1}, lambda: (_big(1), {}))
    assert again.source == "computed" and "read-through treats it as a miss" in caplog.text
    assert reader.memo_tree("train", {"run": 1}, _fit).value == tree.value


def test_a_directory_where_an_object_should_be_fails_that_object_only(tmp_path, monkeypatch, capsys, caplog):
    remote = tmp_path / "remote"
    ws = _workspace(tmp_path, monkeypatch, remote)
    local = Store(ws / "store", remote=str(remote))
    keys = [local.memo_json("call", {"i": i}, lambda i=i: (_big(i), {})).key for i in range(3)]
    blocked = local.actions.get(keys[1]).outputs["value"]
    (remote / "objects" / blocked[:2] / blocked[2:]).mkdir(parents=True)
    caplog.set_level(logging.WARNING)
    code, out, err = _run_cli(["store", "push"], capsys)
    assert code == 1
    assert f"skipped  {blocked}: store remote {remote}" in err and f"skipped  {keys[1]}:" in err
    assert "pushed 2 objects" in out and "2 actions" in out
    assert Store(tmp_path / "other", remote=str(remote)).lookup_json(keys[0]).source == "remote"
    # pull from the same remote: the rest comes (the action that needs it was never pushed)
    other = Store(tmp_path / "fresh", remote=str(remote))
    pulled = other.pull()
    assert pulled.ok and pulled.actions == 2 and not other.cas.has(blocked)
    # a build that reads through it: a miss with a warning
    builder = Store(tmp_path / "builder", remote=str(remote), write_through=True)
    remade = builder.memo_json("call", {"i": 1}, lambda: (_big(1), {}))
    assert remade.source == "computed" and builder.lookup_json(keys[1]).value == _big(1)
    assert "is a directory, not an object file" in caplog.text


def test_a_corrupt_remote_object_is_replaced_by_a_verified_copy(tmp_path, monkeypatch, capsys):
    """Rule: the first verified writer wins; a copy that fails verification is replaced.
    A truncated remote copy is replaced by push and by write-through; a same-size
    corruption is found by read-through (which re-hashes), and the rebuild's
    write-through then replaces it, so teammates read it through again."""
    remote = tmp_path / "remote"
    first = Store(tmp_path / "first", remote=str(remote), write_through=True)
    tree = first.memo_tree("train", {"run": 1}, _fit)
    weights = next(e[1] for e in first.tree_entries(tree.value) if e[0] == "model.bin")
    remote_copy = remote / "objects" / weights[:2] / weights[2:]

    remote_copy.write_bytes(b"weights " * 100)  # truncated: push replaces it
    ws = _workspace(tmp_path, monkeypatch, remote)
    local = Store(ws / "store", remote=str(remote))
    assert local.memo_tree("train", {"run": 1}, _fit).source == "computed"  # read-through: corrupt, a miss
    code, out, err = _run_cli(["store", "push"], capsys)
    assert code == 0, err
    assert remote_copy.read_bytes() == b"weights " * 500

    remote_copy.write_bytes(b"W" * 4000)  # same size: found by read-through, replaced by write-through
    builder = Store(tmp_path / "builder", remote=str(remote), write_through=True)
    rebuilt = builder.memo_tree("train", {"run": 1}, _fit)
    assert rebuilt.source == "computed" and rebuilt.value == tree.value
    assert remote_copy.read_bytes() == b"weights " * 500
    teammate = Store(tmp_path / "teammate", remote=str(remote))
    assert teammate.lookup_tree(rebuilt.key).source == "remote"
    assert teammate.pull().ok


def test_an_unreachable_s3_remote_does_not_stop_a_build(tmp_path, caplog):
    """Nothing listens at the endpoint: each build step warns, computes and keeps its
    result; after a few faults in a row the process stops asking the remote."""
    pytest.importorskip("s3fs")
    options = {"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": "s",
               "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1}}
    caplog.set_level(logging.WARNING)
    store = Store(tmp_path / "s", remote="s3://bucket/store", write_through=True, storage_options=options)
    made = [store.memo_json("call", {"i": i}, lambda i=i: (_big(i), {})) for i in range(4)]
    assert [m.source for m in made] == ["computed"] * 4
    assert [store.lookup_json(m.key).value for m in made] == [_big(i) for i in range(4)]
    assert "EndpointConnectionError" in caplog.text and "goes on without read-through" in caplog.text

"""The remote tier: push/pull, read-through and write-through, to a directory and to S3.

The S3 endpoint is moto in server mode on 127.0.0.1, reached through s3fs with
``endpoint_url`` in ``storage_options`` exactly as params.yaml would configure it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from msmbuild.errors import CorruptObjectError, StoreError
from msmbuild.hashing import canonical_json
from msmbuild.store import Store
from msmbuild.store._store import INLINE_MAX_BYTES


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ["AWS_ACCESS_KEY_ID"] = os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(params=["dir", "s3"])
def remote(request, tmp_path: Path) -> tuple[str, dict]:
    """(url, storage_options) of an empty remote of each kind."""
    if request.param == "dir":
        return str(tmp_path / "remote"), {}
    endpoint = request.getfixturevalue("s3_endpoint")
    import s3fs

    options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    bucket = f"msm-{request.node.name.split('[')[0].replace('_', '-')[-40:]}".lower()
    s3fs.S3FileSystem(**options, skip_instance_cache=True).mkdir(bucket)
    return f"s3://{bucket}/store", options


def open_store(tmp_path: Path, name: str, remote: tuple[str, dict], **kw) -> Store:
    url, options = remote
    return Store(tmp_path / name, remote=url, storage_options=options, **kw)


def fit(workdir: Path) -> dict:
    (workdir / "model.bin").write_bytes(b"weights " * 5000)
    (workdir / "config.json").write_text('{"layers": 2}')
    return {"steps": 1}


def doc(i: int) -> str:
    """A value too large to live inside its action record: it is a CAS object."""
    return f"doc {i} " + "x" * INLINE_MAX_BYTES


def test_push_pull_round_trip_transfers_only_missing(tmp_path: Path, remote) -> None:
    a = open_store(tmp_path, "a", remote)
    keys = [a.memo_json("call", {"i": i}, lambda i=i: (doc(i), {})).key for i in range(3)]
    tree = a.memo_tree("train", {"run": 1}, fit)
    n_objects = len(list(a.cas.iter_digests()))
    assert n_objects == 3 + 3  # three values; tree manifest + two files

    first = a.push()
    assert (first.objects, first.actions, first.skipped) == (n_objects, 4, 0)
    assert first.bytes > 40000
    again = a.push()
    assert (again.objects, again.actions, again.skipped) == (0, 0, n_objects)
    keys.append(a.memo_json("call", {"i": 9}, lambda: (doc(9), {})).key)
    third = a.push()
    assert (third.objects, third.actions, third.skipped) == (1, 1, n_objects)
    assert len(a.remote.list_objects()) == n_objects + 1

    b = open_store(tmp_path, "b", remote)
    b.put_bytes(canonical_json(doc(0)))  # already local: must not be downloaded again
    pulled = b.pull()
    assert (pulled.objects, pulled.actions, pulled.skipped) == (n_objects, 5, 1)
    assert b.pull().objects == 0
    assert b.verify().ok
    for i, key in zip([0, 1, 2, 9], keys, strict=True):
        hit = b.lookup_json(key)
        assert (hit.value, hit.source) == (doc(i), "local")
    hit = b.lookup_tree(tree.key)
    assert hit.value == tree.value
    b.materialize(hit.value, tmp_path / "out")
    assert (tmp_path / "out" / "config.json").read_text() == '{"layers": 2}'


def test_read_through_on_local_miss_and_write_through(tmp_path: Path, remote) -> None:
    writer = open_store(tmp_path, "writer", remote, write_through=True)
    made = writer.memo_json("call", {"q": "x"}, lambda: ({"answer": 42}, {"cost_usd": 0.01}))
    tree = writer.memo_tree("train", {"run": 2}, fit)
    assert writer.remote.has_object(tree.value)
    # Write-through: the remote already has both actions and every object they reach
    # (the call's small answer lives inside its action record: no object of its own).
    assert len(writer.remote.list_actions()) == 2 and len(writer.remote.list_objects()) == 3
    assert set(writer.remote.list_objects()) == set(writer.cas.iter_digests())

    reader = open_store(tmp_path, "reader", remote)
    calls: list[int] = []
    got = reader.memo_json("call", {"q": "x"}, lambda: calls.append(1) or ({}, {}))
    assert (got.hit, got.source, got.value, calls) == (True, "remote", {"answer": 42}, [])
    assert got.meta["cost_usd"] == 0.01
    # The fetched action and object are now local: the next lookup does not touch the remote.
    assert reader.lookup_json(made.key).source == "local"
    out = reader.memo_tree("train", {"run": 2}, fit, tmp_path / "ckpt")
    assert out.source == "remote" and (tmp_path / "ckpt" / "model.bin").stat().st_size == 40000
    assert set(reader.cas.iter_digests()) == set(writer.cas.iter_digests())

    # An object (not an action) missing locally is read through as well.
    lonely = writer.put_bytes(b"pushed on its own")
    writer.remote.put_object_file(lonely, writer.cas.path(lonely))
    assert reader.get_bytes(lonely) == b"pushed on its own"
    with pytest.raises(StoreError, match="0" * 32):
        reader.get_bytes("0" * 32)


def test_tampered_inline_record_is_neither_pushed_nor_pulled(tmp_path: Path, remote) -> None:
    a = open_store(tmp_path, "a", remote)
    made = a.memo_json("call", {"q": "x"}, lambda: ({"answer": "yes"}, {}))
    path = a.actions.path(made.key)
    good = path.read_bytes()
    path.write_bytes(good.replace(b'"yes"', b'"no!"'))
    pushed = a.push()  # reported and skipped; everything else is pushed
    assert f"refusing to push action {made.key}" in pushed.failed[made.key] and not pushed.ok
    with pytest.raises(CorruptObjectError, match="refusing to push"):
        a.push_keys([made.key])
    assert made.key not in a.remote.list_actions()
    a.remote.put_action(made.key, path.read_bytes())  # a remote that got it some other way
    b = open_store(tmp_path, "b", remote)
    pulled = b.pull()
    assert f"refusing to pull action {made.key}" in pulled.failed[made.key]
    assert made.key not in set(b.actions.iter_keys())
    assert b.lookup_json(made.key) is None  # read-through treats it as a miss, never as an answer


def test_corrupt_remote_object_is_rejected(tmp_path: Path, remote) -> None:
    a = open_store(tmp_path, "a", remote)
    digest = a.put_bytes(b"true bytes")
    a.remote.put_object(digest, b"tampered bytes")
    b = open_store(tmp_path, "b", remote)
    with pytest.raises(CorruptObjectError, match=digest):
        b.get_bytes(digest)
    assert not b.cas.has(digest)
    assert not list(b.root.glob("objects/*/.tmp-*"))


def test_push_without_remote_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="store.remote"):
        Store(tmp_path / "s").push()

"""First verified writer wins on the store remote: a record already there that verifies is
never replaced by a later writer's record for the same action; one that does not verify is.
Adoption: files whose bytes match the digests their record names become an action's result."""

from __future__ import annotations

import json
from pathlib import Path

from msmbuild.hashing import digest_bytes
from msmbuild.store import Store


def _remote_meta(remote: Path, key: str) -> dict:
    return json.loads((remote / "actions" / key[:2] / f"{key[2:]}.json").read_text())["meta"]


def test_a_later_writer_never_replaces_a_verified_remote_record(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    builder = Store(tmp_path / "a", remote=str(remote), write_through=True)
    teammate = Store(tmp_path / "b", remote=str(remote), write_through=True)
    key = builder.key("demo", {"x": 1})
    builder.save_action(key, {"out": builder.put_bytes(b"builder's bytes")}, {"who": "builder"})
    teammate.save_action(key, {"out": teammate.put_bytes(b"teammate's bytes")}, {"who": "teammate"})
    assert _remote_meta(remote, key)["who"] == "builder"
    assert teammate.push_keys([key]).actions == 0
    # a remote record that does not verify (its object is gone) is replaced by a verified one
    record = json.loads((remote / "actions" / key[:2] / f"{key[2:]}.json").read_text())
    obj = record["outputs"]["out"]
    (remote / "objects" / obj[:2] / obj[2:]).unlink()
    assert teammate.push_keys([key]).actions == 1
    assert _remote_meta(remote, key)["who"] == "teammate"


def test_adopt_files_takes_only_bytes_that_match_their_record(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    good = tmp_path / "part.parquet"
    good.write_bytes(b"pulled partition")
    key = store.key("demo", {"x": 2})
    assert store.adopt_files(key, {"out": good}, {"out": digest_bytes(b"something else")}, {}) is None
    assert store.get_action(key) is None
    record = store.adopt_files(key, {"out": good}, {"out": digest_bytes(b"pulled partition")}, {"n": 1})
    assert record is not None and record.meta["adopted"] is True and record.meta["n"] == 1
    found, _ = store.get_action(key)
    assert store.get_bytes(found.outputs["out"]) == b"pulled partition"
    assert store.adopt_files(store.key("demo", {"x": 3}), {"out": tmp_path / "missing"}, {"out": "0" * 32}, {}) is None

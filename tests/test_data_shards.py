"""Shards: stable per-subdomain sharding, DOCTAG prefixes, packing, incremental rebuilds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from train_helpers import synthetic_docs, tiny_params, write_docs

from msmbuild.data import shards as shards_mod
from msmbuild.data.packing import IGNORE_INDEX, PackedCorpus
from msmbuild.data.shards import build_shards
from msmbuild.errors import TrainingInputError
from msmbuild.generate.partition_files import file_of
from msmbuild.models import load_tokenizer, prepare_base_model
from msmbuild.store import Store


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("store")


@pytest.fixture
def spy(monkeypatch):
    """Record the groups each streaming tokenization pass is asked to tokenize."""
    calls: list[list[str]] = []
    real = shards_mod._tokenize_groups

    def wrapper(by, todo, *args, **kwargs):
        calls.append(sorted(todo))
        return real(by, todo, *args, **kwargs)

    monkeypatch.setattr(shards_mod, "_tokenize_groups", wrapper)
    return calls


def test_shards_hold_every_document_with_doctag_and_eos(tmp_path, store_dir, spy):
    p = tiny_params(tmp_path / "build", store_dir)
    rows = synthetic_docs()
    write_docs(tmp_path / "build", "c", rows)
    store = Store(store_dir)
    path = build_shards(p, "c", store)
    m = json.loads(path.read_text())
    assert m["n_docs"] == len(rows)
    assert sorted(s["group"] for s in m["shards"]) == ["sub0", "sub1", "sub2"]
    tok = load_tokenizer(prepare_base_model(p, store).path)
    doctag = tok.convert_tokens_to_ids("<DOCTAG>")
    assert tok.encode("<DOCTAG>", add_special_tokens=False) == [doctag]
    first = m["shards"][0]
    tokens = np.fromfile(path.parent / f"{first['name']}.bin", dtype=m["dtype"])
    idx = np.load(path.parent / f"{first['name']}.idx")
    assert len(idx) == first["n_docs"] and idx[-1, 0] + idx[-1, 1] == len(tokens)
    for start, length, prefix in idx:
        assert prefix == 1 and tokens[start] == doctag
        assert tokens[start + length - 1] == tok.eos_token_id
    text = rows[[r["subdomain"] for r in rows].index(first["group"])]["text"]
    start, length, _ = idx[0]
    assert tok.decode(tokens[start + 1:start + length - 1].tolist()) == text
    assert spy == [["sub0", "sub1", "sub2"]]


def test_packed_blocks_have_no_padding_and_mask_doctag(tmp_path, store_dir):
    p = tiny_params(tmp_path / "build", store_dir)
    write_docs(tmp_path / "build", "c", synthetic_docs())
    store = Store(store_dir)
    packed = PackedCorpus(build_shards(p, "c", store), seq_len=32)
    tok = load_tokenizer(prepare_base_model(p, store).path)
    doctag = tok.convert_tokens_to_ids("<DOCTAG>")
    assert packed.n_blocks == packed.n_tokens // 32
    assert 0 <= packed.packing_waste < 32 / packed.n_tokens + 1e-9
    n_masked = 0
    for i in range(packed.n_blocks):
        ids, labels = packed.block(i)
        assert len(ids) == 32 and tok.pad_token_id not in ids.tolist()
        assert np.all(labels[ids == doctag] == IGNORE_INDEX)
        assert np.all(labels[ids != doctag] == ids[ids != doctag])
        n_masked += int((labels == IGNORE_INDEX).sum())
    assert n_masked > 0


def test_editing_one_subdomain_retokenizes_only_its_shard(tmp_path, store_dir, spy):
    p = tiny_params(tmp_path / "build", store_dir)
    rows = synthetic_docs(n_sub=3, per_sub=3)
    write_docs(tmp_path / "build", "c", rows)
    store = Store(store_dir)
    path = build_shards(p, "c", store)
    before = {s["group"]: s for s in json.loads(path.read_text())["shards"]}
    mtimes = {g: (path.parent / f"{s['name']}.bin").stat().st_mtime_ns for g, s in before.items()}
    spy.clear()
    build_shards(p, "c", store)
    assert spy == []  # nothing changed: nothing tokenized
    rows[4] = {**rows[4], "text": rows[4]["text"] + " An edited sentence."}
    assert rows[4]["subdomain"] == "sub1"
    write_docs(tmp_path / "build", "c", rows)
    after = {s["group"]: s for s in json.loads(build_shards(p, "c", store).read_text())["shards"]}
    assert spy == [["sub1"]]
    assert after["sub1"]["bin"] != before["sub1"]["bin"]
    for g in ("sub0", "sub2"):
        assert after[g] == before[g]
        assert (path.parent / f"{after[g]['name']}.bin").stat().st_mtime_ns == mtimes[g]


def test_missing_documents_and_columns_are_clear_errors(tmp_path, store_dir):
    p = tiny_params(tmp_path / "build", store_dir)
    store = Store(store_dir)
    with pytest.raises(TrainingInputError, match="documents.json: missing"):
        build_shards(p, "c", store)
    write_docs(tmp_path / "build", "c", synthetic_docs(1, 1))
    name = f"{file_of('sub0')}.parquet"  # the partition file holding subdomain sub0
    partition = tmp_path / "build" / "corpora" / "c" / "documents" / name
    partition.write_bytes(b"not parquet")
    with pytest.raises(TrainingInputError, match=f"{name}: does not hold the bytes .*documents.json records"):
        build_shards(p, "c", store)
    partition.unlink()
    with pytest.raises(TrainingInputError, match=f"{name}: listed in .*documents.json but missing"):
        build_shards(p, "c", store)


@pytest.mark.parametrize("by", ["domain", "file"])
def test_a_shard_of_several_subdomains_holds_their_documents_in_tree_order(tmp_path, store_dir, by):
    """Shards grouping several partitions (a domain, or a partition file) read each partition
    where its file holds it and keep the documents in tree order within the shard."""
    n_sub = 300  # more subdomains than partition files: files hold several
    rows = [{**r, "domain": f"dom{int(r['subdomain'][3:]) % 3}"} for r in synthetic_docs(n_sub=n_sub, per_sub=1)]
    index = read_index_of(write_docs(tmp_path / "build", "c", rows))
    p = tiny_params(tmp_path / "build", store_dir, shards={"by": by})
    store = Store(store_dir)
    manifest = build_shards(p, "c", store)
    m = json.loads(manifest.read_text())
    key = "file" if by == "file" else "domain"
    groups = {e[key] for e in index["partitions"]}
    assert sorted(s["group"] for s in m["shards"]) == sorted(groups) and len(groups) < n_sub
    assert m["n_docs"] == len(rows)
    tok = load_tokenizer(prepare_base_model(p, store).path)
    subdomain_of = {e["subdomain"]: e[key] for e in index["partitions"]}
    for shard in m["shards"]:
        tokens = np.fromfile(manifest.parent / f"{shard['name']}.bin", dtype=m["dtype"])
        idx = np.load(manifest.parent / f"{shard['name']}.idx")
        texts = [tok.decode(tokens[s + 1:s + n - 1].tolist()) for s, n, _ in idx]
        assert texts == [r["text"] for r in rows if subdomain_of[r["subdomain"]] == shard["group"]]


def read_index_of(path):
    return json.loads(path.read_text())

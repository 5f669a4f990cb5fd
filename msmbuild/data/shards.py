"""Tokenized shards: a corpus's documents as flat token arrays, one shard per subdomain.

Sharding is by a stable key (``shards.by``: subdomain, domain, or the partition file that
holds the subdomain), never by position, so an edit to one subdomain changes only the
shard that holds its documents. Each shard is
an action keyed by the tokenizer's identity, the shard config and the content digests
of its document partitions (documents.json), so an unchanged shard costs one lookup and
no document is read. A shard's documents are its partitions' rows, read where the
partition files hold them (each file read once per build). Files per shard::

    <name>.bin   tokens, uint16 when the vocabulary fits, else uint32
    <name>.idx   .npy int64 array (n_docs, 3): start offset, length, no-loss prefix length

The prefix is the DOCTAG (``shards.doctag``), whose tokens carry no loss. Tokenization
streams the changed shards' partitions in row batches and appends to per-shard files:
memory stays flat as the corpus grows.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from msmbuild.errors import MsmbuildError, TrainingInputError
from msmbuild.fsutil import write_bytes_if_changed
from msmbuild.generate.partition_files import FileTables
from msmbuild.generate.partitions import document_files, kind_path, require_index
from msmbuild.hashing import action_key, digest_text
from msmbuild.layout import Layout
from msmbuild.store import write_roots

if TYPE_CHECKING:
    from msmbuild.config import Params
    from msmbuild.models import BaseModel
    from msmbuild.store import Store

SHARD_FORMAT = 1
READ_BATCH = 1024


def shard_name(group: str) -> str:
    """A file-safe, collision-free name for a shard's group value."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", group).strip("._")[:60] or "group"
    return f"{slug}-{digest_text(group)[:8]}"


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


@dataclass
class _Group:
    name: str
    parts: list[tuple[Path, int, int]]  # its document partitions (file, offset, rows), in tree order
    digests: list[str]  # their content digests (documents.json)
    n_docs: int
    key: str = ""


def _groups(layout: Layout, corpus: str, by: str) -> OrderedDict[str, _Group]:
    """Shards from the documents index: a subdomain is one partition, a domain or a partition
    file several.

    Only the index is read: a group's documents are named by its partitions' digests.
    """
    try:
        index = require_index(layout, corpus)
        document_files(layout, corpus)  # each file verified against the index
    except MsmbuildError as exc:
        raise TrainingInputError(f"{exc} (build the corpus first)") from None
    groups: OrderedDict[str, _Group] = OrderedDict()
    for entry in index["partitions"]:
        if not entry["n_docs"]:
            continue
        value = entry["subdomain"] if by == "subdomain" else entry.get("file" if by == "file" else "domain")
        if value is None:
            raise TrainingInputError(f"{layout.documents_index(corpus)}: partition {entry['partition']!r} "
                                     f"has no {by}")
        g = groups.get(value)
        if g is None:
            g = groups[value] = _Group(shard_name(value), [], [], 0)
        part = entry["documents"]
        g.parts.append((kind_path(layout, corpus, "documents", entry["file"]), part["offset"], part["rows"]))
        g.digests.append(entry["documents"]["digest"])
        g.n_docs += entry["n_docs"]
    return groups


def _texts(reader: FileTables, path: Path, offset: int, rows: int) -> Iterator[list[str]]:
    """Batches of one partition's document texts (rows [offset, offset + rows) of its
    partition file); a bad file or row is a TrainingInputError."""
    try:
        column = reader.rows(path, offset, rows).column("text")
    except MsmbuildError as exc:
        raise TrainingInputError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for bad files
        raise TrainingInputError(f"{path}: not a readable parquet file ({exc})") from None
    if "text" in reader.missing.get(path, ()):
        raise TrainingInputError(f"{path}: missing column(s) ['text']")
    for start in range(0, rows, READ_BATCH):
        texts = column.slice(start, READ_BATCH).to_pylist()
        for i, text in enumerate(texts):
            if text is None:
                raise TrainingInputError(f"{path}: row {offset + start + i + 1} has no text")
        yield texts


def shard_key(tokenizer: str, config: dict[str, Any], partitions: list[str]) -> str:
    """The action key of one shard: tokenizer identity, shard config, its partitions' digests in order."""
    return action_key({"kind": "shard", "inputs": {"tokenizer": tokenizer, "config": config,
                                                   "partitions": partitions}})


@dataclass
class ShardFreshness:
    """Whether a corpus's shards are still what its documents make now."""

    stale: dict[str, bool]  # shard name -> its documents have changed since it was built
    missing: list[str]  # groups the documents have now and no shard holds

    @property
    def current(self) -> bool:
        return not self.missing and not any(self.stale.values())


def shard_freshness(params: Params, corpus: str) -> ShardFreshness | None:
    """Compare the corpus's shard manifest with its documents now (no tokenizing: keys only).

    A shard whose key, recomputed from the current documents with the manifest's tokenizer
    and config, differs from the recorded one was built from other documents (they were
    regenerated and the shards not rebuilt). Only the documents index is read. None when
    the manifest or the documents index is absent.
    """
    layout = Layout.of(params)
    manifest = _read_manifest(layout.manifest(corpus))
    if not layout.documents_index(corpus).is_file() or manifest.get("format") != SHARD_FORMAT:
        return None
    groups = _groups(layout, corpus, manifest["config"]["by"])
    now = {g.name: shard_key(manifest["tokenizer"], manifest["config"], g.digests) for g in groups.values()}
    recorded = {s["name"] for s in manifest["shards"]}
    return ShardFreshness({s["name"]: now.get(s["name"]) != s["key"] for s in manifest["shards"]},
                          sorted(group for group, g in groups.items() if g.name not in recorded))


def _tokenize_groups(by: str, todo: dict[str, _Group], tokenizer: Any,
                     prefix_ids: list[int], eos_id: int | None, dtype: np.dtype,
                     tmpdir: Path) -> dict[str, dict[str, Any]]:
    """One streaming pass: tokenize the documents of the groups in todo into tmp files.

    Partitions are read in file order (each partition file once), each into its own piece;
    a group's pieces are then joined in tree order.
    """
    import shutil

    from tqdm import tqdm

    from msmbuild.tables import SCHEMAS

    backend = tokenizer.backend_tokenizer
    pieces: dict[tuple[str, int], list[tuple[int, int, int]]] = {}
    lengths: dict[tuple[str, int], int] = {}
    order = sorted(((path, offset, rows, g, j) for g, group in todo.items()
                    for j, (path, offset, rows) in enumerate(group.parts)), key=lambda p: (str(p[0]), p[1]))
    reader = FileTables(SCHEMAS["documents"], ["text"], keep=1)
    tail = [eos_id] if eos_id is not None else []
    with tqdm(total=sum(g.n_docs for g in todo.values()), desc="tokenize", unit="doc", disable=None) as bar:
        for path, offset, rows, g, j in order:
            piece, at = pieces.setdefault((g, j), []), 0
            with open(tmpdir / f"{todo[g].name}.{j}.piece", "wb") as f:
                for texts in _texts(reader, path, offset, rows):
                    for enc in backend.encode_batch_fast(texts, add_special_tokens=False):
                        ids = prefix_ids + enc.ids + tail
                        f.write(np.asarray(ids, dtype=dtype).tobytes())
                        piece.append((at, len(ids), len(prefix_ids)))
                        at += len(ids)
                    bar.update(len(texts))
            lengths[(g, j)] = at
    index: dict[str, list[tuple[int, int, int]]] = {}
    offsets: dict[str, int] = {}
    for g, group in todo.items():
        index[g], offsets[g] = [], 0
        with open(tmpdir / f"{group.name}.bin", "wb") as out_bin:
            for j in range(len(group.parts)):
                piece_path = tmpdir / f"{group.name}.{j}.piece"
                with open(piece_path, "rb") as f:
                    shutil.copyfileobj(f, out_bin)
                piece_path.unlink()
                index[g] += [(offsets[g] + start, n, prefix) for start, n, prefix in pieces[(g, j)]]
                offsets[g] += lengths[(g, j)]
    out = {}
    for g, rows in index.items():
        idx_path = tmpdir / f"{todo[g].name}.idx"
        with open(idx_path, "wb") as f:
            np.save(f, np.asarray(rows, dtype=np.int64).reshape(-1, 3))
        out[g] = {"bin": tmpdir / f"{todo[g].name}.bin", "idx": idx_path,
                  "n_docs": len(rows), "n_tokens": offsets[g],
                  "n_loss_tokens": offsets[g] - len(prefix_ids) * len(rows)}
    return out


def build_shards(params: Params, corpus: str, store: Store, base: BaseModel | None = None) -> Path:
    """Tokenize a corpus into shards (only the shards whose inputs changed); the manifest path."""
    from msmbuild.experiments import corpus_base_model_name
    from msmbuild.models import load_tokenizer, prepare_base_model, tokenizer_identity

    if corpus not in params.corpora:
        raise TrainingInputError(f"params.yaml: no corpus named {corpus!r}")
    if base is None:
        base = prepare_base_model(params, store, corpus_base_model_name(params, corpus))
    layout = Layout.of(params)
    groups = _groups(layout, corpus, params.shards.by)
    cfg = params.shards
    tokenizer = load_tokenizer(base.path)
    tok_id = tokenizer_identity(tokenizer)
    dtype = token_dtype(len(tokenizer))
    prefix_ids = tokenizer.encode(cfg.doctag, add_special_tokens=False) if cfg.doctag else []
    eos_id = tokenizer.eos_token_id if cfg.append_eos else None
    # What determines a shard's bytes: tokenizer, shard settings, and its documents in order.
    shard_cfg = {"format": SHARD_FORMAT, "doctag": cfg.doctag, "append_eos": cfg.append_eos,
                 "by": cfg.by, "dtype": dtype.name}
    records: dict[str, Any] = {}
    todo: dict[str, _Group] = {}
    for group, g in groups.items():
        g.key = shard_key(tok_id, shard_cfg, g.digests)
        found = store.get_action(g.key)
        if found is None:
            todo[group] = g
        else:
            records[group] = found[0]
    out_dir = layout.shards_dir(corpus)
    pulled = {s["name"]: s for s in _read_manifest(layout.manifest(corpus)).get("shards", [])}
    for group, g in list(todo.items()):  # shards pulled by DVC whose bytes match the manifest
        s = pulled.get(g.name)
        if s is None or s.get("key") != g.key:
            continue
        meta = {"kind": "shard", "corpus": corpus, "group": group,
                **{k: s.get(k) for k in ("n_docs", "n_tokens", "n_loss_tokens")}}
        rec = store.adopt_files(g.key, {"bin": out_dir / f"{g.name}.bin", "idx": out_dir / f"{g.name}.idx"},
                                {"bin": s["bin"], "idx": s["idx"]}, meta)
        if rec is not None:
            records[group] = rec
            del todo[group]
    if todo:
        with tempfile.TemporaryDirectory(prefix="shards-", dir=store.scratch_dir()) as tmp:
            made = _tokenize_groups(cfg.by, todo, tokenizer, prefix_ids, eos_id, dtype, Path(tmp))
            for group, info in made.items():
                outputs = {"bin": store.put_file(info["bin"]), "idx": store.put_file(info["idx"])}
                meta = {"kind": "shard", "corpus": corpus, "group": group,
                        **{k: info[k] for k in ("n_docs", "n_tokens", "n_loss_tokens")}}
                records[group] = store.save_action(todo[group].key, outputs, meta)
    path = layout.manifest(corpus)
    old = _read_manifest(path)
    old_digests = {s["name"]: (s["bin"], s["idx"]) for s in old.get("shards", [])}
    shards = []
    for group, g in sorted(groups.items(), key=lambda kv: kv[1].name):
        rec = records[group]
        b, i = rec.outputs["bin"], rec.outputs["idx"]
        bin_path, idx_path = out_dir / f"{g.name}.bin", out_dir / f"{g.name}.idx"
        if old_digests.get(g.name) != (b, i) or not (bin_path.is_file() and idx_path.is_file()):
            store.materialize(b, bin_path)
            store.materialize(i, idx_path)
        shards.append({"name": g.name, "group": group, "key": g.key, "bin": b, "idx": i,
                       **{k: rec.meta[k] for k in ("n_docs", "n_tokens", "n_loss_tokens")}})
    keep = {f"{s['name']}.{ext}" for s in shards for ext in ("bin", "idx")}
    for stale in list(out_dir.glob("*.bin")) + list(out_dir.glob("*.idx")):
        if stale.name not in keep:
            stale.unlink()
    manifest = {"format": SHARD_FORMAT, "corpus": corpus, "tokenizer": tok_id,
                "base_model": base.identity, "dtype": dtype.name, "config": shard_cfg,
                "n_docs": sum(s["n_docs"] for s in shards),
                "n_tokens": sum(s["n_tokens"] for s in shards), "shards": shards}
    write_bytes_if_changed(path, json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n")
    write_roots(params.build_dir, f"shards-{corpus}", [s["key"] for s in shards])
    return path


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}


def load_manifest(path: str | Path) -> dict[str, Any]:
    """Read a shard manifest; a missing or malformed one is a TrainingInputError."""
    path = Path(path)
    if not path.is_file():
        raise TrainingInputError(f"{path}: shard manifest does not exist (run `msmbuild shards`)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise TrainingInputError(f"{path}: not valid JSON (line {exc.lineno})") from None
    if data.get("format") != SHARD_FORMAT:
        raise TrainingInputError(f"{path}: shard format {data.get('format')!r}, expected {SHARD_FORMAT}")
    return data


def shard_digests(manifest: dict[str, Any]) -> list[list[str]]:
    """The (bin, idx) digests of every shard: what a midtraining key depends on."""
    return [[s["bin"], s["idx"]] for s in manifest["shards"]]


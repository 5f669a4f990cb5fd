"""Partition files: the partitions of many subdomains in one parquet file.

A subdomain stays one store action with one partition object per kind (its documents,
ideas or calls ledger as standalone parquet bytes, whose digest its index entry records),
but what is placed under ``build/`` groups subdomains into at most ``PARTITION_FILES``
files per kind, chosen by a hash of the subdomain id (``file_of``): the number of files
DVC checks stays bounded however large the corpus grows (docs/decisions.md, "Partition
files group subdomains"), and adding or removing a subdomain changes only its own file.

A file holds its subdomains' rows back to back, in tree order. The index entry of each
subdomain names its file (``"file"``) and, per kind, where its rows sit (``"offset"``,
``"rows"``); the index's ``"files"`` map gives each file's digest and size per kind. A file
is rewritten only when the list of (subdomain, digest) it holds changes or it no longer
holds the bytes its index records; its bytes are a function of that list, so equal
subdomains make equal files.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msmbuild.errors import MsmbuildError
from msmbuild.fsutil import write_bytes_if_changed
from msmbuild.hashing import digest_bytes, digest_text

PARTITION_FILES = 256  # files per kind; a format constant (changing it moves every subdomain)


def file_of(subdomain: str) -> str:
    """The stem of the partition file that holds a subdomain's rows (stable under edits)."""
    return f"part-{int(digest_text(subdomain)[:8], 16) % PARTITION_FILES:03d}"


def conform(table, schema):
    """table with exactly schema's columns, in its order (a column it lacks reads as null)."""
    import pyarrow as pa

    return pa.Table.from_arrays([table.column(f.name) if f.name in table.column_names
                                 else pa.nulls(len(table), f.type) for f in schema], schema=schema)


def table_from_bytes(data: bytes, schema):
    """A standalone partition's bytes as a table with exactly schema's columns."""
    import pyarrow.parquet as pq

    return conform(pq.read_table(io.BytesIO(data), use_threads=False), schema)


def file_bytes(tables: Sequence[Any], schema) -> bytes:
    """The bytes of a partition file holding tables back to back (equal tables, equal bytes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables(list(tables)).combine_chunks() if tables else schema.empty_table()
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def member_bytes(table, offset: int, rows: int, schema) -> bytes:
    """One subdomain's rows of a partition file's table, encoded as its standalone partition
    (the bytes its action stored, when the file is what its index records)."""
    from msmbuild.tables import parquet_bytes

    return parquet_bytes(table.slice(offset, rows).to_pylist(), schema)


@dataclass
class Member:
    """One subdomain's rows of one kind, as a partition file will hold them."""

    name: str  # the subdomain's partition name (its index entry's "partition")
    digest: str  # of its standalone partition bytes
    load: Callable[[], Any]  # its rows as a table with the kind's schema


@dataclass
class Placed:
    """What ``place_files`` did: each file's {digest, size}, each member's (offset, rows),
    the paths written or removed."""

    files: dict[str, dict[str, Any]]
    positions: dict[str, tuple[int, int]]
    changed: list[str]


def place_files(directory: Path, schema, members: dict[str, list[Member]],
                old_files: dict[str, dict[str, Any]], old_members: dict[str, list[tuple[str, str, int, int]]],
                holds: Callable[[Path, str], bool], note: Callable[[Path, str], None],
                trusted: Callable[[str], bool] = lambda _f: False) -> Placed:
    """Write every partition file of one kind whose members changed or whose bytes are not
    what the old index records, and remove the files no member names.

    members: file stem -> its members in tree order. old_files: file stem -> {digest, size}
    as the old index records it; old_members: file stem -> [(name, digest, offset, rows)] as
    the old index places them. A file whose (name, digest) list is unchanged is kept when
    ``trusted(stem)`` (the caller found it untouched) or ``holds(path, digest)``.
    """
    out = Placed({}, {}, [])
    for stem in sorted(members):
        path = directory / f"{stem}.parquet"
        group = members[stem]
        was, before = old_files.get(stem), old_members.get(stem, [])
        if was is not None and [(m.name, m.digest) for m in group] == [(n, d) for n, d, _, _ in before] \
                and (trusted(stem) or holds(path, was["digest"])):
            out.files[stem] = {"digest": was["digest"], "size": was["size"]}
            out.positions.update({n: (o, r) for n, _, o, r in before})
            continue
        tables, offset = [], 0
        for m in group:
            table = m.load()
            tables.append(table)
            out.positions[m.name] = (offset, len(table))
            offset += len(table)
        data = file_bytes(tables, schema)
        digest = digest_bytes(data)
        if write_bytes_if_changed(path, data):
            out.changed.append(str(path))
        note(path, digest)
        out.files[stem] = {"digest": digest, "size": len(data)}
    out.changed += remove_unnamed(directory, members)
    return out


def remove_unnamed(directory: Path, keep: Iterable[str]) -> list[str]:
    """Delete every ``*.parquet`` file of directory whose stem is not in keep (a file no
    subdomain maps to any more, a stray or copied file, a file of an earlier layout)."""
    names = {f"{stem}.parquet" for stem in keep}
    try:
        listed = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for name in sorted(listed):
        if name.endswith(".parquet") and name not in names:
            (directory / name).unlink()
            removed.append(str(directory / name))
    return removed


def old_layout(index: dict[str, Any] | None, kind: str) -> tuple[dict[str, dict[str, Any]],
                                                                  dict[str, list[tuple[str, str, int, int]]]]:
    """(files, members) of one kind as an index records them (see ``place_files``)."""
    if not index:
        return {}, {}
    files = {stem: f[kind] for stem, f in (index.get("files") or {}).items()
             if isinstance(f, dict) and isinstance(f.get(kind), dict)}
    members: dict[str, list[tuple[str, str, int, int]]] = {}
    for e in index.get("partitions", []):
        part = e.get(kind)
        if isinstance(part, dict) and "offset" in part and isinstance(e.get("file"), str):
            members.setdefault(e["file"], []).append((e["partition"], part["digest"], part["offset"], part["rows"]))
    return files, members


class FileTables:
    """Reads partition files and hands out one subdomain's rows (a slice).

    ``keep``: how many files stay in memory (None: all, for a reader that returns the whole
    corpus anyway; 1 for a streaming reader that takes members in file order).
    """

    def __init__(self, schema, columns: Sequence[str] | None = None, keep: int | None = None) -> None:
        import pyarrow as pa

        self.schema = schema if columns is None else pa.schema([schema.field(c) for c in columns])
        self.keep = keep
        self._tables: dict[Path, Any] = {}
        self.missing: dict[Path, list[str]] = {}  # columns a file read here lacks (read as null)

    def table(self, path: Path):
        """The whole file with this reader's columns (a column the file predates is null)."""
        import pyarrow.parquet as pq

        if path not in self._tables:
            try:
                present = set(pq.read_schema(path).names)
                table = pq.read_table(path, columns=[n for n in self.schema.names if n in present],
                                      use_threads=False, pre_buffer=False)
            except (OSError, ValueError) as exc:
                raise MsmbuildError(f"{path}: not a readable parquet file ({exc})") from None
            self.missing[path] = [n for n in self.schema.names if n not in present]
            if self.keep is not None and len(self._tables) >= self.keep:
                self._tables.pop(next(iter(self._tables)))
            self._tables[path] = conform(table, self.schema)
        return self._tables[path]

    def rows(self, path: Path, offset: int, rows: int):
        """The rows [offset, offset + rows) of a partition file."""
        table = self.table(path)
        if offset < 0 or rows < 0 or offset + rows > len(table):
            raise MsmbuildError(f"{path}: holds {len(table)} rows, its index places rows up to {offset + rows}")
        return table.slice(offset, rows)

"""The documents dataset: one parquet file per subdomain, indexed by documents.json.

(The ideas step's rows and calls are partitioned the same way, indexed by ideas.json:
msmbuild.generate.idea_partitions writes them, ``read_ideas`` reads them.)

A corpus's documents live in ``build/corpora/<corpus>/documents/<partition>.parquet`` and
the documents step's calls in ``calls/documents/<partition>.parquet``, one partition per
subdomain (``partition_name``). Every file has the registered schema, so DuckDB
(``read_parquet('.../documents/*.parquet')``), pyarrow and ``datasets`` read the directory
as one table. ``documents.json`` lists the partitions in tree order with their store
digests and counts: readers take the file list from it (so a half-placed directory is
never read), and the workflow depends on it (it changes exactly when a partition does).

Placing partitions is O(changed): a partition whose index entry already names the digest
the store gives it, and whose file has that entry's size, is not touched (no new mtime).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from msmbuild.errors import MsmbuildError
from msmbuild.fsutil import json_bytes, write_bytes_if_changed
from msmbuild.layout import Layout
from msmbuild.store import Store

INDEX_FORMAT = 1
IDEAS_INDEX_FORMAT = 1


def partition_name(subdomain: str) -> str:
    """The file stem of a subdomain's partition (its id, with '/' and the like escaped)."""
    return quote(subdomain, safe="-_.") or "_"


def read_index(layout: Layout, corpus: str) -> dict[str, Any] | None:
    """documents.json of a corpus, or None when it is missing or not an index of this format."""
    return _read_json_index(layout.documents_index(corpus), INDEX_FORMAT)


def read_ideas_index(layout: Layout, corpus: str) -> dict[str, Any] | None:
    """ideas.json of a corpus (msmbuild.generate.idea_partitions), or None when missing or unreadable."""
    return _read_json_index(layout.ideas_index(corpus), IDEAS_INDEX_FORMAT)


def require_ideas_index(layout: Layout, corpus: str) -> dict[str, Any]:
    """ideas.json of a corpus; a clear error when the ideas are not built."""
    return _required(read_ideas_index(layout, corpus), layout.ideas_index(corpus), "ideas", corpus)


def _required(index: dict[str, Any] | None, path: Path, step: str, corpus: str) -> dict[str, Any]:
    """The index, or an error naming its file and the command that builds it."""
    if index is None:
        raise MsmbuildError(f"{path}: missing or unreadable; run `msmbuild generate {step} {corpus}` first")
    return index


def read_ideas(layout: Layout, corpus: str):
    """The corpus's idea rows as one pyarrow Table (tree order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from msmbuild.tables import SCHEMAS

    index = require_ideas_index(layout, corpus)
    tables = [pq.read_table(layout.ideas_partition(corpus, p["partition"]), use_threads=False, pre_buffer=False)
              for p in index["partitions"]]
    return pa.concat_tables(tables) if tables else SCHEMAS["ideas"].empty_table()


def _read_json_index(path: Path, fmt: int) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("format") == fmt else None


def require_index(layout: Layout, corpus: str) -> dict[str, Any]:
    """documents.json of a corpus; a clear error when the documents are not built."""
    return _required(read_index(layout, corpus), layout.documents_index(corpus), "documents", corpus)


def document_files(layout: Layout, corpus: str) -> list[Path]:
    """The corpus's document partition files in tree order (the index names them)."""
    index = require_index(layout, corpus)
    files = [layout.document_partition(corpus, p["partition"]) for p in index["partitions"]]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise MsmbuildError(f"{missing[0]}: listed in {layout.documents_index(corpus)} but missing "
                            f"({len(missing)} partition file(s)); run `msmbuild generate documents {corpus}`")
    return files


def read_documents(layout: Layout, corpus: str, columns: Sequence[str] | None = None):
    """The corpus's documents as one pyarrow Table (tree order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from msmbuild.tables import SCHEMAS

    schema = SCHEMAS["documents"]
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    tables = [pq.read_table(f, columns=list(schema.names), use_threads=False, pre_buffer=False)
              for f in document_files(layout, corpus)]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def place(store: Store, digest: str, path: Path, known: dict[str, Any] | None) -> bool:
    """Put a stored partition at path unless the index entry says it is there; True if written."""
    if known is not None and known.get("digest") == digest and path.is_file() \
            and path.stat().st_size == known.get("size"):
        return False
    return write_bytes_if_changed(path, store.get_bytes(digest))


def remove_stale(directory: Path, keep: Iterable[str]) -> list[str]:
    """Delete partition files of subdomains that no longer exist; the paths removed."""
    keep = {f"{name}.parquet" for name in keep}
    removed = []
    if directory.is_dir():
        for path in sorted(directory.glob("*.parquet")):
            if path.name not in keep:
                path.unlink()
                removed.append(str(path))
    return removed


def write_index(layout: Layout, corpus: str, partitions: list[dict[str, Any]],
                inputs: Sequence[Path] = ()) -> bool:
    """Write documents.json when its bytes change; True if written.

    An unchanged index older than one of inputs is touched: Snakemake compares its mtime
    with its inputs' (and keeps it, as an ``update`` output, instead of deleting it).
    """
    data = {"format": INDEX_FORMAT, "corpus": corpus,
            "n_documents": sum(p["n_docs"] for p in partitions), "partitions": partitions}
    return write_touching(layout.documents_index(corpus), json_bytes(data), inputs)


def write_touching(path: Path, data: bytes, inputs: Sequence[Path] = ()) -> bool:
    """Write data when it changes (True); else touch path if it is older than one of inputs,
    as Snakemake compares an ``update`` output's mtime with its inputs'."""
    changed = write_bytes_if_changed(path, data)
    if not changed:
        newest = max((p.stat().st_mtime_ns for p in inputs if p.is_file()), default=0)
        if path.stat().st_mtime_ns < newest:
            path.touch()
    return changed


def write_dataset(layout: Layout, corpus: str, rows: Sequence[dict[str, Any]]) -> list[str]:
    """Write document rows as the corpus's partitioned dataset and index; the paths changed.

    For documents made outside the generate step (imports, tests, benchmarks): rows are
    grouped by subdomain in first-seen order, each group written with the documents
    schema (missing columns are null) only when its bytes change. No calls are recorded.
    """
    from msmbuild.hashing import digest_bytes
    from msmbuild.tables import SCHEMAS, parquet_bytes

    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row.get("subdomain")), []).append(row)
    changed, entries = [], []
    for subdomain, group in groups.items():
        name = partition_name(subdomain)
        data = parquet_bytes(group, SCHEMAS["documents"])
        path = layout.document_partition(corpus, name)
        if write_bytes_if_changed(path, data):
            changed.append(str(path))
        entries.append({"partition": name, "subdomain": subdomain, "domain": group[0].get("domain"),
                        "key": None, "documents": {"digest": digest_bytes(data), "size": len(data)},
                        "n_docs": len(group), "n_chars": sum(r.get("n_chars") or 0 for r in group),
                        "kept_cost_usd": float(sum(r.get("cost_usd") or 0.0 for r in group)), "n_calls": 0,
                        "calls_cost_usd": 0.0, "new_cost_usd": 0.0, "made_at": None,
                        "spec_digests": {}, "prompt_versions": {}})
    changed += remove_stale(layout.documents_dir(corpus), [e["partition"] for e in entries])
    if write_index(layout, corpus, entries):
        changed.append(str(layout.documents_index(corpus)))
    return changed


def read_calls(layout: Layout, corpus: str):
    """Every model call of the corpus's three steps as one pyarrow Table (tree, ideas, documents)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from msmbuild.tables import SCHEMAS

    files = [layout.step_calls(corpus, "tree")]
    files += [layout.idea_calls_partition(corpus, p["partition"])
              for p in (read_ideas_index(layout, corpus) or {}).get("partitions", [])]
    index = read_index(layout, corpus)
    files += [layout.document_calls_partition(corpus, p["partition"]) for p in (index or {}).get("partitions", [])]
    tables = [pq.read_table(f, use_threads=False, pre_buffer=False) for f in files if f.is_file()]
    return pa.concat_tables(tables) if tables else SCHEMAS["calls"].empty_table()

"""Writers of a corpus's build files: atomic, and silent when the bytes would not change.

Not rewriting identical bytes keeps the mtime, so Snakemake sees nothing new; DVC hashes
the same content. Parquet tables use fixed schemas so an empty table still has columns.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from msmbuild.fsutil import write_bytes_if_changed  # noqa: F401 - re-exported for stage writers

STR, INT, FLOAT, BOOL = pa.string(), pa.int64(), pa.float64(), pa.bool_()

DOCUMENTS_SCHEMA = pa.schema([
    ("doc_id", STR), ("corpus", STR), ("section_id", STR), ("section_hash", STR),
    ("domain", STR), ("subdomain", STR), ("doc_type", STR), ("idea", STR),
    ("sample_index", INT), ("text", STR), ("n_chars", INT), ("backend", STR), ("model", STR),
    ("prompt_version", STR), ("produced_by_model", BOOL), ("input_tokens", INT),
    ("output_tokens", INT), ("cost_usd", FLOAT),
])
IDEAS_SCHEMA = pa.schema([
    ("corpus", STR), ("subdomain", STR), ("subdomain_title", STR), ("domain", STR),
    ("section_id", STR), ("section_hash", STR), ("doc_type_index", INT), ("doc_type", STR),
    ("idea_index", INT), ("idea", STR), ("suitable", BOOL), ("key", STR),
])
CALLS_SCHEMA = pa.schema([
    ("key", STR), ("corpus", STR), ("stage", STR), ("subdomain", STR), ("backend", STR),
    ("model", STR), ("cache_hit", BOOL), ("input_tokens", INT), ("output_tokens", INT),
    ("cache_creation_input_tokens", INT), ("cache_read_input_tokens", INT),
    ("cost_usd", FLOAT), ("wall_s", FLOAT), ("error", STR),
])


def json_bytes(value: Any) -> bytes:
    """Stable, readable JSON: sorted keys, one-space indent, UTF-8, trailing newline."""
    return (json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def parquet_bytes(rows: list[dict[str, Any]], schema: pa.Schema) -> bytes:
    """A parquet file of rows with a fixed schema (deterministic bytes for equal rows)."""
    table = pa.Table.from_pylist([{n: r.get(n) for n in schema.names} for r in rows], schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def _read_table(source: Any) -> pa.Table:
    """Read parquet on the calling thread only.

    Arrow's thread pools can abort the process at interpreter exit ("terminate called
    without an active exception") when a pool thread is still alive; these tables are
    small, so nothing is lost by never starting the pools.
    """
    return pq.read_table(source, use_threads=False, pre_buffer=False)


# Columns that describe the run that wrote a table rather than its content.
RUN_COLUMNS = ("cache_hit", "wall_s")


def write_table_if_changed(path: str | os.PathLike[str], rows: list[dict[str, Any]],
                           schema: pa.Schema) -> bool:
    """Write rows as parquet unless the file holds the same rows apart from RUN_COLUMNS.

    A rebuild that only turns misses into hits keeps the old bytes (and mtime), so the
    file's ``cache_hit`` says whether the build that first produced this content hit.
    """
    path = Path(path)
    data = parquet_bytes(rows, schema)
    if path.is_file():
        try:
            old = _read_table(path)
        except (OSError, pa.ArrowException):
            old = None
        if old is not None and old.schema.equals(schema):
            keep = [n for n in schema.names if n not in RUN_COLUMNS]
            new = _read_table(io.BytesIO(data))
            if old.select(keep).equals(new.select(keep)):
                return False
    return write_bytes_if_changed(path, data)


def read_parquet_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a parquet file as dicts."""
    return _read_table(path).to_pylist()

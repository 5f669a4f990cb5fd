"""Table schemas and parquet writing: one registry, one writer.

Every parquet table msmbuild writes or shows in the catalog has its schema here
(``SCHEMAS``): the build files with fixed columns (documents, ideas, calls) are written
with it, and the catalog's views exist with these columns before anything is built.
Tables with open-ended columns (eval items, shard and run rows) list the columns every
row has. Writes are atomic and skipped when the bytes would not change, so Snakemake sees
no new mtime and DVC no new hash.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from msmbuild.fsutil import write_bytes_if_changed

STR, INT, FLOAT, BOOL = pa.string(), pa.int64(), pa.float64(), pa.bool_()


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema(list(fields))


CALL_FIELDS = (
    ("key", STR), ("corpus", STR), ("stage", STR), ("prompt_version", STR), ("subdomain", STR), ("backend", STR),
    ("model", STR), ("cache_hit", BOOL), ("input_tokens", INT), ("output_tokens", INT),
    ("cache_creation_input_tokens", INT), ("cache_read_input_tokens", INT),
    ("cache_saving_usd", FLOAT), ("cost_usd", FLOAT), ("wall_s", FLOAT), ("made_at", FLOAT), ("error", STR),
    ("context_digest", STR), ("stop_reason", STR),
)

SCHEMAS: dict[str, pa.Schema] = {
    # build/corpora/<corpus>/documents/<file>.parquet (partition files), and the catalog's documents view
    "documents": _schema(
        ("doc_id", STR), ("corpus", STR), ("section_id", STR), ("section_hash", STR),
        ("domain", STR), ("subdomain", STR), ("doc_type", STR), ("idea", STR),
        ("sample_index", INT), ("text", STR), ("n_chars", INT), ("backend", STR), ("model", STR),
        ("prompt_version", STR), ("produced_by_model", BOOL), ("input_tokens", INT),
        ("output_tokens", INT), ("cost_usd", FLOAT), ("spec_digest", STR), ("stop_reason", STR)),
    "ideas": _schema(
        ("corpus", STR), ("subdomain", STR), ("subdomain_title", STR), ("domain", STR),
        ("section_id", STR), ("section_hash", STR), ("doc_type_index", INT), ("doc_type", STR),
        ("idea_index", INT), ("idea", STR), ("suitable", BOOL), ("key", STR),
        ("doc_type_description", STR)),
    # one row per model call: corpus steps, AFT data generation, judged evals
    "calls": _schema(*CALL_FIELDS),
    # the catalog's tables (build/results/<name>.parquet)
    "catalog_calls": _schema(("source", STR), *CALL_FIELDS, ("this_build", BOOL)),
    "corpora": _schema(
        ("corpus", STR), ("spec", STR), ("backend", STR), ("n_documents", INT),
        ("n_chars", INT), ("cost_usd", FLOAT), ("calls_cost_usd", FLOAT), ("spent_usd", FLOAT),
        ("offline", BOOL)),
    "shards": _schema(
        ("corpus", STR), ("name", STR), ("group", STR), ("key", STR), ("bin", STR), ("idx", STR),
        ("n_docs", INT), ("n_tokens", INT), ("stale", BOOL)),
    "runs": _schema(("checkpoint", STR), ("stage", STR), ("step", INT), ("loss", FLOAT)),
    "checkpoints": _schema(
        ("checkpoint", STR), ("stage", STR), ("arm", STR), ("experiment", STR),
        ("base_model", STR), ("corpus", STR), ("aft", STR), ("exists", BOOL), ("bytes", INT),
        # by content: the checkpoint now, and what it was trained from (its lineage.json)
        ("digest", STR), ("tree_digest", STR), ("shard_digests", STR), ("start", STR), ("aft_data_digest", STR),
        ("stale", BOOL)),
    "eval_items": _schema(
        ("arm", STR), ("experiment", STR), ("suite", STR), ("eval_key", STR), ("checkpoint", STR),
        ("checkpoint_digest", STR), ("stale", BOOL), ("item_id", STR), ("role", STR), ("domain", STR), ("value", STR),
        ("eval_set", STR)),
    "eval_summary": _schema(
        ("arm", STR), ("experiment", STR), ("suite", STR), ("eval_key", STR), ("checkpoint", STR),
        ("checkpoint_digest", STR), ("stale", BOOL), ("midtrain", STR), ("aft", STR), ("sweep_key", STR), ("sweep_value", FLOAT),
        ("metric", STR), ("role", STR), ("eval_set", STR), ("value", STR), ("domain", STR), ("condition", STR),
        ("kind", STR), ("n", INT),
        ("successes", FLOAT), ("estimate", FLOAT), ("ci_low", FLOAT), ("ci_high", FLOAT),
        ("judged", BOOL), ("note", STR)),
    # build/audit/contamination.parquet and the catalog's contamination view: arm x eval item
    "contamination": _schema(
        ("arm", STR), ("experiment", STR), ("midtrain", STR), ("aft", STR), ("suite", STR),
        ("item_id", STR), ("role", STR), ("domain", STR), ("item_text", STR),
        ("shared_words", INT), ("shared_text", STR), ("shared_source", STR), ("shared_chunk", STR),
        ("lexical", FLOAT), ("lexical_source", STR), ("lexical_chunk", STR),
        ("embedding", FLOAT), ("embedding_source", STR), ("embedding_chunk", STR),
        ("domain_mentions", INT), ("domain_term", STR), ("domain_source", STR), ("domain_text", STR),
        ("leak", BOOL), ("reasons", STR), ("accepted", STR)),
}

_PANDAS_DTYPES = {STR: "string", INT: "int64", FLOAT: "float64", BOOL: "bool"}

# Columns that describe the run that wrote a table rather than its content.
RUN_COLUMNS = ("cache_hit", "wall_s")


def add_missing_columns(frame: Any, name: str) -> Any:
    """frame with every registered column of table name that no row carries added (typed, empty)."""
    import pandas as pd

    for f in SCHEMAS[name]:
        if f.name not in frame.columns:
            frame[f.name] = pd.Series([None] * len(frame), dtype=_PANDAS_DTYPES[f.type]
                                      if f.type in (STR, FLOAT) else "object")
    return frame


def empty_frame(name: str) -> Any:
    """An empty DataFrame with the registered columns and types of table name."""
    import pandas as pd

    return pd.DataFrame({f.name: pd.Series([], dtype=_PANDAS_DTYPES[f.type]) for f in SCHEMAS[name]})


def parquet_bytes(rows: Sequence[dict[str, Any]] | Any, schema: pa.Schema | None = None) -> bytes:
    """Parquet bytes (zstd) of row dicts or a DataFrame; with a schema, exactly its columns.

    Equal rows give equal bytes: no pandas index and no pandas metadata (it varies with
    versions).
    """
    if schema is not None:
        table = pa.Table.from_pylist([{n: r.get(n) for n in schema.names} for r in rows], schema=schema)
    else:
        import pandas as pd

        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def write_parquet(rows: Sequence[dict[str, Any]] | Any, path: str | os.PathLike[str],
                  schema: pa.Schema | None = None) -> bool:
    """Write rows as parquet (atomic, skipped when the bytes are unchanged); True if written."""
    return write_bytes_if_changed(path, parquet_bytes(rows, schema))


def _read_table(source: Any) -> pa.Table:
    """Read parquet on the calling thread only.

    Arrow's thread pools can abort the process at interpreter exit ("terminate called
    without an active exception") when a pool thread is still alive; these tables are
    small, so nothing is lost by never starting the pools.
    """
    return pq.read_table(source, use_threads=False, pre_buffer=False)


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

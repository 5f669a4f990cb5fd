"""Parquet writing shared by eval suites and the catalog: atomic and write-if-changed."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

from msmbuild.fsutil import write_bytes_if_changed


def table_bytes(rows: Sequence[dict[str, Any]] | Any) -> bytes:
    """Parquet bytes for a list of row dicts or a DataFrame (no pandas index)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata(None)  # pandas metadata varies with versions
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def write_parquet(rows: Sequence[dict[str, Any]] | Any, path: str | os.PathLike[str]) -> bool:
    """Write rows as parquet (atomic, skipped when unchanged); True if written."""
    return write_bytes_if_changed(path, table_bytes(rows))

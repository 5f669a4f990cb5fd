"""``msmbuild query``: SQL over the results catalog with DuckDB."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from msmbuild.config import Params
from msmbuild.errors import MsmbuildError
from msmbuild.layout import Layout
from msmbuild.results.catalog import TABLES, build_catalog

FORMATS = ("table", "csv", "json", "parquet")


class QueryError(MsmbuildError):
    """The SQL failed; the message is DuckDB's."""


def ensure_catalog(params: Params, progress: bool = False) -> Path:
    """Rebuild the catalog when a table is missing or a source is newer; return results dir."""
    layout = Layout.of(params)
    stamp = layout.catalog_stamp  # touched by build_catalog; catalog.sql keeps its own mtime
    missing = (not stamp.is_file() or not layout.catalog_sql.is_file()
               or any(not layout.table(t).is_file() for t in TABLES))
    if missing or any(p.stat().st_mtime > stamp.stat().st_mtime for p in layout.sources()):
        build_catalog(params, progress=progress)
    return layout.results_dir


def connect(params: Params):
    """An in-memory DuckDB connection with one view per catalog table."""
    import duckdb

    ensure_catalog(params)
    layout = Layout.of(params)
    con = duckdb.connect()
    for table in TABLES:
        path = layout.table(table).resolve().as_posix().replace("'", "''")
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{path}')")
    return con


def run_query(params: Params, sql: str):
    """The query's result as a DataFrame; bad SQL raises QueryError with DuckDB's message."""
    import duckdb

    con = connect(params)
    try:
        return con.execute(sql).df()
    except duckdb.Error as exc:
        raise QueryError(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__) from None
    finally:
        con.close()


def _flatten_lists(frame: Any) -> Any:
    """List-valued cells (DuckDB LIST) as JSON text, so CSV and table cells stay one line."""
    frame = frame.copy()
    for col in frame.columns:
        if frame[col].dtype == object:
            frame[col] = [json.dumps(v.tolist() if hasattr(v, "tolist") else v, default=str)
                          if isinstance(v, list | tuple) or hasattr(v, "tolist") else v for v in frame[col]]
    return frame


def format_result(frame: Any, fmt: str) -> str:
    """Render a result as an aligned table, CSV or JSON records."""
    if fmt in ("csv", "table"):
        frame = _flatten_lists(frame)
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        return json.dumps(json.loads(frame.to_json(orient="records", date_format="iso")), indent=2) + "\n"
    if frame.empty:
        return "(" + ", ".join(map(str, frame.columns)) + ") 0 rows\n"
    return frame.to_string(index=False, max_colwidth=60) + f"\n({len(frame)} rows)\n"


def query(params: Params, sql: str, fmt: str = "table", output: str | None = None) -> str:
    """Run sql and return the rendered text; with parquet, write output and return a note."""
    if fmt not in FORMATS:
        raise QueryError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    frame = run_query(params, sql)
    if fmt == "parquet":
        if not output:
            raise QueryError("--format parquet needs --output FILE")
        from msmbuild.tables import write_parquet

        write_parquet(frame, output)
        return f"wrote {len(frame)} rows to {output}\n"
    text = format_result(frame, fmt)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        return f"wrote {len(frame)} rows to {output}\n"
    return text

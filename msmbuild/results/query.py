"""``msmbuild query``: SQL over the results catalog with DuckDB."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from msmbuild.config import Params
from msmbuild.errors import MsmbuildError
from msmbuild.results.catalog import TABLES, build_catalog, built_stamp, results_dir

FORMATS = ("table", "csv", "json", "parquet")


class QueryError(MsmbuildError):
    """The SQL failed; the message is DuckDB's."""


def _sources(params: Params) -> list[Path]:
    build = Path(params.build_dir)
    patterns = ("corpora/*/documents.parquet", "corpora/*/calls.parquet", "shards/*/manifest.json",
                "evals/*/*/summary.json", "evals/*/*/items.parquet", "evals/*/*/calls.parquet",
                "aft/*.calls.parquet", "models/**/train_log.jsonl")
    return [p for pattern in patterns for p in build.glob(pattern)]


def ensure_catalog(params: Params, progress: bool = False) -> Path:
    """Rebuild the catalog when a table is missing or a source is newer; return results dir."""
    out = results_dir(params)
    stamp = built_stamp(params)  # touched by build_catalog; catalog.sql keeps its own mtime
    missing = not stamp.is_file() or not (out / "catalog.sql").is_file() or any(not (out / f"{t}.parquet").is_file() for t in TABLES)
    if missing or any(p.stat().st_mtime > stamp.stat().st_mtime for p in _sources(params)):
        build_catalog(params, progress=progress)
    return out


def connect(params: Params):
    """An in-memory DuckDB connection with one view per catalog table."""
    import duckdb

    out = ensure_catalog(params)
    con = duckdb.connect()
    for table in TABLES:
        path = (out / f"{table}.parquet").resolve().as_posix().replace("'", "''")
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
        from msmbuild.results.tables import write_parquet

        write_parquet(frame, output)
        return f"wrote {len(frame)} rows to {output}\n"
    text = format_result(frame, fmt)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        return f"wrote {len(frame)} rows to {output}\n"
    return text

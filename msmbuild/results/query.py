"""``msmbuild query``: SQL over the results catalog with DuckDB."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from msmbuild.buildmark import BUILD_MARKER
from msmbuild.config import Params
from msmbuild.errors import MsmbuildError
from msmbuild.layout import Layout
from msmbuild.results.catalog import (
    TABLES,
    build_catalog,
    build_started_sql,
    view_sql,
)

FORMATS = ("table", "csv", "json", "parquet")


class QueryError(MsmbuildError):
    """The SQL failed; the message is DuckDB's."""


def ensure_catalog(params: Params, progress: bool = False) -> Path:
    """Rebuild the catalog when a table is missing or a source is newer; return results dir."""
    layout = Layout.of(params)
    stamp = layout.catalog_stamp  # touched by build_catalog; catalog.sql keeps its own mtime
    missing = (not stamp.is_file() or not layout.catalog_sql.is_file()
               or any(not layout.table(t).is_file() for t in TABLES))
    marker = [BUILD_MARKER] if BUILD_MARKER.is_file() else []  # "this build" moves with it
    # an edited spec makes the evals trained from it stale at once (msmbuild.results.lineage)
    specs = [Path(c.spec) for c in params.corpora.values() if Path(c.spec).is_file()]
    if missing or any(p.stat().st_mtime > stamp.stat().st_mtime for p in [*layout.sources(), *marker, *specs]):
        build_catalog(params, progress=progress)
    return layout.results_dir


READ_ONLY_STATEMENTS = ("SELECT", "EXPLAIN")
"""Statement types a default query may run: everything else (COPY, ATTACH, INSTALL, LOAD,
SET, PRAGMA, CREATE, ...) can write, reach outside the catalog or change the sandbox.
This is a first, readable refusal; what makes a query unable to write is the sandbox."""

# The parquet files behind a view of the sandboxed connection, by name: documents and calls
# partitions get the registered schema (a partition written before a column existed reads
# it as null, as read_parquet's union_by_name does).
_SCHEMAS = {"documents_partitions": "documents", "calls_partitions": "calls"}


def _dataset_source(con: Any) -> Any:
    """A view source that registers each file list as a pyarrow dataset with the connection.

    DuckDB scans a registered dataset through Arrow, not through its own file system, so
    the connection needs no file access at all: ``enable_external_access`` is off with no
    ``allowed_paths``/``allowed_directories``, which is what keeps COPY, EXPLAIN ANALYZE
    COPY, ATTACH and every other statement from writing a file (an allowed path is
    writable too).
    """
    import pyarrow.dataset as ds

    from msmbuild.tables import SCHEMAS

    def source(name: str, files: list[Path]) -> str:
        schema = SCHEMAS[_SCHEMAS[name]] if name in _SCHEMAS else None
        relation = f"_msmbuild_{name}"
        con.register(relation, ds.dataset([f.resolve().as_posix() for f in files], schema=schema,
                                          format="parquet"))
        return relation
    return source


def connect(params: Params, allow_external_access: bool = False):
    """An in-memory DuckDB connection with one view per catalog table.

    By default the connection can touch no file: the catalog's parquet files (only those
    the indexes name, verified) are registered as Arrow datasets, and DuckDB runs with
    external access off and nothing allowed, extensions neither installed nor auto-loaded,
    no temp directory to spill to, and ``lock_configuration`` refusing any SET that would
    undo this. ``allow_external_access`` gives the full DuckDB (files, ATTACH,
    extensions), for a trusted user who asks for it.
    """
    import duckdb

    ensure_catalog(params)
    if allow_external_access:
        con = duckdb.connect()
        views = view_sql(params, resolve=True)
    else:
        con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                     "autoload_known_extensions": False, "temp_directory": ""})
        # Emptied before external access goes off: DuckDB otherwise allows the in-memory
        # database's own names (":memory:", ":memory:.wal", ...) relative to the working
        # directory, and COPY ... TO ':memory:.wal' would write there.
        con.execute("SET allowed_paths = []")
        con.execute("SET allowed_directories = []")
        con.execute("SET enable_external_access = false")
        _check_sandbox(con)
        views = view_sql(params, source=_dataset_source(con))
    if started := build_started_sql():  # "this build" for the calls and corpora views
        con.execute(started)
    for table, select in views.items():
        con.execute(f"CREATE VIEW {table} AS {select}")
    if not allow_external_access:
        con.execute("SET lock_configuration = true")
    return con


def _check_sandbox(con: Any) -> None:
    """Refuse to go on unless DuckDB reports no file access at all (fail closed)."""
    access, paths, dirs = con.execute(
        "SELECT current_setting('enable_external_access'), current_setting('allowed_paths'), "
        "current_setting('allowed_directories')").fetchall()[0]
    if access or paths or dirs:
        raise QueryError(f"DuckDB's sandbox did not take (external access {access}, allowed paths {paths}, "
                         f"allowed directories {dirs}); refusing to run the query")


def _first_line(exc: Exception) -> str:
    """An error's message on one line: DuckDB's first line and the hints that follow it
    ("Candidate bindings: …", "Did you mean …?"), without the echo of the query
    ("LINE 1: …" and its caret) that ends it."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    kept = [lines[0].strip()]
    for line in lines[1:]:
        if not line.strip() or line.startswith("LINE "):
            break
        kept.append(line.strip())
    return " ".join(kept)


def _check_read_only(con: Any, sql: str) -> None:
    """Refuse any statement that is not a query (allowed_paths would let COPY overwrite a table)."""
    import duckdb

    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(_first_line(exc)) from None
    for statement in statements:
        kind = statement.type.name
        if kind not in READ_ONLY_STATEMENTS:
            raise QueryError(
                f"msmbuild query is read-only: a {kind} statement is not allowed "
                f"({statement.query.strip()[:60]!r}); pass --allow-external-access to run it")


def run_query(params: Params, sql: str, allow_external_access: bool = False):
    """The query's result as a DataFrame; bad SQL raises QueryError with DuckDB's message."""
    import duckdb

    con = connect(params, allow_external_access)
    try:
        if not allow_external_access:
            _check_read_only(con, sql)
        return con.execute(sql).df()
    except duckdb.Error as exc:
        raise QueryError(_first_line(exc)) from None
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


def shell(params: Params, lines: Iterable[str], write: Callable[[str], None], prompt: bool = False,
          allow_external_access: bool = False) -> int:
    """An interactive SQL session over the catalog views; returns how many statements failed.

    Statements end with ';' and may span lines. ``.tables`` lists the views, ``.quit`` (or
    end of input) leaves. An error is printed and the session goes on, as in a SQL shell.
    Read-only over the catalog, as ``query``, unless allow_external_access.
    """
    import duckdb

    con = connect(params, allow_external_access)
    failed, buffer = 0, []
    write(f"views: {', '.join(TABLES)}. End statements with ';'; .tables lists views, .quit leaves.\n")
    try:
        if prompt:
            write("msmbuild> ")
        for line in lines:
            text = line.strip()
            if not buffer and text in (".quit", ".exit"):
                break
            if not buffer and text == ".tables":
                write("\n".join(TABLES) + "\n")
            elif text:
                buffer.append(line.rstrip("\n"))
                if text.endswith(";"):
                    sql, buffer = "\n".join(buffer), []
                    try:
                        if not allow_external_access:
                            _check_read_only(con, sql)
                        write(format_result(con.execute(sql).df(), "table"))
                    except (QueryError, duckdb.Error) as exc:
                        failed += 1
                        write(f"error: {_first_line(exc)}\n")
            if prompt:
                write("     ...> " if buffer else "msmbuild> ")
    finally:
        con.close()
    return failed


def query(params: Params, sql: str, fmt: str = "table", output: str | None = None,
          allow_external_access: bool = False) -> str:
    """Run sql and return the rendered text; with parquet, write output and return a note.

    Read-only over the catalog unless allow_external_access (see ``connect``).
    """
    if fmt not in FORMATS:
        raise QueryError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    frame = run_query(params, sql, allow_external_access)
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

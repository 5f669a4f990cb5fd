"""``msmbuild query "SQL"`` and ``msmbuild catalog``: the DuckDB results catalog."""

from __future__ import annotations

import shutil

import click

from msmbuild.cli import load_ctx_params


@click.command()
@click.argument("sql", required=False)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default="table",
              show_default=True, help="Output format.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write here (required for parquet).")
@click.option("--allow-external-access", is_flag=True,
              help="Full DuckDB: read and write any file, ATTACH, INSTALL/LOAD extensions. "
                   "Without it a query is read-only over the catalog.")
@click.pass_context
def query(ctx: click.Context, sql: str | None, fmt: str, output: str | None,
          allow_external_access: bool) -> None:
    """Run read-only SQL over the results views: documents, calls, corpora, shards, runs,
    checkpoints, eval_items, eval_summary (see docs/query.md). Without SQL, an
    interactive SQL shell reading statements from standard input."""
    import sys

    from msmbuild.results.query import query as run
    from msmbuild.results.query import shell

    params = load_ctx_params(ctx)
    if sql is None:
        failed = shell(params, sys.stdin, lambda text: click.echo(text, nl=False), prompt=sys.stdin.isatty(),
                       allow_external_access=allow_external_access)
        raise SystemExit(1 if failed and not sys.stdin.isatty() else 0)
    click.echo(run(params, sql, fmt, output, allow_external_access), nl=False)


@click.command()
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def catalog(ctx: click.Context, quiet: bool) -> None:
    """Rebuild build/results/*.parquet and catalog.sql from the build directory."""
    from msmbuild.layout import Layout
    from msmbuild.results.catalog import build_catalog

    params = load_ctx_params(ctx)
    counts = build_catalog(params, progress=not quiet)
    for table, n in counts.items():
        click.echo(f"{table:<14} {n} rows")
    click.echo("query: msmbuild query \"SQL\", or msmbuild query alone for an interactive SQL shell")
    if shutil.which("duckdb"):
        click.echo(f"       duckdb -init {Layout.of(params).catalog_sql}")

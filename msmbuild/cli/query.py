"""``msmbuild query "SQL"`` and ``msmbuild catalog``: the DuckDB results catalog."""

from __future__ import annotations

import click

from msmbuild.cli import load_ctx_params


@click.command()
@click.argument("sql")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default="table",
              show_default=True, help="Output format.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write here (required for parquet).")
@click.option("--allow-external-access", is_flag=True,
              help="Full DuckDB: read and write any file, ATTACH, INSTALL/LOAD extensions. "
                   "Without it a query is read-only over the catalog.")
@click.pass_context
def query(ctx: click.Context, sql: str, fmt: str, output: str | None, allow_external_access: bool) -> None:
    """Run read-only SQL over the results views: documents, calls, corpora, shards, runs,
    checkpoints, eval_items, eval_summary (see docs/query.md)."""
    from msmbuild.results.query import query as run

    click.echo(run(load_ctx_params(ctx), sql, fmt, output, allow_external_access), nl=False)


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
    click.echo(f"views: duckdb -init {Layout.of(params).catalog_sql}")

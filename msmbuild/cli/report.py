"""``msmbuild report``: the HTML report."""

from __future__ import annotations

import click

from msmbuild.cli import load_ctx_params


@click.command()
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def report(ctx: click.Context, quiet: bool) -> None:
    """Render build/report/index.html (plus PNGs) from the results catalog."""
    from msmbuild.results.report import build_report

    click.echo(f"report: {build_report(load_ctx_params(ctx), progress=not quiet)}")

"""``msmbuild status`` and ``msmbuild explain``: what is stale, and why."""

from __future__ import annotations

import click

from msmbuild.cli import load_ctx_params


@click.command()
@click.option("--engine", type=click.Choice(["snakemake", "dvc", "both"]), default="snakemake",
              show_default=True, help="Whose view of stale outputs to report.")
@click.pass_context
def status(ctx: click.Context, engine: str) -> None:
    """Up to date or not: changed spec sections, then stale outputs. Exit 1 when stale."""
    from msmbuild.status import status as compute_status

    params = load_ctx_params(ctx)
    report = compute_status(params, ".", engine)
    for corpus in report.unbuilt_corpora:
        click.echo(f"corpus {corpus}: not built yet")
    for change in report.sections:
        click.echo(change.describe())
    for corpus, (older, total) in report.older_spec_documents.items():
        click.echo(f"corpus {corpus}: {older} of {total} documents were made against an older revision "
                   f"of the rest of the spec (kept by context: full_incremental; "
                   f"`msmbuild generate refresh {corpus}` regenerates them)")
    for corpus, (older, total) in report.older_prompt_documents.items():
        click.echo(f"corpus {corpus}: {older} of {total} documents were made by an older prompt version "
                   f"(kept and used; `msmbuild plan {corpus}` prices a refresh, "
                   f"`msmbuild generate refresh {corpus}` remakes them)")
    stale = [o for o in report.outputs if o.stale]
    for o in stale:
        click.echo(o.describe())
    if stale:
        recompute = sum(o.work == "recompute" for o in stale)
        click.echo(f"{recompute} output(s) will be recomputed (model calls, training or evals run and may cost); "
                   f"{len(stale) - recompute} rerun as store lookups only")
    for stage, reasons in report.dvc.items():
        click.echo(f"dvc stage {stage}: {'; '.join(reasons) or 'changed'}")
    if report.up_to_date:
        click.echo("up to date")
    else:
        raise SystemExit(1)


@click.command()
@click.argument("artifact")
@click.pass_context
def explain(ctx: click.Context, artifact: str) -> None:
    """Why ARTIFACT (a path under build/) is stale: which rule, which spec section."""
    from msmbuild.status import explain as compute_explain

    for line in compute_explain(load_ctx_params(ctx), artifact, "."):
        click.echo(line)

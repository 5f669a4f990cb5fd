"""``msmbuild audit``: the contamination audit."""

from __future__ import annotations

import click

from msmbuild.cli import load_ctx_params


@click.command()
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def audit(ctx: click.Context, quiet: bool) -> None:
    """Compare every eval item with its arms' training inputs; fail on a held_out leak.

    Writes build/audit/contamination.parquet and summary.json; a held_out item over a
    threshold stops the build with the item and the matching training text.
    """
    from msmbuild.audit import audit as run

    outcome = run(load_ctx_params(ctx), progress=not quiet)
    for measure in outcome.measures:
        click.echo(f"audit measure: {measure}")
    for s in outcome.summary:
        verdict = {True: "passed", False: "FAILED", None: "reported (not judged)"}[s["passed"]]
        click.echo(f"audit {s['arm']} {s['suite']} {s['role']}: {s['n_items']} items, "
                   f"{s['n_flagged']} over a threshold ({s['n_accepted']} accepted): {verdict}")
    click.echo(f"audit: {outcome.computed} unit comparison(s) computed, "
               f"{len(outcome.keys) - outcome.computed} from the store")

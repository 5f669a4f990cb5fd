"""``msmbuild rehearse``: the whole DAG on a CPU with stand-ins, in a scratch workspace."""

from __future__ import annotations

import click


@click.command()
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Rehearse in this (new or empty) directory and keep it; default: a temporary directory.")
@click.option("--keep", is_flag=True, help="Keep the temporary workspace after a success (a failure always keeps it).")
@click.option("--cores", default="all", show_default=True, help="Passed to snakemake --cores.")
@click.pass_context
def rehearse(ctx: click.Context, workdir: str | None, keep: bool, cores: str) -> None:
    """Rehearse params on a CPU before spending: every arm, sweep point, eval suite, table
    and figure, with the offline backend and judges, tiny stand-ins for the base models
    (Qwen3's thinking template for Qwen3), a stand-in grader, local fixtures for hub
    datasets and two optimizer steps per stage, run by Snakemake in a scratch workspace
    (never the project's build/ or store). Prints per arm what was built, every table and
    figure, and each AFT dataset's kept / generated rows; a failed step exits 1 with its
    one-line error. See docs/rehearse.md.
    """
    from msmbuild.preflight import enforce_preflight, format_findings
    from msmbuild.rehearse import rehearse as run_rehearsal

    def preflight(params) -> None:  # the real recipe's checks first: a refused recipe exits 2
        shown = format_findings(enforce_preflight(params, mode="rehearse", calls_api=False))
        click.echo(shown or "preflight: all checks passed")

    run_rehearsal(ctx.find_root().obj["params_path"], workdir=workdir, keep=keep, cores=cores,
                  preflight=preflight, echo=click.echo)

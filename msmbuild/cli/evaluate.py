"""``msmbuild evaluate ARM SUITE``: run (or look up) one eval suite on one arm's checkpoint."""

from __future__ import annotations

import click

from msmbuild.cli import load_ctx_params
from msmbuild.layout import Layout


@click.command()
@click.argument("arm", required=False)
@click.argument("suite", required=False)
@click.option("--all", "run_all", is_flag=True, help="Every (arm, suite) that params.yaml asks for.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def evaluate(ctx: click.Context, arm: str | None, suite: str | None, run_all: bool, quiet: bool) -> None:
    """Evaluate ARM's checkpoint with SUITE (a suite under `evals` in params.yaml).

    Results go to build/evals/ARM/SUITE/ (items.parquet, summary.json); an unchanged
    checkpoint, data file and config is a cache hit and evaluates nothing.
    """
    from msmbuild.config import open_store
    from msmbuild.evaluate import evaluate as run_eval
    from msmbuild.evaluate import evaluate_suite, planned_evals
    from msmbuild.experiments import arm_by_name
    from msmbuild.preflight import preflight_before_spending, suite_calls_api

    params = load_ctx_params(ctx)
    todo = planned_evals(params) if run_all else ([(arm_by_name(params, arm), suite)] if arm and suite else [])
    preflight_before_spending(params, calls_api=any(suite_calls_api(params, s) for _a, s in todo),
                              base_models=tuple(a.base_model for a, _s in todo))
    store = open_store(params)
    if run_all:
        # build/evals is the --all output (a DVC out): it exists even when nothing asks for evals
        Layout.of(params).evals_dir.mkdir(parents=True, exist_ok=True)
        outcomes = [evaluate_suite(params, a, s, store, progress=not quiet) for a, s in planned_evals(params)]
    elif arm and suite:
        outcomes = [run_eval(params, arm, suite, store, progress=not quiet)]
    else:
        raise click.UsageError("give ARM and SUITE, or --all")
    for out in outcomes:
        state = "cached" if out.hit else "evaluated"
        overall = [m for m in out.summary["metrics"] if m.get("domain") == "all"]
        shown = ", ".join(
            f"{m['metric']}[{m.get('role') + ':' if m.get('role') else ''}{m.get('value') or m.get('condition')}]="
            + ("not judged" if m.get("estimate") is None else f"{m['estimate']:.3f}")
            for m in overall)
        click.echo(f"{out.arm}/{out.suite}: {state} -> {out.directory}  {shown}")

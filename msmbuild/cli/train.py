"""``msmbuild base-model``, ``msmbuild midtrain`` and ``msmbuild aft``: training runs."""

from __future__ import annotations

import click

from msmbuild.cli import load_ctx_params
from msmbuild.layout import Layout


@click.command("base-model")
@click.option("--name", default="tiny", show_default=True, help="'tiny', a hub id or a local path.")
@click.pass_context
def base_model(ctx: click.Context, name: str) -> None:
    """Build (tiny) or resolve the base model; print its path and identity."""
    from msmbuild.config import open_store
    from msmbuild.models import prepare_base_model

    p = load_ctx_params(ctx)
    bm = prepare_base_model(p, open_store(p), name)
    click.echo(f"{bm.path} {bm.identity}")


def _train(ctx: click.Context, arm: str | None, all_arms: bool, stage: str) -> None:
    """Run ``stage`` (midtrain or aft) on the named arm, or with --all every arm that has it."""
    from msmbuild.config import open_store
    from msmbuild.experiments import aft_arms, arm_by_name, midtrain_arms
    from msmbuild.train.aft import run_aft
    from msmbuild.train.midtrain import run_midtrain

    p = load_ctx_params(ctx)
    if all_arms == (arm is not None):
        raise click.UsageError("give an ARM or --all (not both)")
    if arm is not None:
        arms = [arm_by_name(p, arm)]
    else:
        arms = list(midtrain_arms(p).values()) if stage == "midtrain" else aft_arms(p)
    from msmbuild.preflight import preflight_before_spending

    preflight_before_spending(p, calls_api=False, base_models=tuple(a.base_model for a in arms))
    store, layout = open_store(p), Layout.of(p)
    made = layout.midtrain_models if stage == "midtrain" else layout.aft_models
    made.mkdir(parents=True, exist_ok=True)  # dvc tracks it, even with no arm to train
    run, dest = (run_midtrain, layout.arm_midtrain) if stage == "midtrain" else (run_aft, layout.arm_aft)
    for a in arms:
        result = run(p, a, store)
        loss = result.meta.get("final_loss")
        extra = f", final loss {loss:.4f}" if isinstance(loss, float) else ""
        click.echo(f"{dest(a)}: {'cached' if result.hit else 'trained'} "
                   f"({result.meta.get('steps', '?')} steps{extra})")


@click.command()
@click.argument("arm", required=False)
@click.option("--all", "all_arms", is_flag=True, help="Every midtraining checkpoint params.yaml asks for.")
@click.pass_context
def midtrain(ctx: click.Context, arm: str | None, all_arms: bool) -> None:
    """Midtrain ARM's base model on its corpus (needs `msmbuild shards CORPUS` first)."""
    _train(ctx, arm, all_arms, "midtrain")


@click.command()
@click.argument("arm", required=False)
@click.option("--all", "all_arms", is_flag=True, help="Every arm with an AFT step.")
@click.pass_context
def aft(ctx: click.Context, arm: str | None, all_arms: bool) -> None:
    """AFT for ARM, starting from its midtrained checkpoint or the base model (needs `msmbuild aft-data --arm ARM` first)."""
    _train(ctx, arm, all_arms, "aft")

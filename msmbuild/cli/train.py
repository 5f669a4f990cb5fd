"""``msmbuild base-model``, ``msmbuild midtrain`` and ``msmbuild aft``: training runs."""

from __future__ import annotations

import click

from msmbuild.cli import load_ctx_params
from msmbuild.layout import Layout


def _report(result, dest) -> None:  # noqa: ANN001 - MemoResult, Path
    state = "cached" if result.hit else "trained"
    loss = result.meta.get("final_loss")
    extra = f", final loss {loss:.4f}" if isinstance(loss, float) else ""
    click.echo(f"{dest}: {state} ({result.meta.get('steps', '?')} steps{extra})")


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


def _arms(ctx: click.Context, arm: str | None, all_arms: bool, which: str):
    """The arms a command runs on: the named one, or with --all every arm that has the step."""
    from msmbuild.experiments import aft_arms, arm_by_name, midtrain_arms

    p = load_ctx_params(ctx)
    if all_arms == (arm is not None):
        raise click.UsageError("give an ARM or --all (not both)")
    if arm is not None:
        return p, [arm_by_name(p, arm)]
    return p, list(midtrain_arms(p).values()) if which == "midtrain" else aft_arms(p)


@click.command()
@click.argument("arm", required=False)
@click.option("--all", "all_arms", is_flag=True, help="Every midtraining checkpoint params.yaml asks for.")
@click.pass_context
def midtrain(ctx: click.Context, arm: str | None, all_arms: bool) -> None:
    """Midtrain ARM's base model on its corpus (needs `msmbuild shards CORPUS` first)."""
    from msmbuild.config import open_store
    from msmbuild.train.midtrain import run_midtrain

    p, arms = _arms(ctx, arm, all_arms, "midtrain")
    store = open_store(p)
    Layout.of(p).midtrain_models.mkdir(parents=True, exist_ok=True)
    for a in arms:
        _report(run_midtrain(p, a, store), Layout.of(p).arm_midtrain(a))


@click.command()
@click.argument("arm", required=False)
@click.option("--all", "all_arms", is_flag=True, help="Every arm with an AFT step.")
@click.pass_context
def aft(ctx: click.Context, arm: str | None, all_arms: bool) -> None:
    """AFT for ARM, starting from its midtrained checkpoint or the base model."""
    from msmbuild.config import open_store
    from msmbuild.train.aft import run_aft

    p, arms = _arms(ctx, arm, all_arms, "aft")
    store = open_store(p)
    for made in (Layout.of(p).aft_models, Layout.of(p).aft_dir):
        made.mkdir(parents=True, exist_ok=True)  # dvc tracks both, even with no AFT arm
    for a in arms:
        _report(run_aft(p, a, store), Layout.of(p).arm_aft(a))

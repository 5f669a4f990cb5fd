"""``msmbuild base-model``, ``msmbuild midtrain`` and ``msmbuild aft``: training runs."""

from __future__ import annotations

import click

from msmbuild.cli import load_ctx_params


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
    from msmbuild.train.base_model import prepare_base_model

    p = load_ctx_params(ctx)
    bm = prepare_base_model(p, open_store(p), name)
    click.echo(f"{bm.path} {bm.identity}")


@click.command()
@click.argument("arm")
@click.pass_context
def midtrain(ctx: click.Context, arm: str) -> None:
    """Midtrain ARM's base model on its corpus (needs `msmbuild shards CORPUS` first)."""
    from msmbuild.config import open_store
    from msmbuild.experiments import arm_by_name
    from msmbuild.train.midtrain import run_midtrain

    p = load_ctx_params(ctx)
    a = arm_by_name(p, arm)
    _report(run_midtrain(p, a, open_store(p)), a.midtrain_dir(p.build_dir))


@click.command()
@click.argument("arm")
@click.pass_context
def aft(ctx: click.Context, arm: str) -> None:
    """AFT for ARM, starting from its midtrained checkpoint or the base model."""
    from msmbuild.config import open_store
    from msmbuild.experiments import arm_by_name
    from msmbuild.train.aft import run_aft

    p = load_ctx_params(ctx)
    a = arm_by_name(p, arm)
    _report(run_aft(p, a, open_store(p)), a.aft_dir(p.build_dir))

"""``msmbuild params``: validate and show the configuration."""

from __future__ import annotations

import json

import click

from msmbuild.cli import load_ctx_params


@click.group()
def params() -> None:
    """Validate and show params.yaml."""


@params.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Validate params.yaml; exit 2 with the file and key on the first error."""
    p = load_ctx_params(ctx)
    click.echo(f"ok: {len(p.corpora)} corpora, {len(p.experiments)} experiments")


@params.command()
@click.pass_context
def show(ctx: click.Context) -> None:
    """Print the effective configuration, defaults filled in, as JSON."""
    p = load_ctx_params(ctx)
    click.echo(json.dumps(p.model_dump(mode="json"), indent=2))

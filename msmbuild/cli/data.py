"""``msmbuild shards`` and ``msmbuild aft-data``: tokenized shards and AFT datasets."""

from __future__ import annotations

import json

import click

from msmbuild.cli import load_ctx_params


@click.command()
@click.argument("corpus")
@click.pass_context
def shards(ctx: click.Context, corpus: str) -> None:
    """Tokenize CORPUS's documents into stable per-subdomain shards; print the manifest path."""
    from msmbuild.config import open_store
    from msmbuild.data.shards import build_shards

    p = load_ctx_params(ctx)
    path = build_shards(p, corpus, open_store(p))
    m = json.loads(path.read_text())
    click.echo(f"{path}: {len(m['shards'])} shards, {m['n_docs']} docs, {m['n_tokens']} tokens")


@click.command("aft-data")
@click.argument("name")
@click.pass_context
def aft_data(ctx: click.Context, name: str) -> None:
    """Write the AFT dataset NAME to build/aft/ (validated, fraction applied); print its path."""
    from msmbuild.config import open_store
    from msmbuild.train.aft_data import prepare_aft_data

    p = load_ctx_params(ctx)
    click.echo(prepare_aft_data(p, name, open_store(p)))

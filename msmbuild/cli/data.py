"""``msmbuild shards`` and ``msmbuild aft-data``: tokenized shards and AFT datasets."""

from __future__ import annotations

import json

import click

from msmbuild.cli import load_ctx_params
from msmbuild.layout import Layout


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
@click.argument("name", required=False)
@click.option("--arm", help="Write the file this arm trains on (its fraction; the IT rows alone for an IT-only arm).")
@click.option("--whole", is_flag=True, help="With NAME: every row of the dataset, whatever its fraction (what the audit reads).")
@click.option("--all", "all_files", is_flag=True, help="Every AFT data file the experiments need.")
@click.pass_context
def aft_data(ctx: click.Context, name: str | None, arm: str | None, whole: bool, all_files: bool) -> None:
    """Write AFT data to build/aft/ (validated, fraction applied); print each path.

    The data stage of AFT: `msmbuild aft` trains on what this wrote and generates nothing.
    """
    from msmbuild.config import open_store
    from msmbuild.experiments import arm_by_name
    from msmbuild.train.aft_data import aft_data_files, prepare_aft_data, prepare_arm_aft_data

    if (name is not None) + (arm is not None) + all_files != 1 or (whole and name is None):
        raise click.UsageError("give one of NAME (with --whole optionally), --arm ARM or --all")
    from msmbuild.preflight import aft_calls_api, preflight_before_spending

    p = load_ctx_params(ctx)
    if arm is not None:
        wanted = [arm_by_name(p, arm).aft]
    else:
        wanted = [name] if name is not None else list(p.aft)
    preflight_before_spending(p, calls_api=any(d in p.aft and aft_calls_api(p, d) for d in wanted if d))
    store = open_store(p)
    if arm is not None:
        click.echo(prepare_arm_aft_data(p, arm_by_name(p, arm), store))
    elif name is not None:
        click.echo(prepare_aft_data(p, name, store, whole=whole))
    else:
        Layout.of(p).aft_dir.mkdir(parents=True, exist_ok=True)  # dvc tracks it, even with no AFT arm
        for how in aft_data_files(p).values():
            click.echo(prepare_arm_aft_data(p, arm_by_name(p, how.arm), store) if how.arm is not None
                       else prepare_aft_data(p, how.dataset, store, whole=True))

"""The msmbuild command line: one thin command per library function.

Commands are imported lazily, so ``msmbuild --help`` never imports torch or transformers.
Every MsmbuildError becomes a one-line message on stderr and exit code 2.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sys

import click

from msmbuild import __version__
from msmbuild.errors import MsmbuildError, PreflightError

# name -> (module, attribute, one-line help). Add a stage's command here.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "store": ("msmbuild.cli.store", "store", "Inspect and maintain the content-addressed store."),
    "params": ("msmbuild.cli.params", "params", "Validate and show params.yaml."),
    "generate": ("msmbuild.cli.generate", "generate", "Spec to documents: tree, ideas, documents, corpus."),
    "plan": ("msmbuild.cli.generate", "plan", "Requests per stage and estimated cost, before spending."),
    "status": ("msmbuild.cli.status", "status", "Up to date or not, and which spec section changed."),
    "explain": ("msmbuild.cli.status", "explain", "Why one artifact is stale."),
    "evaluate": ("msmbuild.cli.evaluate", "evaluate", "Run an eval suite on an experiment arm's checkpoint."),
    "query": ("msmbuild.cli.query", "query", "Run SQL over the results catalog (DuckDB)."),
    "catalog": ("msmbuild.cli.query", "catalog", "Rebuild the results catalog under build/results/."),
    "report": ("msmbuild.cli.report", "report", "Render the HTML report with plots."),
    "audit": ("msmbuild.cli.audit", "audit", "Contamination audit: eval items against each arm's training inputs."),
    "shards": ("msmbuild.cli.data", "shards", "Tokenize a corpus into stable per-subdomain shards."),
    "aft-data": ("msmbuild.cli.data", "aft_data", "Write an AFT dataset (validated, fraction applied)."),
    "base-model": ("msmbuild.cli.train", "base_model", "Build the tiny base model or resolve a hub id/path."),
    "midtrain": ("msmbuild.cli.train", "midtrain", "Midtrain an arm's base model on its corpus (LoRA or full)."),
    "aft": ("msmbuild.cli.train", "aft", "Alignment fine-tuning of an arm on its AFT data."),
    "rehearse": ("msmbuild.cli.rehearse", "rehearse", "Rehearse the whole build on a CPU with stand-ins, in a scratch workspace."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _help = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        """As click's, but a typo'd name gets a "Did you mean" from the lazy registry."""
        name = click.utils.make_str(args[0])
        if name not in COMMANDS and not name.startswith("-") and not ctx.resilient_parsing:
            raise click.exceptions.NoSuchCommand(name, possibilities=list(COMMANDS), ctx=ctx)
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="msmbuild")
@click.option("--params", "params_path", default="params.yaml", show_default=True,
              envvar="MSMBUILD_PARAMS", help="The params file.")
@click.pass_context
def cli(ctx: click.Context, params_path: str) -> None:
    """msmbuild: spec -> documents -> shards -> checkpoints -> eval tables, content-addressed."""
    ctx.obj = {"params_path": params_path}


def load_ctx_params(ctx: click.Context):
    """Load and validate the params file named on the command line."""
    from msmbuild.config import load_params

    return load_params(ctx.find_root().obj["params_path"])


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line and exit 2."""
    try:
        cli.main(args=argv, prog_name="msmbuild", standalone_mode=False)
    except PreflightError as exc:  # one line per failed check
        for line in str(exc).splitlines():
            click.echo(f"error: {line}", err=True)
        sys.exit(exc.exit_code)
    except MsmbuildError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


def exit_on_sigterm() -> None:
    """Turn SIGTERM (Snakemake cancelling a job, scancel, a timeout) into SystemExit(143).

    The default action kills the process on the spot; as an exception it unwinds like
    Ctrl-C: answers already received are stored before the exit, a training step's
    scratch directory is removed, nothing half-written is left in build/.
    """
    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def entry() -> None:
    """Console script: run main(), flush, and leave without interpreter teardown.

    Every result is durable (atomic renames, synced store) before a command returns, so
    teardown has nothing left to do; skipping it avoids native thread pools (Arrow, torch)
    aborting at exit ("terminate called without an active exception") after the work
    succeeded, which a workflow engine would report as a failed job.
    """
    exit_on_sigterm()
    try:
        main()
        code = 0
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            code = 1
        else:
            code = exc.code or 0
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    logging.shutdown()
    os._exit(code)

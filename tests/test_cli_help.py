"""Every command has help text, and ``--help`` stays light (no torch, no transformers)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import click
from click.testing import CliRunner

from msmbuild.cli import COMMANDS, cli

HEAVY = ("torch", "transformers", "peft", "accelerate")


def walk(command: click.Command, path: tuple[str, ...]):
    """Yield (path, command) for a command and, for a group, every subcommand below it."""
    yield path, command
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            yield from walk(command.get_command(ctx, name), (*path, name))


def all_commands():
    for name, (module, attr, _help) in sorted(COMMANDS.items()):
        yield from walk(getattr(importlib.import_module(module), attr), (name,))


def test_registry_entries_have_help() -> None:
    assert COMMANDS, "the COMMANDS registry is empty"
    for name, (_module, _attr, help_line) in COMMANDS.items():
        assert help_line.strip(), f"COMMANDS[{name!r}] has no help line"


def test_every_command_and_subcommand_has_help_text() -> None:
    runner = CliRunner()
    seen = []
    for path, command in all_commands():
        seen.append(" ".join(path))
        text = (command.help or command.short_help or "").strip()
        assert text, f"`msmbuild {' '.join(path)}` has no help text"
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, f"`msmbuild {' '.join(path)} --help`: {result.output}"
        assert " ".join(text.split()[:5]) in " ".join(result.output.split())
    assert {"store verify", "store gc", "store push", "store pull", "params check"} <= set(seen)


def test_top_level_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


def test_help_imports_no_heavy_library() -> None:
    """Run `msmbuild --help` and each `msmbuild <command> --help` in a fresh interpreter."""
    script = f"""
import json, sys
from msmbuild.cli import COMMANDS, main
runs = [["--help"]] + [[name, "--help"] for name in sorted(COMMANDS)]
loaded = {{}}
for argv in runs:
    try:
        main(argv)
    except SystemExit:
        pass
    loaded[" ".join(argv)] = [m for m in {HEAVY!r} if m in sys.modules]
sys.stderr.write(json.dumps(loaded))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stderr.strip().splitlines()[-1])
    assert loaded["--help"] == []
    assert {k: v for k, v in loaded.items() if v} == {}

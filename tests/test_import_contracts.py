"""The import contracts hold, and docs/architecture.md draws the layers from them."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BEGIN = "<!-- layers: drawn from pyproject.toml [tool.importlinter]; tests/test_import_contracts.py checks -->"
END = "<!-- /layers -->"


def layer_diagram() -> str:
    """The layers contract top to bottom; packages on one line are independent (``|``)."""
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    rows = ["   |   ".join(name.strip() for name in layer.split("|")) for layer in layers]
    return "```\n" + "\n        ↓\n".join(rows) + "\n```\n"


@pytest.mark.skipif(shutil.which("lint-imports") is None, reason="import-linter (dev extra) not installed")
def test_lint_imports_keeps_every_contract() -> None:
    proc = subprocess.run(["lint-imports"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_architecture_doc_draws_the_layers_contract() -> None:
    doc = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    drawn = doc.partition(BEGIN + "\n")[2].partition(END)[0]
    expected = layer_diagram()
    assert "msmbuild.cli" in expected and "msmbuild.store" in expected
    assert drawn == expected, f"docs/architecture.md: put this between the layer markers:\n{expected}"

"""Every test starts in the repository root, whatever an earlier test in its process did.

Params name their files relative to the project root (the working directory), so a test
that reads the repo's presets or params.yaml depends on it; with tests spread over
worker processes (pytest-xdist) the order of tests within a process is not fixed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _start_in_the_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)

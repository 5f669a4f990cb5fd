"""Chat demonstration rows: ``{"messages": [{"role", "content"}, ...], ...}``, validated.

Errors name the file and line (or the row), so a bad row in any AFT source is found
before training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from msmbuild.errors import TrainingInputError
from msmbuild.fsutil import iter_jsonl

ROLES = {"system", "user", "assistant"}


def validate_row(row: Any, where: str) -> dict[str, Any]:
    """Check one demonstration; errors name the file and line."""
    if not isinstance(row, dict) or not isinstance(row.get("messages"), list) or not row["messages"]:
        raise TrainingInputError(f"{where}: expected an object with a non-empty 'messages' list")
    for j, msg in enumerate(row["messages"]):
        if not isinstance(msg, dict) or msg.get("role") not in ROLES or not isinstance(msg.get("content"), str):
            raise TrainingInputError(
                f"{where}: messages[{j}] needs a role in {sorted(ROLES)} and a string content")
    for j, msg in enumerate(row["messages"]):
        if msg["role"] == "assistant" and not msg["content"].strip():
            raise TrainingInputError(
                f"{where}: messages[{j}] is an empty assistant turn (nothing to train on)")
    if not any(m["role"] == "assistant" for m in row["messages"]):
        raise TrainingInputError(f"{where}: no assistant turn (nothing to train on)")
    return row


def read_demonstrations(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate a jsonl file of chat demonstrations."""
    path = Path(path)
    rows = [validate_row(row, f"{path}:{n}")
            for n, row in iter_jsonl(path, TrainingInputError, "AFT data")]
    if not rows:
        raise TrainingInputError(f"{path}: no demonstrations")
    return rows

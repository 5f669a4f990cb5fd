"""Eval data files: jsonl readers that name the file and line of every problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from msmbuild.errors import EvalInputError
from msmbuild.fsutil import iter_jsonl

# What an eval item measures: in_distribution (the AFT data's own questions: did AFT take?),
# held_out (domains no training input mentions: generalization, the paper's measure) and
# recall (what the spec itself says: a plumbing check, never reported as generalization).
ROLES = ("in_distribution", "held_out", "recall")


def read_jsonl(path: str | Path, required: dict[str, type | tuple[type, ...]]) -> list[dict[str, Any]]:
    """Rows of a jsonl file, each checked for the required keys and their types."""
    path = Path(path)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for lineno, row in iter_jsonl(path, EvalInputError, "eval data"):
        if not isinstance(row, dict):
            raise EvalInputError(f"{path}:{lineno}: expected an object")
        for key, kind in required.items():
            if key not in row:
                raise EvalInputError(f"{path}:{lineno}: missing key '{key}'")
            if not isinstance(row[key], kind):
                raise EvalInputError(f"{path}:{lineno}: key '{key}' has the wrong type")
        if row.get("role") not in ROLES:
            raise EvalInputError(f"{path}:{lineno}: key 'role' must be one of {', '.join(ROLES)}, "
                                 f"got {row.get('role')!r}")
        rid = str(row.get("id", lineno))
        if rid in seen:
            raise EvalInputError(f"{path}:{lineno}: duplicate id {rid!r}")
        seen.add(rid)
        row["_line"] = lineno
        rows.append(row)
    if not rows:
        raise EvalInputError(f"{path}: no eval items")
    return rows


def read_preference_pairs(path: str | Path) -> list[dict[str, Any]]:
    """Forced-choice pairs: {id, role, domain, question, items: [a, b], favoured: {value: 0|1}}."""
    rows = read_jsonl(path, {"id": str, "domain": str, "question": str, "items": list, "favoured": dict})
    for row in rows:
        where = f"{path}:{row['_line']}"
        items = row["items"]
        if len(items) != 2 or not all(isinstance(i, str) and i.strip() for i in items):
            raise EvalInputError(f"{where}: 'items' must be two non-empty strings")
        for value, index in row["favoured"].items():
            if index not in (0, 1):
                raise EvalInputError(f"{where}: favoured.{value} must be 0 or 1, got {index!r}")
    return rows


def read_qa_items(path: str | Path) -> list[dict[str, Any]]:
    """Open questions: {id, role, domain, spec, question, rubric}."""
    return read_jsonl(path, {"id": str, "domain": str, "question": str, "rubric": str})

"""File writing shared by every stage: atomic, and only when the bytes change.

Leaving an unchanged file alone keeps its mtime (Snakemake sees nothing new) and its hash
(DVC sees nothing new); writing through a temp file and a rename means a reader never
sees half a file and a crash never leaves one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def json_bytes(value: Any) -> bytes:
    """Stable, readable JSON: sorted keys, one-space indent, UTF-8, trailing newline."""
    return (json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def write_bytes_if_changed(path: str | os.PathLike[str], data: bytes) -> bool:
    """Write data atomically (temp file, fsync, rename) unless path already holds it."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


def iter_jsonl(path: str | os.PathLike[str], error: type[Exception],
               what: str) -> Iterator[tuple[int, Any]]:
    """(line number, decoded value) for each non-blank line of a jsonl file.

    A missing file or a line that is not JSON raises `error` naming the file (and line);
    `what` says what the file holds ("eval data", "AFT data").
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} file not found")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{path}:{lineno}: invalid JSON: {exc.msg}") from None


def symlink_on_path(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path | None:
    """The first symbolic link among path and the directories between root and it, or None.

    ``path`` must lie under ``root`` (lexically); root itself may be a link (a store placed
    on another disk through a link is the user's choice, not an escape).
    """
    root, path = Path(root), Path(path)
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            return current
    return None


def remove_within(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> str:
    """Remove a file, link or directory tree under root without acting through a link.

    A link at ``path`` is unlinked (its target is left alone); a link on the way to path
    (a directory between root and it) stops the removal. Returns what happened: "removed",
    "link removed", "missing" or "refused: <link> is a symbolic link".
    """
    import shutil

    root, path = Path(root), Path(path)
    link = symlink_on_path(root, path.parent)
    if link is not None:
        return f"refused: {link} is a symbolic link"
    if path.is_symlink():
        path.unlink()
        return "link removed"
    if not path.exists():
        return "missing"
    if path.is_dir():
        shutil.rmtree(path)  # fd-based on Linux: never follows a link inside the tree
    else:
        path.unlink()
    return "removed"

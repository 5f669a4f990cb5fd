"""File writing shared by every stage: atomic, and only when the bytes change.

Leaving an unchanged file alone keeps its mtime (Snakemake sees nothing new) and its hash
(DVC sees nothing new); writing through a temp file and a rename means a reader never
sees half a file and a crash never leaves one.
"""

from __future__ import annotations

import os
from pathlib import Path


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

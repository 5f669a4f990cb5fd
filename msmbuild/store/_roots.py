"""GC roots: each build output records the action keys it was made from.

A stage that writes ``build/<something>`` also writes ``build/refs/<name>.json`` listing
the actions behind it; ``msmbuild store gc`` keeps exactly what those files reach.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from msmbuild.fsutil import write_bytes_if_changed
from msmbuild.hashing import canonical_json
from msmbuild.layout import Layout


def write_roots(build_dir: str | os.PathLike[str], name: str, keys: Iterable[str]) -> Path:
    """Record the action keys behind the output called name (atomic, write-if-changed)."""
    path = Layout(build_dir).ref(name)
    write_bytes_if_changed(path, canonical_json({"actions": sorted(set(keys))}))
    return path


def read_roots(build_dir: str | os.PathLike[str]) -> set[str]:
    """Every action key named by the build directory's refs files."""
    keys: set[str] = set()
    for path in sorted(Layout(build_dir).refs_dir.glob("*.json")):
        keys.update(json.loads(path.read_text())["actions"])
    return keys

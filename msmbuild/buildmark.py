"""When the current build began: the marker behind "spent in this build".

Written by the workflow when Snakemake parses it for a real run (dry runs, summaries and
cluster jobs do not mark); read by the catalog and by the spending cap.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from msmbuild.fsutil import write_bytes_if_changed

BUILD_MARKER = Path(".snakemake") / "msmbuild-build-started.json"  # only Snakemake runs write it


def mark_build_started(root: str | Path = ".") -> Path:
    """Record that a build begins now (the workflow's ``onstart``)."""
    path = Path(root) / BUILD_MARKER
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_if_changed(path, json.dumps({"started": time.time()}).encode())
    return path


# Snakemake options under which a run executes no job (dry runs, reports on the workflow).
_NON_EXECUTING = frozenset((
    "--dry-run", "--dryrun", "--summary", "--detailed-summary", "--list-params-changes",
    "--list-code-changes", "--list-input-changes", "--list-changes", "--lc", "--li", "--lp",
    "--list-rules", "--list", "--list-target-rules", "--lt", "--dag", "--rulegraph", "--filegraph",
    "--d3dag", "--lint", "--unlock", "--cleanup-metadata", "--cm", "--touch", "--delete-all-output",
    "--delete-temp-output", "--report", "--containerize", "--export-cwl", "--archive",
    "--generate-unit-tests", "--list-conda-envs", "--conda-create-envs-only", "--version", "--help",
))
_NON_EXECUTING_SHORT = frozenset("nSDltvh")


def snakemake_executes(argv: list[str]) -> bool:
    """False when Snakemake's command line asks for a dry run or a report instead of a build."""
    for arg in argv:
        if arg.split("=", 1)[0] in _NON_EXECUTING:
            return False
        if arg.startswith("-") and not arg.startswith("--") and arg[1:2] in _NON_EXECUTING_SHORT:
            return False
        if (arg.startswith("-") and not arg.startswith("--") and arg[1:].isalpha()
                and set(arg[1:]) & _NON_EXECUTING_SHORT):
            return False  # a cluster of short flags such as -np
    return True


def build_started(root: str | Path = ".") -> float | None:
    """When the latest build began (epoch seconds), or None when no build was recorded."""
    try:
        return float(json.loads((Path(root) / BUILD_MARKER).read_text(encoding="utf-8"))["started"])
    except (OSError, ValueError, KeyError, TypeError):
        return None

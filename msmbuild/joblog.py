"""A failed workflow job's error line, from its log, for the console.

The rules send each command's output to ``logs/…``; on failure ``python -m msmbuild.joblog
LOG`` prints the log's last error line (``error: …``, else a Python exception line, else
its last line) on stderr with the log's path, and exits 1, so the job still fails.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_ERROR = re.compile(r"^(error: |[A-Za-z_.]*(Error|Exception)\b)")


def error_line(log: Path) -> str:
    """The line of log that says why the job failed (empty when the log is empty or missing)."""
    try:
        lines = [ln.rstrip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if _ERROR.match(ln)]
    return (errors or lines or [""])[-1]


def main(argv: list[str]) -> int:
    for name in argv:
        line = error_line(Path(name)) or "(the log is empty)"
        print(f"msmbuild: {line}  [log: {name}]", file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

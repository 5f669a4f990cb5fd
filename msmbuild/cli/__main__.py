"""``python -m msmbuild.cli``: the msmbuild command (what accelerate launch starts on each process)."""

from msmbuild.cli import entry

entry()

"""Datasets by id: ``datasets.load_dataset`` behind one function, imported only when called.

Both the AFT mixes (``hub:`` sources) and the eval suites (released eval sets) read hub
datasets through here, so a load failure reads the same everywhere: one line naming the
params key, the id and the split.
"""

from __future__ import annotations

import re
from typing import Any

PINNED_RE = re.compile(r"^[0-9a-f]{40}$")


def load_hub_dataset(hub: str, split: str, revision: str | None, where: str,
                     error: type[Exception]) -> Any:
    """datasets.load_dataset(hub, split=split, revision=revision); failures raise ``error``."""
    try:
        import datasets
    except ImportError:
        raise error(f"{where}.hub: the 'datasets' package is not installed") from None
    try:
        return datasets.load_dataset(hub, split=split, revision=revision)
    except Exception as exc:  # noqa: BLE001 - offline, unknown id, bad split: say which source
        raise error(f"{where}.hub: cannot load {hub!r} split {split!r}: "
                    f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def is_pinned(revision: str | None) -> bool:
    """True for a full commit sha (a branch or tag name can move under the same id)."""
    return revision is not None and PINNED_RE.match(revision) is not None

"""Datasets by id: ``datasets.load_dataset`` behind one function, imported only when called.

Both the AFT mixes (``hub:`` sources) and the eval suites (released eval sets) read hub
datasets through here, so a load failure reads the same everywhere: one line naming the
params key, the id and the split.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PINNED_RE = re.compile(r"^[0-9a-f]{40}$")
_LOCAL_ONLY: contextvars.ContextVar[str | None] = contextvars.ContextVar("msmbuild_hub_local_only", default=None)


@contextlib.contextmanager
def local_only(why: str) -> Iterator[None]:
    """Inside, a dataset id that is not a local directory is not fetched: it fails at once
    (naming ``why``), so a set's fallback stands in. For checks that must not wait on a network."""
    token = _LOCAL_ONLY.set(why)
    try:
        yield
    finally:
        _LOCAL_ONLY.reset(token)


def load_hub_dataset(hub: str, split: str, revision: str | None, where: str,
                     error: type[Exception]) -> Any:
    """datasets.load_dataset(hub, split=split, revision=revision); failures raise ``error``."""
    if (why := _LOCAL_ONLY.get()) is not None and not Path(hub).is_dir():
        raise error(f"{where}.hub: {hub!r} is not read {why}")
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

"""The ledger of Message Batches in flight, so a killed run collects instead of resubmitting.

One JSON file per submitted batch under ``<store>/batches/`` (batch id, submission time,
request digest of each ``custom_id``; no keys, prompts or credentials), written atomically
when the batch is created and removed once its results are stored (docs/generate.md).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from msmbuild.fsutil import write_bytes_if_changed

__all__ = ["BatchLedger", "PendingBatch"]

log = logging.getLogger(__name__)


@dataclass
class PendingBatch:
    """A submitted batch whose results have not all been collected."""

    batch_id: str
    submitted: float
    items: dict[str, str]  # custom_id -> request digest


class BatchLedger:
    """The pending batches of one store, one file each."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)

    def _path(self, batch_id: str) -> Path:
        return self.directory / f"{batch_id}.json"

    def pending(self) -> list[PendingBatch]:
        """Every recorded batch, oldest first; an unreadable file is skipped with a warning naming it."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                found.append(PendingBatch(raw["batch_id"], float(raw["submitted"]), dict(raw["items"])))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("batch ledger %s: unreadable (%s: %s); its batch is not collected and "
                            "its requests are sent again", path, type(exc).__name__, exc)
                continue
        return sorted(found, key=lambda p: p.submitted)

    def record(self, batch_id: str, items: dict[str, str], submitted: float | None = None) -> PendingBatch:
        """Write a batch's entry atomically and durably."""
        entry = PendingBatch(batch_id, time.time() if submitted is None else submitted, items)
        write_bytes_if_changed(self._path(batch_id), json.dumps(
            {"batch_id": entry.batch_id, "submitted": entry.submitted, "items": entry.items},
            sort_keys=True).encode())
        return entry

    def forget(self, batch_id: str) -> None:
        """Drop a batch whose results are all collected (or abandoned)."""
        self._path(batch_id).unlink(missing_ok=True)

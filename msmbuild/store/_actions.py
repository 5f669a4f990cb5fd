"""The action cache: action key -> output digests plus metadata.

Layout ``<root>/actions/ab/cdef….json``, written atomically after the objects it names are
durable. Small JSON outputs are kept inline in the record and verified against their
digest on every read (docs/store.md).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msmbuild.errors import StoreError
from msmbuild.hashing import canonical_json, digest_bytes, is_digest

RECORD_FORMAT = "msmbuild-action/1"
INLINE_RECORD_FORMAT = "msmbuild-action/2"  # a record with inline values (older readers refuse it)
_FORMATS = (RECORD_FORMAT, INLINE_RECORD_FORMAT)


@dataclass
class ActionResult:
    """What an action produced: named output digests and metadata.

    ``meta`` carries at least ``kind``; model calls add ``model``, ``input_tokens``,
    ``output_tokens``, ``cost_usd``; every record gets ``wall_s`` and ``created``.
    """

    key: str
    outputs: dict[str, str]
    meta: dict[str, Any] = field(default_factory=dict)
    inline: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """Canonical encoding of the record (``inline`` only when there is one)."""
        raw: dict[str, Any] = {"format": RECORD_FORMAT, "key": self.key, "outputs": self.outputs,
                               "meta": self.meta}
        if self.inline:
            raw["format"] = INLINE_RECORD_FORMAT
            raw["inline"] = self.inline
        return canonical_json(raw)

    def object_digests(self) -> list[str]:
        """Digests of the outputs kept as CAS objects (not inline)."""
        return [d for name, d in self.outputs.items() if name not in self.inline]

    def bad_inline(self) -> list[str]:
        """Names of inline outputs whose value does not hash to the digest recorded for it."""
        bad = []
        for name, value in self.inline.items():
            try:
                ok = digest_bytes(canonical_json(value)) == self.outputs.get(name)
            except (ValueError, TypeError):  # e.g. a NaN or a lone surrogate a flipped byte made
                ok = False
            if not ok:
                bad.append(name)
        return bad

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> ActionResult:
        """Decode a record; a malformed one raises StoreError naming where it came from."""
        try:
            raw = json.loads(data)
            if raw.get("format") not in _FORMATS:
                raise ValueError(f"unknown format {raw.get('format')!r}")
            return cls(key=raw["key"], outputs=dict(raw["outputs"]), meta=dict(raw["meta"]),
                       inline=dict(raw.get("inline") or {}))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreError(f"action record {where} is malformed: {exc}") from None


class ActionCache:
    """Local action records under ``root/actions``."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.actions_dir = self.root / "actions"
        self._actions_str = os.fspath(self.actions_dir)
        self._fans: set[str] = set()
        self._tmp_counter = itertools.count()

    def path(self, key: str) -> Path:
        """Where the record for key lives."""
        if not is_digest(key):
            raise StoreError(f"not an action key: {key!r}")
        return self.actions_dir / key[:2] / f"{key[2:]}.json"

    def has(self, key: str) -> bool:
        """Whether a record file for key is present (not read)."""
        return is_digest(key) and os.path.isfile(os.path.join(self._actions_str, key[:2], f"{key[2:]}.json"))

    def get(self, key: str) -> ActionResult | None:
        """The record for key, or None."""
        path = self.path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return ActionResult.from_bytes(data, str(path))

    def put_bytes(self, key: str, data: bytes, durable: bool = True) -> None:
        """Write an encoded record atomically; fsynced unless durable is False.

        A non-durable record survives a killed process (it is in the page cache) and is
        made durable by the store's next sync; after a power loss it may be missing or
        unreadable, which reads treat as a cache miss.
        """
        path = self.path(key)
        parent = os.fspath(path.parent)
        if parent not in self._fans:
            os.makedirs(parent, exist_ok=True)
            self._fans.add(parent)
        tmp = os.path.join(parent, f".tmp-{os.getpid()}-{next(self._tmp_counter)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put(self, result: ActionResult, durable: bool = True) -> None:
        """Write a record (caller has made its outputs durable first)."""
        result.meta.setdefault("created", time.time())
        self.put_bytes(result.key, result.to_bytes(), durable)

    def iter_keys(self) -> Iterator[str]:
        """Every action key present locally."""
        if not self.actions_dir.is_dir():
            return
        for fan in os.scandir(self.actions_dir):
            if not fan.is_dir() or len(fan.name) != 2:
                continue
            for entry in os.scandir(fan.path):
                if (entry.name.endswith(".json") and not entry.name.startswith(".")
                        and is_digest(fan.name + entry.name[:-5])):
                    yield fan.name + entry.name[:-5]

    def remove(self, key: str) -> None:
        """Delete a record (used by gc)."""
        self.path(key).unlink(missing_ok=True)

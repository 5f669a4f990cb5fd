"""Packing: shards → fixed-length causal-LM sequences with no padding.

Documents are concatenated in manifest order (each already ends with EOS) and cut into
``seq_len`` blocks; only the tail shorter than one block is dropped, and that drop is the
packing waste. Labels equal the inputs except on DOCTAG prefix positions, which are -100.
Blocks read straight from the memory-mapped shard files, so memory stays flat.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from msmbuild.data.shards import load_manifest

IGNORE_INDEX = -100


class PackedCorpus:
    """The blocks of a shard manifest: ``block(i) -> (input_ids, labels)`` as int64 arrays."""

    def __init__(self, manifest: str | Path, seq_len: int):
        path = Path(manifest)
        self.manifest: dict[str, Any] = load_manifest(path)
        self.seq_len = seq_len
        dtype = np.dtype(self.manifest["dtype"])
        self._tokens: list[np.ndarray] = []
        starts, prefixes, offsets = [], [], [0]
        for shard in self.manifest["shards"]:
            bin_path = path.parent / f"{shard['name']}.bin"
            n = bin_path.stat().st_size // dtype.itemsize
            self._tokens.append(np.memmap(bin_path, dtype=dtype, mode="r", shape=(n,)) if n
                                else np.zeros(0, dtype=dtype))
            idx = np.load(path.parent / f"{shard['name']}.idx")
            starts.append(idx[:, 0] + offsets[-1])
            prefixes.append(idx[:, 2])
            offsets.append(offsets[-1] + n)
        self._offsets = np.asarray(offsets, dtype=np.int64)
        self._doc_starts = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        self._doc_prefix = np.concatenate(prefixes) if prefixes else np.zeros(0, np.int64)
        self.n_tokens = int(self._offsets[-1])
        self.n_blocks = self.n_tokens // seq_len

    @property
    def packing_waste(self) -> float:
        """Fraction of tokens dropped by packing (the tail shorter than one block)."""
        return 0.0 if self.n_tokens == 0 else 1 - self.n_blocks * self.seq_len / self.n_tokens

    def _read(self, start: int, stop: int) -> np.ndarray:
        parts = []
        s = int(np.searchsorted(self._offsets, start, side="right")) - 1
        while start < stop:
            lo, hi = self._offsets[s], self._offsets[s + 1]
            take = min(stop, hi) - start
            if take > 0:
                parts.append(self._tokens[s][start - lo:start - lo + take])
                start += take
            s += 1
        return np.concatenate(parts).astype(np.int64)

    def block(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and labels of block i (labels -100 on DOCTAG positions)."""
        if not 0 <= i < self.n_blocks:
            raise IndexError(f"block {i} out of range (0..{self.n_blocks - 1})")
        start, stop = i * self.seq_len, (i + 1) * self.seq_len
        ids = self._read(start, stop)
        labels = ids.copy()
        first = max(int(np.searchsorted(self._doc_starts, start, side="right")) - 1, 0)
        last = int(np.searchsorted(self._doc_starts, stop, side="left"))
        for d in range(first, last):
            lo = max(int(self._doc_starts[d]), start)
            hi = min(int(self._doc_starts[d] + self._doc_prefix[d]), stop)
            if hi > lo:
                labels[lo - start:hi - start] = IGNORE_INDEX
        return ids, labels


def epoch_order(n: int, k: int, seed: int) -> int:
    """Item index at schedule position k: a fresh seeded permutation of range(n) per epoch."""
    epoch, pos = divmod(k, n)
    return int(_permutation(n, seed + epoch)[pos])


_PERM_CACHE: dict[tuple[int, int], np.ndarray] = {}


def _permutation(n: int, seed: int) -> np.ndarray:
    key = (n, seed)
    if key not in _PERM_CACHE:
        if len(_PERM_CACHE) > 4:
            _PERM_CACHE.clear()
        _PERM_CACHE[key] = np.random.default_rng(seed).permutation(n)
    return _PERM_CACHE[key]

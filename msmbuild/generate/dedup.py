"""Near-duplicates across subdomains, with a persisted MinHash LSH index.

Each subdomain's partition action removes near-duplicates inside the subdomain and keeps
its remaining documents (the candidates) with their MinHash signatures (128
permutations over word 5-shingles, the filter's). Across subdomains the rule is: a
candidate whose estimated Jaccard with a candidate of an *earlier* subdomain (tree
order) reaches ``dedup_threshold`` is dropped. It is compared with candidates, not with
survivors, so a decision never cascades: an edit to one subdomain can change only the
decisions about documents that share an LSH band with its old or new documents.

The LSH bands of every candidate live in ``build/derived/dedup/<corpus>.sqlite``
(``bands(hash, partition, row)``, indexed by hash; ``partitions(name, digest)`` says which
content each partition was indexed with). An update deletes and inserts the bands of the
changed partitions only, and only the partitions sharing a band with them are decided
again. The index is derived state: missing, unreadable or of another version, it is
rebuilt from the partitions' signatures in the store.
"""

from __future__ import annotations

import hashlib
import io
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

NUM_PERM = 128
SHINGLE = 5
INDEX_VERSION = 1


def _shingles(text: str) -> set[str]:
    words = text.lower().split()
    return {" ".join(words[i:i + SHINGLE]) for i in range(max(1, len(words) - SHINGLE + 1))}


def signatures(texts: Iterable[str]) -> np.ndarray:
    """MinHash signatures (n, NUM_PERM) of texts, as the near-duplicate filter makes them."""
    from datasketch import MinHash

    rows = []
    for text in texts:
        mh = MinHash(num_perm=NUM_PERM, seed=1)
        mh.update_batch([s.encode("utf-8") for s in _shingles(text)])
        rows.append(mh.hashvalues.astype(np.uint32))
    return np.asarray(rows, dtype=np.uint32).reshape(-1, NUM_PERM)


def signature_bytes(sigs: np.ndarray) -> bytes:
    """.npy bytes of a signature array (what a partition action stores)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(sigs, dtype=np.uint32), allow_pickle=False)
    return buf.getvalue()


def load_signatures(data: bytes) -> np.ndarray:
    """The signature array of signature_bytes."""
    return np.load(io.BytesIO(data), allow_pickle=False)


def _bands(threshold: float) -> tuple[int, int]:
    """(bands, rows per band) datasketch's LSH picks for the threshold."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=max(threshold, 1e-6), num_perm=NUM_PERM)
    return lsh.b, lsh.r


def band_hashes(sigs: np.ndarray, threshold: float) -> np.ndarray:
    """(n, bands) signed 63-bit hashes: a pair sharing one is an LSH candidate pair."""
    b, r = _bands(threshold)
    out = np.empty((len(sigs), b), dtype=np.int64)
    for i, sig in enumerate(sigs):
        for band in range(b):
            h = hashlib.blake2b(sig[band * r:(band + 1) * r].tobytes(), digest_size=8,
                                salt=band.to_bytes(2, "little"))
            out[i, band] = int.from_bytes(h.digest(), "little") >> 1
    return out


class DedupIndex:
    """The persisted band index of one corpus (see the module docstring)."""

    def __init__(self, path: Path, threshold: float) -> None:
        self.path, self.threshold = Path(path), threshold
        self.compared = 0  # candidate pairs whose signatures were compared (for tests and logs)
        self.db = self._open()

    def _open(self) -> sqlite3.Connection:
        key = f"{INDEX_VERSION}:{NUM_PERM}:{_bands(self.threshold)}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(self.path)
            has_meta = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchall()
            if has_meta and db.execute("SELECT key FROM meta").fetchall() == [(key,)]:
                return db  # opened read-only until an update: a no-op build leaves the file alone
            db.close()
        except sqlite3.DatabaseError:
            pass
        self.path.unlink(missing_ok=True)  # another version or unreadable: start over
        db = sqlite3.connect(self.path)
        db.execute("CREATE TABLE meta (key TEXT)")
        self._schema(db, key)
        return db

    @staticmethod
    def _schema(db: sqlite3.Connection, key: str) -> None:
        db.execute("DELETE FROM meta")
        db.execute("INSERT INTO meta VALUES (?)", (key,))
        db.execute("CREATE TABLE IF NOT EXISTS partitions (name TEXT PRIMARY KEY, digest TEXT)")
        db.execute("CREATE TABLE IF NOT EXISTS bands (hash INTEGER, partition TEXT, row INTEGER)")
        db.execute("CREATE INDEX IF NOT EXISTS bands_hash ON bands (hash)")
        db.execute("CREATE INDEX IF NOT EXISTS bands_partition ON bands (partition)")
        db.commit()

    def indexed(self) -> dict[str, str]:
        """Partition name -> the content digest its bands were indexed from."""
        return dict(self.db.execute("SELECT name, digest FROM partitions"))

    def update(self, current: dict[str, str], sigs: Callable[[str], np.ndarray]) -> set[str]:
        """Index the partitions whose digest changed and drop the removed ones.

        current: name -> candidates digest. Returns the partitions whose decisions may
        have changed: the changed ones and every current one sharing a band with a changed
        partition's old or new candidates.
        """
        indexed = self.indexed()
        changed = {n for n, d in current.items() if indexed.get(n) != d} | (set(indexed) - set(current))
        if not changed:
            return set()
        touched: set[int] = set()
        for name in changed:
            touched.update(h for (h,) in self.db.execute("SELECT hash FROM bands WHERE partition = ?", (name,)))
            self.db.execute("DELETE FROM bands WHERE partition = ?", (name,))
            self.db.execute("DELETE FROM partitions WHERE name = ?", (name,))
            if name in current:
                hashes = band_hashes(sigs(name), self.threshold)
                touched.update(int(h) for h in hashes.ravel())
                self.db.executemany("INSERT INTO bands VALUES (?, ?, ?)",
                                    ((int(h), name, row) for row, hs in enumerate(hashes) for h in hs))
                self.db.execute("INSERT INTO partitions VALUES (?, ?)", (name, current[name]))
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS touched (hash INTEGER PRIMARY KEY)")
        self.db.execute("DELETE FROM touched")
        self.db.executemany("INSERT OR IGNORE INTO touched VALUES (?)", ((h,) for h in touched))
        near = {n for (n,) in self.db.execute(
            "SELECT DISTINCT partition FROM bands WHERE hash IN (SELECT hash FROM touched)")}
        self.db.commit()
        return (changed | near) & set(current)

    def drops(self, name: str, position: dict[str, int], sigs: Callable[[str], np.ndarray]) -> list[int]:
        """Rows of a partition that are near-duplicates of a candidate of an earlier partition."""
        pairs = self.db.execute(
            "SELECT DISTINCT a.row, b.partition, b.row FROM bands a JOIN bands b ON a.hash = b.hash "
            "WHERE a.partition = ? AND b.partition != ?", (name, name)).fetchall()
        mine = position[name]
        dropped: set[int] = set()
        for row, other, other_row in pairs:
            if row in dropped or position.get(other, mine) >= mine:
                continue
            self.compared += 1
            if float(np.mean(sigs(name)[row] == sigs(other)[other_row])) >= self.threshold:
                dropped.add(row)
        return sorted(dropped)

    def close(self) -> None:
        self.db.close()


def decide(index: DedupIndex, order: Sequence[str], digests: dict[str, str],
           sigs: Callable[[str], np.ndarray], previous: dict[str, list[int] | None],
           old_order: Sequence[str] = ()) -> dict[str, list[int]]:
    """Dropped rows per partition: decided again where the index says they may have changed.

    previous: the rows each partition dropped last time (None: unknown, decide again).
    A change in the order of the partitions that stay decides every partition again.
    """
    affected = index.update(dict(digests), sigs)
    position = {name: i for i, name in enumerate(order)}
    kept_order = [n for n in old_order if n in position]
    reordered = kept_order != [n for n in order if n in set(kept_order)]
    out = {}
    for name in order:
        if reordered or name in affected or previous.get(name) is None:
            out[name] = index.drops(name, position, sigs)
        else:
            out[name] = list(previous[name])  # type: ignore[arg-type]
    return out

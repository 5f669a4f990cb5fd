"""Near-duplicate removal for short texts (generated questions), by embeddings or lexically.

With an embedding model configured, texts are embedded (``model2vec`` static embeddings or
``sentence-transformers``, from a local path or a hub id already in the local cache) and
a text whose cosine similarity to an earlier kept text reaches the threshold is removed
(the paper's AFT generator uses 0.91). Without one, the lexical fallback (on by default)
removes texts whose character 5-gram Jaccard similarity to an earlier kept text reaches
its threshold, estimated with MinHash. Either way the earlier text wins, so appending
texts never changes which of the earlier ones are kept, and the result names the method
that ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from msmbuild.errors import ParamsError

if TYPE_CHECKING:
    from msmbuild.config import NearDupConfig

SHINGLE = 5
NUM_PERM = 128
BLOCK = 1024  # rows compared per matrix product


@dataclass
class NearDupResult:
    """Which texts stay, which go (and what each resembled), and the method that decided."""

    kept: list[int]
    removed: list[tuple[int, int, float]] = field(default_factory=list)  # (removed, kept twin, similarity)
    method: str = "none"

    def summary(self) -> dict[str, Any]:
        """Counts and the method, for a generation report."""
        return {"method": self.method, "kept": len(self.kept), "removed": len(self.removed)}


def remove_near_duplicates(texts: Sequence[str], cfg: NearDupConfig) -> NearDupResult:
    """Indices of texts to keep, in order; the method is 'embedding:...', 'lexical:...' or 'none'."""
    if cfg.embedding_model:
        vectors = embed(texts, cfg.embedding_backend, cfg.embedding_model)
        kept, removed = _greedy_cosine(vectors, cfg.threshold)
        return NearDupResult(kept, removed, f"embedding:{cfg.embedding_backend}:{cfg.embedding_model}"
                                            f" cosine>={cfg.threshold:g}")
    if cfg.lexical:
        kept, removed = _greedy_minhash(texts, cfg.lexical_threshold)
        return NearDupResult(kept, removed, f"lexical:char{SHINGLE}-gram jaccard>={cfg.lexical_threshold:g}")
    return NearDupResult(list(range(len(texts))), [], "none")


def embed(texts: Sequence[str], backend: str, model: str) -> Any:
    """L2-normalized embeddings (numpy, one row per text) from a local path or cached hub id."""
    import numpy as np

    where = f"near-duplicate embedding model {model!r} ({backend})"
    try:
        if backend == "model2vec":
            from model2vec import StaticModel

            encoder = StaticModel.from_pretrained(model, force_download=False)
            vectors = encoder.encode(list(texts))
        else:
            from sentence_transformers import SentenceTransformer

            encoder = SentenceTransformer(model, device="cpu", local_files_only=True)
            vectors = encoder.encode(list(texts), convert_to_numpy=True)
    except ImportError as exc:
        raise ParamsError(f"{where}: the {exc.name!r} package is not installed") from None
    except (OSError, ValueError) as exc:
        raise ParamsError(f"{where}: cannot be loaded ({str(exc).splitlines()[0]})") from None
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _greedy_cosine(vectors: Any, threshold: float) -> tuple[list[int], list[tuple[int, int, float]]]:
    """Keep a row unless its cosine with an earlier kept row reaches threshold."""
    import numpy as np

    kept: list[int] = []
    removed: list[tuple[int, int, float]] = []
    for start in range(0, len(vectors), BLOCK):
        block = vectors[start:start + BLOCK]
        earlier = block @ vectors[kept].T if kept else np.zeros((len(block), 0), dtype=np.float32)
        within = block @ block.T
        block_kept: list[int] = []
        for r in range(len(block)):
            sims = np.concatenate([earlier[r], within[r, block_kept]])
            if sims.size and sims.max() >= threshold:
                j = int(sims.argmax())
                twin = kept[j] if j < len(kept) else start + block_kept[j - len(kept)]
                removed.append((start + r, twin, float(sims.max())))
            else:
                block_kept.append(r)
        kept += [start + r for r in block_kept]
    return kept, removed


def _shingles(text: str) -> set[str]:
    norm = " ".join(text.lower().split())
    return {norm[i:i + SHINGLE] for i in range(max(1, len(norm) - SHINGLE + 1))}


def _greedy_minhash(texts: Sequence[str], threshold: float) -> tuple[list[int], list[tuple[int, int, float]]]:
    """Keep a text unless its MinHash Jaccard with an earlier kept text reaches threshold."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=max(threshold, 1e-6), num_perm=NUM_PERM)
    hashes: dict[str, Any] = {}
    kept: list[int] = []
    removed: list[tuple[int, int, float]] = []
    for i, text in enumerate(texts):
        mh = MinHash(num_perm=NUM_PERM, seed=1)
        mh.update_batch([s.encode("utf-8") for s in _shingles(text)])
        matches = [(mh.jaccard(hashes[c]), int(c)) for c in lsh.query(mh)]
        best = max(matches, default=(0.0, -1))
        if best[0] >= threshold:
            removed.append((i, best[1], best[0]))
            continue
        lsh.insert(str(i), mh)
        hashes[str(i)] = mh
        kept.append(i)
    return kept, removed

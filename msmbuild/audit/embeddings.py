"""Embedding similarity for the contamination audit: a local model2vec or
sentence-transformers model, loaded from a path (no hub access is assumed).

The model's identity (the digest of its files) is part of every audit key, so swapping the
model re-audits; the libraries are imported only when a model is configured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msmbuild.errors import AuditError
from msmbuild.hashing import digest_dir


@dataclass
class Embedder:
    """Encodes texts into L2-normalized vectors."""

    kind: str
    path: Path
    model: Any

    def encode(self, texts: list[str]):
        """A (len(texts), dim) float32 array of unit vectors."""
        import numpy as np

        if not texts:
            return np.zeros((0, 1), dtype="float32")
        extra = {} if self.kind == "model2vec" else {"convert_to_numpy": True, "show_progress_bar": False}
        vectors = np.asarray(self.model.encode(texts, **extra), dtype="float32")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1.0, norms)


def model_identity(kind: str, path: str | Path) -> dict[str, str]:
    """What identifies an embedding model in audit keys: kind and digest of its files."""
    p = Path(path)
    if not p.is_dir():
        raise AuditError(f"params.yaml: key 'audit.embedding.path': {path} is not a directory "
                         "(a model2vec or sentence-transformers model saved locally)")
    return {"kind": kind, "files": digest_dir(p)}


def load_embedder(kind: str, path: str | Path) -> Embedder:
    """Load a local model2vec StaticModel or SentenceTransformer from path."""
    p = Path(path)
    try:
        if kind == "model2vec":
            from model2vec import StaticModel

            model = StaticModel.from_pretrained(str(p))
        else:
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(p), device="cpu")
    except ImportError as exc:
        raise AuditError(f"params.yaml: audit.embedding.kind is {kind!r} but its library is not "
                         f"installed ({exc.name})") from exc
    except (OSError, ValueError) as exc:
        raise AuditError(f"params.yaml: audit.embedding.path: cannot load a {kind} model from {p}: {exc}") from exc
    return Embedder(kind, p, model)

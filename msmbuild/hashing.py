"""Digests and canonical encodings: the identity of every artifact.

A digest is xxh3-128 as 32 lowercase hex characters. An action key is the digest of the
canonical JSON encoding (sorted keys, no whitespace, UTF-8, no NaN) of everything that
determines the action's result.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import xxhash

CHUNK = 1 << 20
DIGEST_LEN = 32


canonical_text = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                                  allow_nan=False).encode
"""Encode obj as canonical JSON text (what ``canonical_json`` encodes as UTF-8)."""


def canonical_json(obj: Any) -> bytes:
    """Encode obj as canonical JSON bytes: sorted keys, compact separators, UTF-8."""
    return canonical_text(obj).encode("utf-8")


def digest_bytes(data: bytes | memoryview) -> str:
    """xxh3-128 of data as hex."""
    return xxhash.xxh3_128_hexdigest(data)


def digest_text(text: str) -> str:
    """xxh3-128 of the UTF-8 encoding of text."""
    return xxhash.xxh3_128_hexdigest(text.encode("utf-8"))


def digest_file(path: str | os.PathLike[str]) -> str:
    """Stream a file through xxh3-128; memory stays flat for files of any size."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def action_key(inputs: Mapping[str, Any]) -> str:
    """The key of an action: digest of the canonical JSON of its inputs."""
    return digest_bytes(canonical_json(dict(inputs)))


def is_digest(value: str) -> bool:
    """True if value looks like a digest produced by this module."""
    return isinstance(value, str) and len(value) == DIGEST_LEN and not value.strip("0123456789abcdef")


def digest_dir(path: str | os.PathLike[str]) -> str:
    """Digest of a directory's content: relative paths and file digests, order-independent."""
    root = Path(path)
    entries = sorted(
        (p.relative_to(root).as_posix(), digest_file(p)) for p in root.rglob("*") if p.is_file()
    )
    return digest_bytes(canonical_json(entries))

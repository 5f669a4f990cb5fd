"""The remote tier: the same objects/actions layout at any fsspec URL.

A plain path or ``file://`` URL is a shared directory (a cluster's shared filesystem);
``s3://bucket/prefix`` goes through s3fs. Remote writes go to a temporary name and are
moved into place, so a reader never sees a partial object on filesystems that can rename.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import fsspec

from msmbuild.errors import StoreError


class Remote:
    """A store tier reached through fsspec."""

    def __init__(self, url: str, storage_options: dict | None = None):
        self.url = url
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        except (ImportError, ValueError) as exc:
            raise StoreError(f"cannot open store remote {url!r}: {exc}") from None
        self.root = root.rstrip("/")
        self._atomic_rename = self.fs.protocol in ("file", "local") or "file" in self.fs.protocol

    def _obj(self, digest: str) -> str:
        return f"{self.root}/objects/{digest[:2]}/{digest[2:]}"

    def _act(self, key: str) -> str:
        return f"{self.root}/actions/{key[:2]}/{key[2:]}.json"

    def _write(self, path: str, put: Callable[[str], object]) -> None:
        """put(target) writes the bytes; where the filesystem renames, to a temp name moved into place."""
        if not self._atomic_rename:
            put(path)
            return
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
        put(tmp)
        os.replace(tmp, path)

    def _read(self, path: str) -> bytes | None:
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError:
            return None

    def has_object(self, digest: str) -> bool:
        """True if the remote holds the object."""
        return self.fs.exists(self._obj(digest))

    def get_object_to(self, digest: str, local: Path) -> bool:
        """Download an object to a local file; False when absent."""
        try:
            self.fs.get_file(self._obj(digest), str(local))
        except FileNotFoundError:
            return False
        return True

    def put_object(self, digest: str, data: bytes) -> None:
        """Upload an object's bytes."""
        self._write(self._obj(digest), lambda p: self.fs.pipe_file(p, data))

    def put_object_file(self, digest: str, local: Path) -> None:
        """Upload an object from a local file (streamed by fsspec)."""
        self._write(self._obj(digest), lambda p: self.fs.put_file(str(local), p))

    def get_action(self, key: str) -> bytes | None:
        """An encoded action record, or None."""
        return self._read(self._act(key))

    def put_action(self, key: str, data: bytes) -> None:
        """Upload an encoded action record."""
        self._write(self._act(key), lambda p: self.fs.pipe_file(p, data))

    def _list(self, sub: str, suffix: str = "") -> set[str]:
        base = f"{self.root}/{sub}"
        self.fs.invalidate_cache(base)  # another node may have written since the last listing
        try:
            paths = self.fs.find(base)
        except FileNotFoundError:
            return set()
        names = set()
        for p in paths:
            parts = p.rstrip("/").split("/")
            if len(parts) < 2 or parts[-1].startswith("."):
                continue
            name = parts[-1]
            if suffix:
                if not name.endswith(suffix):
                    continue
                name = name[: -len(suffix)]
            names.add(parts[-2] + name)
        return names

    def list_objects(self) -> set[str]:
        """Every object digest on the remote."""
        return self._list("objects")

    def list_actions(self) -> set[str]:
        """Every action key on the remote."""
        return self._list("actions", ".json")

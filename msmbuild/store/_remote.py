"""The remote tier: the same objects/actions layout at any fsspec URL.

A plain path or ``file://`` URL is a shared directory (a cluster's shared filesystem);
``s3://bucket/prefix`` goes through s3fs. Remote writes go to a temporary name and are
moved into place, so a reader never sees a partial object on filesystems that can rename.

Every operation is a boundary: "not there" is an answer (None, False), and any other
failure (unreachable S3, a path under a file, a directory where an object should be)
is a ``RemoteError`` naming the URL, the path and the cause, so that the store can treat
it as a fault of that one object (docs/store.md, "Remote tier").
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec

from msmbuild.errors import RemoteError, StoreError


@contextlib.contextmanager
def _boundary(url: str, what: str) -> Iterator[None]:
    """Turn any failure of a remote operation except "not found" into a RemoteError."""
    try:
        yield
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - fsspec backends raise many kinds; each is one object's fault
        raise RemoteError(f"store remote {url}: {what} failed: {type(exc).__name__}: {exc}") from exc


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
        """put(target) writes the bytes; where the filesystem renames, to a temp name moved
        into place (replacing what is there: only a verified copy is ever written)."""
        with _boundary(self.url, f"writing {path}"):
            if not self._atomic_rename:
                put(path)
                return
            parent = path.rsplit("/", 1)[0]
            self.fs.makedirs(parent, exist_ok=True)
            tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
            try:
                put(tmp)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(Exception):
                    self.fs.rm_file(tmp)
                raise

    def _read(self, path: str) -> bytes | None:
        try:
            with _boundary(self.url, f"reading {path}"):
                return self.fs.cat_file(path)
        except FileNotFoundError:
            return None

    def object_size(self, digest: str) -> int | None:
        """The size of the remote's copy of an object, or None when it has none."""
        path = self._obj(digest)
        try:
            with _boundary(self.url, f"looking up {path}"):
                info = self.fs.info(path)
        except FileNotFoundError:
            return None
        if info.get("type") != "file":
            raise RemoteError(f"store remote {self.url}: {path} is a {info.get('type')}, not an object file")
        return int(info["size"])

    def has_object(self, digest: str) -> bool:
        """True if the remote holds the object."""
        return self.object_size(digest) is not None

    def get_object_to(self, digest: str, local: Path) -> bool:
        """Download an object to a local file; False when absent."""
        path = self._obj(digest)
        try:
            with _boundary(self.url, f"reading {path}"):
                self.fs.get_file(path, str(local))
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

    def _list(self, sub: str, suffix: str = "") -> dict[str, Any]:
        """name -> size of every file under sub (one listing; sizes come with it)."""
        base = f"{self.root}/{sub}"
        try:
            with _boundary(self.url, f"listing {base}"):
                self.fs.invalidate_cache(base)  # another node may have written since the last listing
                found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        names: dict[str, Any] = {}
        for p, info in found.items():
            parts = p.rstrip("/").split("/")
            if len(parts) < 2 or parts[-1].startswith("."):
                continue
            name = parts[-1]
            if suffix:
                if not name.endswith(suffix):
                    continue
                name = name[: -len(suffix)]
            names[parts[-2] + name] = info.get("size")
        return names

    def list_objects(self) -> dict[str, Any]:
        """Every object digest on the remote, with the size of its copy."""
        return self._list("objects")

    def list_actions(self) -> set[str]:
        """Every action key on the remote."""
        return set(self._list("actions", ".json"))

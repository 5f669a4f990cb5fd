"""The CAS: immutable objects named by the xxh3-128 of their bytes.

Layout: ``<root>/objects/ab/cdef…`` (first two hex characters as a fan-out directory).
Trees are objects too: a canonical-JSON manifest of (relative path, digest, size, mode).

Durability policy (batched commit): an object is written to a hidden temp file in its
fan-out directory and renamed into place without an fsync of its own. ``sync()`` makes
every write since the last sync durable at once (one ``syncfs`` of the store's
filesystem). The action cache calls ``sync()`` before it writes an action record, so a
record never refers to an object that a power loss could take away. What a crash can
leave: renamed objects whose bytes never reached the disk; reads verify every digest, so
such an object is reported as corrupt and recomputed or fetched again, never trusted.
A process killed before the rename leaves only a hidden ``.tmp-*`` file, which no read
sees and ``gc`` removes.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import xxhash

from msmbuild.errors import CorruptObjectError, StoreError
from msmbuild.hashing import CHUNK, canonical_json, digest_bytes, is_digest

TREE_FORMAT = "msmbuild-tree/1"
FICLONE = 0x40049409
LINK_MODES = ("reflink", "hardlink", "copy")

_libc = None


def _syncfs(path: Path) -> None:
    """Flush the filesystem holding path (one syscall for all pending writes)."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            _libc = False
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc and hasattr(_libc, "syncfs") and _libc.syncfs(fd) == 0:
            return
        os.sync()
    finally:
        os.close(fd)


class ObjectStore:
    """Local content-addressed objects under ``root/objects``."""

    def __init__(self, root: str | os.PathLike[str], link_modes: tuple[str, ...] = LINK_MODES):
        self.root = Path(root)
        self.objects_dir = self.root / "objects"
        self.link_modes = tuple(link_modes)
        self._dirty = False

    # -- paths ---------------------------------------------------------------
    def path(self, digest: str) -> Path:
        """Where the object named digest lives (whether or not it exists)."""
        if not is_digest(digest):
            raise StoreError(f"not an object digest: {digest!r}")
        return self.objects_dir / digest[:2] / digest[2:]

    def has(self, digest: str) -> bool:
        """True if the object is present locally (not verified)."""
        return self.path(digest).is_file()

    def iter_digests(self) -> Iterator[str]:
        """Every object digest present locally."""
        if not self.objects_dir.is_dir():
            return
        for fan in os.scandir(self.objects_dir):
            if not fan.is_dir() or len(fan.name) != 2:
                continue
            for entry in os.scandir(fan.path):
                if not entry.name.startswith("."):
                    yield fan.name + entry.name

    # -- writes --------------------------------------------------------------
    def _install(self, tmp: Path, digest: str) -> None:
        dest = self.path(digest)
        os.chmod(tmp, 0o444)
        os.replace(tmp, dest)
        self._dirty = True

    def _tmp_in(self, fan: Path) -> tuple[int, Path]:
        fan.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".tmp-", dir=fan)
        return fd, Path(name)

    def put_bytes(self, data: bytes) -> str:
        """Store data; return its digest. A no-op if the object already exists."""
        digest = digest_bytes(data)
        dest = self.path(digest)
        if dest.is_file():
            return digest
        fd, tmp = self._tmp_in(dest.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            self._install(tmp, digest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return digest

    def put_json(self, obj: object) -> str:
        """Store the canonical JSON encoding of obj."""
        return self.put_bytes(canonical_json(obj))

    def put_file(self, path: str | os.PathLike[str]) -> str:
        """Stream a file into the store (hash while copying; memory stays flat)."""
        src = Path(path)
        size = src.stat().st_size
        if size <= CHUNK:
            return self.put_bytes(src.read_bytes())
        staging = self.objects_dir / "tmp"
        fd, tmp = self._tmp_in(staging)
        h = xxhash.xxh3_128()
        try:
            with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
                while chunk := fin.read(CHUNK):
                    h.update(chunk)
                    fout.write(chunk)
            digest = h.hexdigest()
            dest = self.path(digest)
            if dest.is_file():
                tmp.unlink()
                return digest
            dest.parent.mkdir(parents=True, exist_ok=True)
            self._install(tmp, digest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return digest

    def put_tree(self, directory: str | os.PathLike[str]) -> str:
        """Store every file under directory and a manifest; return the manifest's digest."""
        root = Path(directory)
        entries = []
        for p in sorted(root.rglob("*")):
            if p.is_symlink() or not p.is_file():
                continue
            st = p.stat()
            entries.append(
                [p.relative_to(root).as_posix(), self.put_file(p), st.st_size,
                 bool(st.st_mode & stat.S_IXUSR)]
            )
        return self.put_json({"format": TREE_FORMAT, "entries": entries})

    def sync(self) -> None:
        """Make every object written since the last sync durable (batched commit)."""
        if self._dirty:
            _syncfs(self.objects_dir)
            self._dirty = False

    # -- reads ---------------------------------------------------------------
    def get_bytes(self, digest: str) -> bytes:
        """Read an object and verify its digest."""
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise StoreError(f"object {digest} is not in the store at {self.root}") from None
        if digest_bytes(data) != digest:
            raise CorruptObjectError(f"object {digest} is corrupt: {path} does not hash to its name")
        return data

    def get_json(self, digest: str) -> object:
        """Read and decode a JSON object."""
        return json.loads(self.get_bytes(digest))

    def verify_object(self, digest: str) -> bool:
        """True if the object exists and hashes to its name (streamed)."""
        path = self.path(digest)
        h = xxhash.xxh3_128()
        try:
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
        except FileNotFoundError:
            return False
        return h.hexdigest() == digest

    def tree_entries(self, digest: str) -> list[list]:
        """The manifest entries of a tree object."""
        manifest = self.get_json(digest)
        if not isinstance(manifest, dict) or manifest.get("format") != TREE_FORMAT:
            raise StoreError(f"object {digest} is not a tree manifest")
        return manifest["entries"]

    def is_tree(self, digest: str) -> bool:
        """True if the object is a tree manifest."""
        path = self.path(digest)
        with open(path, "rb") as f:
            head = f.read(40)
        if not head.startswith(b'{"entries"'):
            return False
        try:
            self.tree_entries(digest)
        except (StoreError, ValueError):
            return False
        return True

    # -- materialization -----------------------------------------------------
    def _link_or_copy(self, digest: str, dest: Path, executable: bool = False) -> str:
        """Place a verified object at dest; return the link mode that worked.

        An executable entry is never hardlinked: its mode bits would be the store object's.
        """
        src = self.path(digest)
        if not self.verify_object(digest):
            raise CorruptObjectError(f"object {digest} is corrupt or missing: {src}")
        modes = self.link_modes
        if executable:
            modes = tuple(m for m in modes if m != "hardlink") or ("copy",)
        for mode in modes:
            try:
                if mode == "hardlink":
                    os.link(src, dest)
                elif mode == "reflink":
                    with open(src, "rb") as fin, open(dest, "wb") as fout:
                        fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
                    os.chmod(dest, 0o444)
                else:
                    shutil.copyfile(src, dest)
                    os.chmod(dest, 0o444)
                return mode
            except OSError as exc:
                dest.unlink(missing_ok=True)
                if mode == "copy" or exc.errno not in (
                    errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL,
                    errno.EMLINK, errno.EACCES, errno.ENOSYS,
                ):
                    if mode == "copy":
                        raise
        raise StoreError(f"could not materialize {digest} at {dest} with modes {modes}")

    def materialize_file(self, digest: str, dest: str | os.PathLike[str]) -> Path:
        """Place the object at dest (atomically replacing what was there)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        self._link_or_copy(digest, tmp)
        os.replace(tmp, dest)
        return dest

    def materialize_tree(self, digest: str, dest: str | os.PathLike[str]) -> Path:
        """Recreate a stored directory at dest; swaps in the new tree atomically."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
        try:
            for rel, obj, _size, executable in self.tree_entries(digest):
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                self._link_or_copy(obj, target, executable=bool(executable))
                if executable:
                    os.chmod(target, 0o555)
            old = None
            if dest.exists():
                old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
                os.replace(dest, old)
            os.replace(staging, dest)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return dest

    def remove(self, digest: str) -> None:
        """Delete an object (used by gc)."""
        self.path(digest).unlink(missing_ok=True)

    def quarantine(self, digest: str) -> Path | None:
        """Move a corrupt object aside to ``root/quarantine/`` so a fresh copy can take its name.

        Nothing is deleted: the bad bytes stay there for inspection. Returns the new path,
        or None when the object was not present.
        """
        src = self.path(digest)
        qdir = self.root / "quarantine"
        qdir.mkdir(parents=True, exist_ok=True)
        dest = qdir / f"{digest}.{os.getpid()}.{time.time_ns()}"
        try:
            os.replace(src, dest)
        except FileNotFoundError:
            return None
        return dest

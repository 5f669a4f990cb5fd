"""The CAS: immutable objects named by the xxh3-128 of their bytes.

Layout ``<root>/objects/ab/cdef…``; trees are canonical-JSON manifest objects. Writes are
renamed into place unsynced and made durable together by ``sync()`` (one ``syncfs``);
reads verify every digest. See docs/store.md, "Durability policy: batched commit".
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import itertools
import json
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import xxhash

from msmbuild.errors import CorruptObjectError, StoreError, UnsafeTreeError
from msmbuild.hashing import CHUNK, canonical_json, digest_bytes, digest_file, is_digest

TREE_FORMAT = "msmbuild-tree/1"
FICLONE = 0x40049409
LINK_MODES = ("reflink", "hardlink", "copy")

_libc = None


def validate_tree_entries(entries: object, what: str) -> list[list]:
    """Check a tree manifest's entries and return them; raise UnsafeTreeError otherwise.

    Every entry is ``[path, digest, size, executable]`` where path is relative, POSIX,
    normalized (no ``.``, ``..``, empty component, backslash or NUL), unique, and neither a
    prefix directory of another entry nor below one. A tree read from a shared remote is
    untrusted input: these rules are what keep ``materialize`` inside its destination.
    """
    if not isinstance(entries, list):
        raise UnsafeTreeError(f"{what}: 'entries' is not a list")
    seen: set[str] = set()
    dirs: set[str] = set()
    for i, entry in enumerate(entries):
        if not (isinstance(entry, list) and len(entry) == 4):
            raise UnsafeTreeError(f"{what}: entry {i} is not [path, digest, size, executable]")
        rel, digest, size, executable = entry
        if not isinstance(rel, str) or not _safe_relpath(rel):
            raise UnsafeTreeError(
                f"{what}: entry {i} has an unsafe path {rel!r} (it must be relative, normalized,"
                " without '..'); refusing to materialize it"
            )
        if not (isinstance(digest, str) and is_digest(digest)):
            raise UnsafeTreeError(f"{what}: entry {i} ({rel!r}) has a malformed digest {digest!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise UnsafeTreeError(f"{what}: entry {i} ({rel!r}) has a malformed size {size!r}")
        if not isinstance(executable, bool | int):
            raise UnsafeTreeError(f"{what}: entry {i} ({rel!r}) has a malformed mode {executable!r}")
        if rel in seen:
            raise UnsafeTreeError(f"{what}: path {rel!r} appears twice")
        seen.add(rel)
        parts = rel.split("/")
        dirs.update("/".join(parts[:k]) for k in range(1, len(parts)))
    clash = seen & dirs
    if clash:
        raise UnsafeTreeError(
            f"{what}: {sorted(clash)[0]!r} is both a file and a directory of another entry"
        )
    return entries


def _safe_relpath(rel: str) -> bool:
    """True for a normalized relative POSIX path that cannot leave its root."""
    if not rel or rel.startswith("/") or "\\" in rel or "\x00" in rel:
        return False
    return all(part not in ("", ".", "..") for part in rel.split("/"))


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


_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def _read_rest(fd: int) -> bytes:
    parts = []
    while chunk := os.read(fd, CHUNK):
        parts.append(chunk)
    return b"".join(parts)


def _walk_files(root: str, prefix: str) -> Iterator[tuple[str, str]]:
    """(relative posix path, full path) of every regular file below root; no symlinks."""
    with os.scandir(root) as it:
        for entry in it:
            rel = f"{prefix}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                yield from _walk_files(entry.path, rel + "/")
            elif entry.is_file(follow_symlinks=False):
                yield rel, entry.path


def tree_digest(directory: str | os.PathLike[str]) -> str:
    """The digest ``put_tree`` gives directory, computed without storing anything."""
    root = os.fspath(directory)
    entries = []
    for rel, full in sorted(_walk_files(root, ""), key=lambda item: item[0].split("/")):
        st = os.stat(full)
        entries.append([rel, digest_file(full), st.st_size, bool(st.st_mode & stat.S_IXUSR)])
    return digest_bytes(canonical_json({"format": TREE_FORMAT, "entries": entries}))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _swap_in(staging: Path, dest: Path, attempts: int = 20) -> None:
    """Rename staging to dest, moving whatever is at dest aside first and removing it.

    Tolerates another process doing the same concurrently (without the lock, e.g. on a
    filesystem where flock is a no-op): a dest that vanished is fine, one that reappeared
    between the two renames is moved aside again.
    """
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}-{time.time_ns()}")
    for _ in range(attempts):
        with contextlib.suppress(FileNotFoundError):
            os.replace(dest, old)
        try:
            os.replace(staging, dest)
            break
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR, errno.ENOTDIR):
                raise
    else:
        raise StoreError(f"could not place {dest}: another process keeps replacing it")
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


class _FileLock:
    """An exclusive advisory lock (flock) on a file, held inside a with block."""

    def __init__(self, path: Path):
        self.path = path
        self.fd = -1

    def __enter__(self) -> _FileLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


class ObjectStore:
    """Local content-addressed objects under ``root/objects``."""

    def __init__(self, root: str | os.PathLike[str], link_modes: tuple[str, ...] = LINK_MODES):
        self.root = Path(root)
        self.objects_dir = self.root / "objects"
        self.link_modes = tuple(link_modes)
        # Group commit: writes bump _written; a sync records the _written it started at.
        # A caller is durable once _synced reaches the count read after its own write.
        self._count_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._written = 0
        self._synced = 0
        self._objects_str = os.fspath(self.objects_dir)
        self._fans: set[str] = set()
        self._tmp_counter = itertools.count()

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
        """Every object digest present locally (names that are not digests are skipped)."""
        if not self.objects_dir.is_dir():
            return
        for fan in os.scandir(self.objects_dir):
            if not fan.is_dir(follow_symlinks=False) or len(fan.name) != 2:
                continue
            for entry in os.scandir(fan.path):
                if not entry.name.startswith(".") and is_digest(fan.name + entry.name):
                    yield fan.name + entry.name

    def iter_strays(self) -> Iterator[Path]:
        """Files under objects/ that are neither objects nor a writer's hidden temp files.

        A stray (a file copied in by hand, a truncated name) is never read as an object;
        ``verify`` lists strays and ``gc`` moves them to quarantine.
        """
        if not self.objects_dir.is_dir():
            return
        for fan in os.scandir(self.objects_dir):
            if fan.name == "tmp" or fan.name.startswith("."):
                continue
            if not (fan.is_dir(follow_symlinks=False) and len(fan.name) == 2):
                yield Path(fan.path)
                continue
            for entry in os.scandir(fan.path):
                if not entry.name.startswith(".") and not is_digest(fan.name + entry.name):
                    yield Path(entry.path)

    def quarantine_path(self, path: Path, name: str | None = None) -> Path:
        """Move any file (a stray, a corrupt object) to ``root/quarantine/``; return where."""
        qdir = self.root / "quarantine"
        qdir.mkdir(parents=True, exist_ok=True)
        dest = qdir / f"{name or path.name}.{os.getpid()}.{time.time_ns()}"
        os.replace(path, dest)
        return dest

    # -- writes --------------------------------------------------------------
    # The write path is the hot loop of a corpus import (100k small files), so it works on
    # string paths and raw file descriptors: per new object one open of the source, one
    # fstat, one read, one stat of the destination, one exclusive create (already
    # read-only), one write, one rename; fan-out directories are created once per process.
    def _fan_dir(self, digest: str) -> str:
        fan = os.path.join(self._objects_str, digest[:2])
        if fan not in self._fans:
            os.makedirs(fan, exist_ok=True)
            self._fans.add(fan)
        return fan

    def _open_tmp(self, directory: str) -> tuple[int, str]:
        """Create a hidden, read-only temp file in directory (exclusive; never reused)."""
        name = os.path.join(directory, f".tmp-{os.getpid()}-{next(self._tmp_counter)}")
        try:
            return os.open(name, _TMP_FLAGS, 0o444), name
        except FileExistsError:  # a leftover from an earlier process with the same pid
            fd, name = tempfile.mkstemp(prefix=".tmp-", dir=directory)
            os.fchmod(fd, 0o444)
            return fd, name
        except FileNotFoundError:  # the directory was removed under us: make it again
            self._fans.discard(directory)
            os.makedirs(directory, exist_ok=True)
            return os.open(name, _TMP_FLAGS, 0o444), name

    def _install(self, tmp: str | Path, digest: str) -> None:
        os.chmod(tmp, 0o444)
        os.replace(tmp, os.path.join(self._fan_dir(digest), digest[2:]))
        self.mark_dirty()

    def _write_new(self, digest: str, data: bytes | memoryview) -> None:
        """Write data as the object digest unless it is already present."""
        fan = self._fan_dir(digest)
        dest = os.path.join(fan, digest[2:])
        if os.path.isfile(dest):
            return
        fd, tmp = self._open_tmp(fan)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.close(fd)
            fd = -1
            os.replace(tmp, dest)
            self.mark_dirty()
        except BaseException:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def put_bytes(self, data: bytes) -> str:
        """Store data; return its digest. A no-op if the object already exists."""
        digest = digest_bytes(data)
        self._write_new(digest, data)
        return digest

    def put_json(self, obj: object) -> str:
        """Store the canonical JSON encoding of obj."""
        return self.put_bytes(canonical_json(obj))

    def _put_path(self, path: str | os.PathLike[str]) -> tuple[str, int, bool]:
        """Store one file; return (digest, size, executable)."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            executable = bool(st.st_mode & stat.S_IXUSR)
            if st.st_size <= CHUNK:
                data = os.read(fd, st.st_size + 1)
                if len(data) > st.st_size:  # the file grew while we read it
                    data += _read_rest(fd)
                digest = digest_bytes(data)
                self._write_new(digest, data)
                return digest, len(data), executable
            return self._put_stream(fd), st.st_size, executable
        finally:
            os.close(fd)

    def _put_stream(self, src_fd: int) -> str:
        """Copy a large file into the store while hashing it; memory stays flat."""
        staging = os.path.join(self._objects_str, "tmp")
        os.makedirs(staging, exist_ok=True)
        fd, tmp = self._open_tmp(staging)
        h = xxhash.xxh3_128()
        try:
            with os.fdopen(fd, "wb", closefd=True) as fout:
                while chunk := os.read(src_fd, CHUNK):
                    h.update(chunk)
                    fout.write(chunk)
            digest = h.hexdigest()
            if os.path.isfile(os.path.join(self._fan_dir(digest), digest[2:])):
                os.unlink(tmp)
                return digest
            self._install(tmp, digest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return digest

    def put_file(self, path: str | os.PathLike[str]) -> str:
        """Store a file (large ones streamed: hash while copying, memory flat)."""
        return self._put_path(path)[0]

    def put_files(self, paths: Iterable[str | os.PathLike[str]]) -> list[str]:
        """Store many files; return their digests in order (the bulk-import fast path)."""
        return [self._put_path(p)[0] for p in paths]

    def put_tree(self, directory: str | os.PathLike[str]) -> str:
        """Store every regular file under directory (symlinks are skipped) and a manifest.

        Returns the manifest's digest. Entries are ordered by path components.
        """
        root = os.fspath(directory)
        files = sorted(_walk_files(root, ""), key=lambda item: item[0].split("/"))
        entries = []
        for rel, full in files:
            digest, size, executable = self._put_path(full)
            entries.append([rel, digest, size, executable])
        return self.put_json({"format": TREE_FORMAT, "entries": entries})

    def mark_dirty(self) -> None:
        """Note a completed write that the next sync must cover."""
        with self._count_lock:
            self._written += 1

    def sync(self) -> None:
        """Make every write completed before this call durable (batched, group commit).

        One syncfs covers every write that completed before it started; concurrent
        callers whose writes it covers return without a syscall of their own.
        """
        target = self._written
        if self._synced >= target:
            return
        with self._sync_lock:
            if self._synced >= target:
                return
            start = self._written
            _syncfs(self.root)  # the store root exists even before any object
            self._synced = max(self._synced, start)

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
        """True if the object exists, is a regular file and hashes to its name (streamed)."""
        path = self.path(digest)
        if path.is_symlink():
            return False
        h = xxhash.xxh3_128()
        try:
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
        except FileNotFoundError:
            return False
        return h.hexdigest() == digest

    def tree_entries(self, digest: str) -> list[list]:
        """The manifest entries of a tree object, validated (see ``validate_tree_entries``).

        Raises UnsafeTreeError for a manifest whose entries could write outside the
        directory it is materialized into; such a tree is never placed anywhere.
        """
        manifest = self.get_json(digest)
        if not isinstance(manifest, dict) or manifest.get("format") != TREE_FORMAT:
            raise StoreError(f"object {digest} is not a tree manifest")
        return validate_tree_entries(manifest.get("entries"), f"tree {digest}")

    def looks_like_tree(self, digest: str) -> bool:
        """True if the object is a tree manifest by format, whether or not its entries are safe."""
        path = self.path(digest)
        if path.is_symlink():
            return False
        with open(path, "rb") as f:
            head = f.read(40)
        if not head.startswith(b'{"entries"'):
            return False
        try:
            manifest = self.get_json(digest)
        except (StoreError, ValueError):
            return False
        return isinstance(manifest, dict) and manifest.get("format") == TREE_FORMAT

    # A manifest with unsafe entries counts as a tree, so that materializing it raises
    # UnsafeTreeError instead of placing the manifest's bytes as a file.
    is_tree = looks_like_tree

    # -- materialization -----------------------------------------------------
    def _link_or_copy(
        self, digest: str, dest: Path, executable: bool = False, verified: bool = False
    ) -> str:
        """Place a verified object at dest; return the link mode that worked.

        An executable entry is never hardlinked: its mode bits would be the store object's.
        """
        src = self.path(digest)
        if src.is_symlink():
            raise CorruptObjectError(
                f"object {digest} is a symbolic link ({src} -> {os.readlink(src)}); store"
                " objects are regular files: refusing to materialize it"
            )
        if not verified and not self.verify_object(digest):
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

    def materialize_file(
        self, digest: str, dest: str | os.PathLike[str], verified: bool = False
    ) -> Path:
        """Place the object at dest (atomically replacing what was there).

        A dest that already is a hardlink of the object is left alone: renaming one link
        of an inode over another is a no-op that would leave the temp name behind.
        """
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        src = self.path(digest)
        with contextlib.suppress(OSError):
            if os.path.samefile(src, dest) and not dest.is_symlink():
                if not verified and not self.verify_object(digest):
                    raise CorruptObjectError(f"object {digest} is corrupt or missing: {src}")
                return dest
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}-{next(self._tmp_counter)}")
        tmp.unlink(missing_ok=True)
        try:
            self._link_or_copy(digest, tmp, verified=verified)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)  # still there only when dest was a link of the same inode
        return dest

    def _swap_lock(self, dest: Path) -> Any:
        """An exclusive lock, in the store, for the final swap of one destination.

        Two processes that place a tree at the same dest (two builds started together)
        take turns for the two renames instead of racing between them; the lock file
        lives in the store (``locks/place/``), never beside the build output.
        """
        name = digest_bytes(os.fsencode(os.path.abspath(dest)))
        lock_dir = self.root / "locks" / "place"
        lock_dir.mkdir(parents=True, exist_ok=True)
        return _FileLock(lock_dir / name)

    def materialize_tree(
        self, digest: str, dest: str | os.PathLike[str], verified: bool = False
    ) -> Path:
        """Recreate a stored directory at dest; swaps in the new tree atomically.

        The tree is built in a private staging directory (normal directory modes, not
        mkdtemp's 0700) and swapped in under a per-destination lock; a concurrent placer
        of the same dest waits for the swap, and a vanished old tree is not an error.
        """
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
        os.chmod(staging, 0o777 & ~_umask())
        try:
            for rel, obj, _size, executable in self.tree_entries(digest):
                target = staging / rel
                if not target.resolve().is_relative_to(staging.resolve()):
                    raise UnsafeTreeError(f"tree {digest}: entry {rel!r} leaves {dest}")
                target.parent.mkdir(parents=True, exist_ok=True)
                self._link_or_copy(obj, target, executable=bool(executable), verified=verified)
                if executable:
                    os.chmod(target, 0o555)
            with self._swap_lock(dest):
                _swap_in(staging, dest)
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
        try:
            return self.quarantine_path(self.path(digest), digest)
        except FileNotFoundError:
            return None

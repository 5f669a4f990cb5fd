"""The store facade: CAS + action cache + optional remote tier.

Every expensive step goes through ``memo_json`` (model calls, small results) or
``memo_tree`` (training runs, directories): the step runs only when its action key misses
both the local and the remote tier. Keys are xxh3-128 over the canonical JSON of
``{"kind": kind, "inputs": inputs}``; what belongs in ``inputs`` is decided, and written
down, next to the code that builds them.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msmbuild.errors import (
    CorruptObjectError,
    DiskFullError,
    LeaseLostError,
    RemoteError,
    StoreError,
    UnsafeTreeError,
)
from msmbuild.fsutil import remove_within, symlink_on_path
from msmbuild.hashing import action_key, canonical_json, digest_bytes, digest_file, is_digest
from msmbuild.layout import DEFAULT_STORE_PATH, resume_dir
from msmbuild.store import _lease
from msmbuild.store._actions import ActionCache, ActionResult
from msmbuild.store._cas import LINK_MODES, ObjectStore
from msmbuild.store._remote import Remote

log = logging.getLogger(__name__)

INLINE_MAX_BYTES = 64 * 1024  # JSON values up to this size live inside their action record
REMOTE_FAULTS_MAX = 3  # remote faults in a row after which a build goes on without read/write-through


@dataclass
class MemoResult:
    """The result of a memoized action: ``value`` is the JSON value or the tree digest."""

    key: str
    value: Any
    meta: dict[str, Any]
    hit: bool
    source: str  # "local", "remote" or "computed"


@dataclass
class TransferCount:
    """What a push or pull moved."""

    objects: int = 0
    actions: int = 0
    bytes: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # object digest / action key -> why

    @property
    def ok(self) -> bool:
        """True when every transfer succeeded."""
        return not self.failed


@dataclass
class VerifyReport:
    """Problems found by ``verify``."""

    objects_checked: int = 0
    actions_checked: int = 0
    corrupt: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    bad_actions: list[str] = field(default_factory=list)
    bad_trees: dict[str, str] = field(default_factory=dict)  # digest -> why it is unsafe
    strays: list[str] = field(default_factory=list)  # files in objects/ that are not objects

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not (self.corrupt or self.missing or self.bad_actions or self.bad_trees
                    or self.strays)


def _is_disk_full(exc: BaseException) -> bool:
    """True if exc (or what caused it) is a full disk or quota (torch reports a failed
    write as RuntimeError; loop._atomic_torch_save turns that into ENOSPC)."""
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 10:
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(cur):
            return True
        cur, seen = cur.__cause__ or cur.__context__, seen + 1
    return False


def _walk_build(build_dir: str | os.PathLike[str]) -> Iterable[tuple[str, list[str]]]:
    """(directory, file names) under build_dir, following links to directories (build/models
    on another disk is a user's layout) but entering each real directory once (no loops)."""
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(build_dir, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        yield dirpath, filenames


def _walk_no_links(directory: Path) -> Iterable[Path]:
    """Every entry under directory; linked directories are listed, never entered."""
    for dirpath, dirnames, filenames in os.walk(directory):  # followlinks=False
        for name in dirnames + filenames:
            yield Path(dirpath) / name


def _free_mb(path: Path) -> str:
    try:
        return f"{shutil.disk_usage(path).free / 1e6:.1f}"
    except OSError:
        return "?"


@dataclass
class RepairReport:
    """What ``repair`` did: objects restored, build paths re-placed or removed."""

    corrupt: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)  # from the remote or a good copy in build/
    replaced: list[Path] = field(default_factory=list)  # build paths linked to a restored object
    dropped_actions: list[str] = field(default_factory=list)  # recorded results needing a lost object
    removed: list[Path] = field(default_factory=list)  # build paths removed for a rebuild
    links: list[Path] = field(default_factory=list)  # symbolic links removed (their targets left alone)
    strays: int = 0

    @property
    def needs_rebuild(self) -> bool:
        """True when some results must be recomputed by the next build."""
        return bool(self.dropped_actions or self.removed)


TREE_MARKER_GLOB = ".*.tree"  # beside a placed tree dest: the tree digest (see materialize_if_changed)


class Store:
    """A content-addressed store with an action cache and an optional remote tier."""

    def __init__(
        self,
        root: str | os.PathLike[str] = DEFAULT_STORE_PATH,
        remote: str | None = None,
        write_through: bool = False,
        link_modes: Iterable[str] = LINK_MODES,
        storage_options: dict | None = None,
    ):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.cas = ObjectStore(self.root, tuple(link_modes))
        self.actions = ActionCache(self.root)
        self.remote = Remote(remote, storage_options) if remote else None
        self.write_through = write_through and self.remote is not None
        # Remote faults are per-object errors (docs/store.md, "Remote tier"): a read-through
        # fault is a miss, a write-through fault keeps the local result. After
        # REMOTE_FAULTS_MAX in a row this process stops trying the remote for builds.
        self._remote_faults = 0
        # Objects whose remote copy failed verification here: push and write-through
        # replace them even when the sizes agree.
        self._remote_bad: set[str] = set()
        # Leases (see _lease.py): owner heartbeat, when a silent owner counts as gone,
        # and how often a waiter looks for the owner's result.
        self.lease_heartbeat_s = _lease.HEARTBEAT_S
        self.lease_stale_s = _lease.STALE_S
        self.lease_poll_s = 1.0
        self._held: dict[str, _lease.Lease] = {}  # leases of the actions this process computes

    # -- ownership of actions being computed ------------------------------------
    def lease_path(self, key: str) -> Path:
        """The lease file of an action (present while some process computes it)."""
        self.actions.path(key)  # validates the key
        return self.root / "leases" / f"{key}.lease"

    def resume_dir(self, key: str) -> Path:
        """Private resumable state of an action (training checkpoints between steps).

        Only the holder of the action's lease writes here (see ``claim``); it is removed
        when the action's result is recorded, and ``gc`` removes abandoned ones.
        """
        self.actions.path(key)  # validates the key
        return resume_dir(self.root, key)

    def claim(self, key: str, lookup: Callable[[str], Any] | None = None) -> _lease.Lease | None:
        """Become the one process that computes action key, or wait for its result.

        Returns a held Lease (compute, record, then release it), or None once the action
        has a result (computed meanwhile by the owner). A dead owner's lease (kill -9 on
        this host, or no heartbeat for ``lease_stale_s`` on any host) is taken over, and
        the new owner resumes from the action's ``resume_dir``.
        """
        lookup = lookup or self.lookup_tree
        path = self.lease_path(key)
        watch: _lease.StaleWatch | None = None
        announced = False
        while True:
            lease = _lease.try_acquire(path, self.lease_heartbeat_s)
            if lease is not None:
                if lookup(key) is None:
                    return lease
                lease.release()  # the previous owner finished just before we got here
                return None
            if lookup(key) is not None:
                return None
            watch = watch or _lease.StaleWatch(path, self.lease_stale_s)
            if watch.owner_gone():
                watch.break_stale()
                continue
            if not announced:
                owner = _lease.describe_owner(_lease.read_owner(path))
                log.warning("action %s is being computed by %s; waiting for its result "
                            "(lease %s)", key, owner, path)
                announced = True
            time.sleep(self.lease_poll_s)

    def check_lease(self, key: str) -> None:
        """Raise LeaseLostError if this process computes action key under a lease that
        another owner has taken over; a no-op otherwise. Writers of ``resume_dir(key)``
        call it before each write."""
        lease = self._held.get(key)
        if lease is not None:
            lease.check()

    # -- keys ----------------------------------------------------------------
    @staticmethod
    def key(kind: str, inputs: dict[str, Any]) -> str:
        """The action key for kind + inputs."""
        return action_key({"kind": kind, "inputs": inputs})

    # -- objects with read-through -------------------------------------------
    def put_bytes(self, data: bytes) -> str:
        """Store bytes locally; return the digest."""
        return self.cas.put_bytes(data)

    def put_file(self, path: str | os.PathLike[str]) -> str:
        """Store a file locally (streamed); return the digest."""
        return self.cas.put_file(path)

    def put_files(self, paths: Iterable[str | os.PathLike[str]]) -> list[str]:
        """Store many files locally; return their digests in order (bulk fast path).

        Like every put, the objects are durable only after ``sync()`` (or the next
        ``save_action``, which syncs before it writes its record).
        """
        return self.cas.put_files(paths)

    def sync(self) -> None:
        """Make every object written so far durable (one filesystem sync)."""
        self.cas.sync()

    def put_tree(self, directory: str | os.PathLike[str]) -> str:
        """Store a directory; return its tree digest."""
        return self.cas.put_tree(directory)

    # -- the remote as a build sees it (read-through, write-through) ---------------
    def _remote_live(self) -> bool:
        """True while builds use the remote (configured, and not failing every time)."""
        return self.remote is not None and self._remote_faults < REMOTE_FAULTS_MAX

    def _remote_ok(self) -> None:
        self._remote_faults = 0

    def _remote_fault(self, exc: StoreError, consequence: str) -> None:
        """Report one remote fault of a build as a warning (never an error of the build)."""
        self._remote_faults += 1
        log.warning("%s; %s", exc, consequence)
        if self._remote_faults == REMOTE_FAULTS_MAX:
            log.warning("store remote %s failed %d times in a row; this process goes on without "
                        "read-through and write-through (msmbuild store push uploads later)",
                        self.remote.url if self.remote else "?", REMOTE_FAULTS_MAX)

    def _fetch_object(self, digest: str) -> bool:
        """Bring an object from the remote into the local CAS; False if the remote lacks it.

        A remote fault is a RemoteError and a copy that fails its digest a
        CorruptObjectError (remembered, so that push and write-through replace it).
        """
        if self.remote is None:
            return False
        dest = self.cas.path(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
        os.close(fd)
        try:
            if not self.remote.get_object_to(digest, Path(tmp)):
                return False
            if digest_file(tmp) != digest:
                self._remote_bad.add(digest)
                raise CorruptObjectError(f"remote object {digest} at {self.remote.url} is corrupt")
            self.cas._install(Path(tmp), digest)
            return True
        finally:
            Path(tmp).unlink(missing_ok=True)

    def ensure_object(self, digest: str) -> None:
        """Make sure an object (and, for a tree, every entry) is local and intact.

        Every object is re-hashed; a corrupt one is fetched again from the remote or, failing
        that, moved to quarantine and reported with CorruptObjectError.
        """
        if not self.cas.verify_object(digest) and not self._read_through(digest):
            if self.cas.has(digest):
                bad = self.cas.path(digest)
                raise CorruptObjectError(f"object {digest} is corrupt: {bad} does not hash to its name"
                                         f" (moved to {self.cas.quarantine(digest)})")
            raise StoreError(f"object {digest} is in neither the local store nor the remote")
        if self.cas.is_tree(digest):
            for obj in {entry[1] for entry in self.cas.tree_entries(digest)}:
                self.ensure_object(obj)

    def _read_through(self, digest: str) -> bool:
        """_fetch_object for a build: a remote fault or a corrupt remote copy is a miss with
        a warning."""
        if not self._remote_live():
            return False
        try:
            found = self._fetch_object(digest)
        except StoreError as exc:
            self._remote_fault(exc, "read-through treats it as a miss")
            return False
        self._remote_ok()
        return found

    def get_bytes(self, digest: str) -> bytes:
        """Read and verify an object, fetching it from the remote on a local miss."""
        try:
            return self.cas.get_bytes(digest)
        except StoreError:  # missing or corrupt (CorruptObjectError); a remote fault is raised too
            if not self._fetch_object(digest):
                raise
        return self.cas.get_bytes(digest)

    def get_json(self, digest: str) -> Any:
        """Read a JSON object."""
        import json

        return json.loads(self.get_bytes(digest))

    def materialize(self, digest: str, dest: str | os.PathLike[str]) -> Path:
        """Place a file or tree object at dest (link or copy; see link_modes)."""
        self.ensure_object(digest)
        return self._place(digest, dest)

    def scratch_dir(self) -> Path:
        """Working space on the store's filesystem (gc clears what a killed run leaves)."""
        scratch = self.root / "scratch"
        scratch.mkdir(parents=True, exist_ok=True)
        return scratch

    def materialize_if_changed(self, tree: str, dest: str | os.PathLike[str]) -> Path:
        """Materialize a tree unless dest already holds it (no new mtimes on a no-op build).

        A marker beside dest (``.<name>.tree``) records the tree last placed there. Sizes
        are a cheap check: a truncated object (and its link) is placed again, and so is a
        dest that is a symbolic link (the link is swapped out; its target is left alone).
        """
        dest = Path(dest)
        marker = dest.parent / f".{dest.name}.tree"
        # a link at dest is nothing msmbuild placed: it is replaced (the link, never its target)
        if dest.is_dir() and not dest.is_symlink() and marker.is_file() and marker.read_text() == tree and all(
                (dest / rel).is_file() and (dest / rel).stat().st_size == size
                for rel, _obj, size, _x in self.tree_entries(tree)):
            return dest
        self.materialize(tree, dest)
        tmp = marker.with_name(marker.name + ".tmp")
        tmp.write_text(tree)
        tmp.replace(marker)
        return dest

    def object_path(self, digest: str) -> Path:
        """Where an object's bytes live in the local store (for messages and tools)."""
        return self.cas.path(digest)

    def action_path(self, key: str) -> Path:
        """Where an action's record lives in the local store (for messages and tools)."""
        return self.actions.path(key)

    def action_keys(self) -> Iterable[str]:
        """Every action key in the local store."""
        return self.actions.iter_keys()

    def tree_entries(self, tree: str) -> list[list]:
        """The validated ``[path, digest, size, executable]`` entries of a local tree object."""
        return self.cas.tree_entries(tree)

    def _place(self, digest: str, dest: str | os.PathLike[str]) -> Path:
        """Materialize an object that ensure_object has just verified."""
        if self.cas.is_tree(digest):
            return self.cas.materialize_tree(digest, dest, verified=True)
        return self.cas.materialize_file(digest, dest, verified=True)

    # -- actions -------------------------------------------------------------
    def has_local_action(self, key: str) -> bool:
        """Whether the local store holds a record for key (one stat; neither the record nor
        its objects are read or verified: ``get_action`` does that)."""
        return self.actions.has(key)

    def get_action(self, key: str) -> tuple[ActionResult, str] | None:
        """The action's record and its source tier, or None; outputs are made local."""
        try:
            record = self.actions.get(key)
        except StoreError as exc:  # e.g. a record whose bytes a power loss took away
            log.warning("%s; the action will be recomputed", exc)
            record = None
        source = "local"
        if record is None and self._remote_live():
            assert self.remote is not None
            try:
                data = self.remote.get_action(key)
                if data is not None:
                    record = ActionResult.from_bytes(data, f"{self.remote.url} action {key}")
                    source = "remote"
            except StoreError as exc:  # a remote fault or a malformed remote record
                self._remote_fault(exc, "read-through treats it as a miss")
            else:
                self._remote_ok()
        if record is None:
            return None
        if bad := record.bad_inline():
            log.warning("action %s is unusable (its inline output %s does not match its digest); "
                        "it will be recomputed", key, ", ".join(bad))
            return None
        try:
            for digest in record.object_digests():
                self.ensure_object(digest)
        except StoreError as exc:
            log.warning("action %s is unusable (%s); it will be recomputed", key, exc)
            return None
        if source == "remote":
            self.actions.put(record)
        return record, source

    def save_action(self, key: str, outputs: dict[str, str], meta: dict[str, Any],
                    durable: bool = True, inline: dict[str, Any] | None = None) -> ActionResult:
        """Record an action whose outputs are already in the CAS (sync first, then record).

        With durable=False neither the outputs nor the record are synced here: the next
        ``sync()`` (one syncfs for everything written so far) makes them durable together;
        bulk writers call it every second or so and when they finish. A killed process
        loses nothing (the page cache survives it). A power loss before the sync can leave
        a record whose object never reached the disk; reads verify every digest, so such
        an action is treated as a miss and recomputed, never trusted.

        ``inline`` maps output names to JSON values kept in the record itself (their
        digests are in ``outputs`` all the same); see ``save_json``.
        """
        if durable:
            self.cas.sync()
        record = ActionResult(key=key, outputs=outputs, meta=dict(meta), inline=inline or {})
        record.meta.setdefault("created", time.time())
        self.actions.put(record, durable)
        if not durable:
            self.cas.mark_dirty()
        if self.write_through and self._remote_live():
            self._write_through(key)
        return record

    # -- adoption (docs/decisions.md, "What DVC carries and what the store remote carries")
    def adopt_files(self, key: str, files: dict[str, Path], digests: dict[str, str],
                    meta: dict[str, Any], extra: dict[str, str] | None = None) -> ActionResult | None:
        """Take files already in the build (pulled by DVC) as the result of action ``key``.

        Each file must hash to the digest its own record names (``digests``, e.g. an index
        entry); then its bytes go into the local CAS and the action is recorded with
        ``meta`` (marked ``adopted``) and written through like any new result. ``extra``
        names outputs already in the CAS. None, and nothing recorded, when a file is missing
        or does not verify.
        """
        outputs: dict[str, str] = {}
        for name, path in files.items():
            if not path.is_file():
                return None
            if digest_file(path) != digests.get(name):
                log.info("%s does not match the digest its record names; not adopted", path)
                return None
            outputs[name] = self.cas.put_file(path)
        return self.save_action(key, {**outputs, **(extra or {})}, {**meta, "adopted": True})

    def _adopt_tree(self, kind: str, key: str, adopt: Callable[[], tuple[Path, dict[str, Any]] | None]
                    ) -> MemoResult | None:
        """memo_tree's adoption on a miss: ``adopt()`` gives a verified directory and its meta."""
        found = adopt()
        if found is None:
            return None
        directory, meta = found
        digest = self.put_tree(directory)
        record = self.save_action(key, {"tree": digest}, {"kind": kind, **meta, "adopted": True})
        log.info("%s action %s: adopted %s (pulled output that verifies)", kind, key[:12], directory)
        return MemoResult(key, digest, record.meta, True, "adopted")

    def _write_through(self, key: str) -> None:
        """Upload a new result; a failure is reported and the local result stays."""
        try:
            count = self.push_keys([key])
        except StoreError as exc:
            count = TransferCount(failed={key: str(exc)})
        if count.ok:
            self._remote_ok()
            return
        why = "; ".join(f"{name}: {reason}" for name, reason in sorted(count.failed.items()))
        self._remote_fault(RemoteError(f"write-through of action {key} failed ({why})"),
                           "the local result is kept (msmbuild store push uploads it later)")

    # -- memoization -----------------------------------------------------------
    def lookup_json(self, key: str) -> MemoResult | None:
        """A cached JSON action result, or None."""
        found = self.get_action(key)
        if found is None:
            return None
        record, source = found
        value = record.inline["value"] if "value" in record.inline else self.get_json(record.outputs["value"])
        return MemoResult(key, value, record.meta, True, source)

    def save_json(self, key: str, value: Any, meta: dict[str, Any],
                  durable: bool = True) -> MemoResult:
        """Store a JSON value as the result of an action (see save_action for durable).

        A value whose canonical JSON is at most INLINE_MAX_BYTES is kept inside the record
        (one file); a larger one becomes a CAS object the record names.
        """
        data = canonical_json(value)
        if len(data) <= INLINE_MAX_BYTES:
            record = self.save_action(key, {"value": digest_bytes(data)}, meta, durable,
                                      inline={"value": value})
        else:
            record = self.save_action(key, {"value": self.cas.put_bytes(data)}, meta, durable)
        return MemoResult(key, value, record.meta, False, "computed")

    def memo_json(
        self,
        kind: str,
        inputs: dict[str, Any],
        compute: Callable[[], tuple[Any, dict[str, Any]]],
    ) -> MemoResult:
        """Run compute() unless the action is cached; compute returns (value, meta)."""
        key = self.key(kind, inputs)
        cached = self.lookup_json(key)
        if cached is not None:
            return cached
        start = time.perf_counter()
        value, meta = compute()
        meta = {"kind": kind, "wall_s": time.perf_counter() - start, **meta}
        return self.save_json(key, value, meta)

    def lookup_tree(self, key: str) -> MemoResult | None:
        """A cached tree action result (value = tree digest), or None."""
        found = self.get_action(key)
        if found is None:
            return None
        record, source = found
        return MemoResult(key, record.outputs["tree"], record.meta, True, source)

    def memo_tree(
        self,
        kind: str,
        inputs: dict[str, Any],
        compute: Callable[[Path], dict[str, Any]],
        dest: str | os.PathLike[str] | None = None,
        lease: _lease.Lease | None = None,
        adopt: Callable[[], tuple[Path, dict[str, Any]] | None] | None = None,
    ) -> MemoResult:
        """Run compute(workdir) unless cached; store workdir as a tree; materialize at dest.

        compute writes its outputs into the empty directory it is given and returns
        metadata. A failing compute leaves nothing behind: not in the store, not at dest
        (only its ``resume_dir``, for the next attempt). On a miss the process first
        claims the action (see ``claim``): a second process computing the same action
        at the same time, on this machine or another one sharing the store, waits for
        the first one's result instead of computing it too. A caller that claimed the
        action itself passes its ``lease``. On a miss, ``adopt()`` may first give a directory
        already in the build whose own record shows it is this action's result (a checkpoint
        pulled by DVC, by its lineage.json) and its meta: it is stored and recorded instead
        of computed (source "adopted").
        """
        key = self.key(kind, inputs)
        result = self.lookup_tree(key)  # verifies the tree and every entry
        while result is None:
            while result is None and lease is None:
                lease = self.claim(key)
                if lease is None:
                    result = self.lookup_tree(key)
            if result is not None:
                break
            assert lease is not None
            self._held[key] = lease
            try:
                result = self._adopt_tree(kind, key, adopt) if adopt is not None else None
                if result is None:
                    result = self._compute_tree(kind, key, compute, lease)
            except LeaseLostError as exc:
                # Paused past the stale time and taken over: the new owner has the resume
                # state now. Stop writing and wait for its result (or take over again).
                log.warning("%s; stopped computing action %s, waiting for its result", exc, key)
            finally:
                self._held.pop(key, None)
                lease.release()
                lease = None
        if dest is not None:
            self._place(result.value, dest)
        return result

    def _compute_tree(self, kind: str, key: str, compute: Callable[[Path], dict[str, Any]],
                      lease: _lease.Lease | None = None) -> MemoResult:
        """Run compute in a scratch workdir, store the tree, record the action (lease held)."""
        workdir = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=self.scratch_dir()))
        try:
            start = time.perf_counter()
            meta = compute(workdir) or {}
            meta = {"kind": kind, "wall_s": time.perf_counter() - start, **meta}
            digest = self.put_tree(workdir)
            self._replace_corrupt(digest, workdir)
            record = self.save_action(key, {"tree": digest}, meta)
        except (OSError, RuntimeError) as exc:
            if not _is_disk_full(exc):
                raise
            resume = self.resume_dir(key)
            raise DiskFullError(
                f"disk full while computing {kind} action {key[:12]}: no space left on the "
                f"filesystem of the store {self.root} ({_free_mb(self.root)} MB free). Free space "
                f"there (`msmbuild store gc` removes what no build refers to; keep {resume}, "
                "the run resumes from it) and rerun") from None
        finally:
            with contextlib.suppress(OSError):
                remove_within(self.root, workdir)
        if lease is None or lease.held():  # else it is another owner's state now
            with contextlib.suppress(OSError):
                remove_within(self.root, self.resume_dir(key))
        return MemoResult(key, digest, record.meta, False, "computed")

    def _replace_corrupt(self, tree: str, workdir: Path) -> None:
        """After put_tree: a put skips objects that already exist, so re-hash every entry
        and replace any pre-existing corrupt copy from workdir before workdir goes away."""
        for rel, obj, _size, _x in self.cas.tree_entries(tree):
            if not self.cas.verify_object(obj):
                self.cas.quarantine(obj)
                if self.cas.put_file(workdir / rel) != obj:
                    raise StoreError(f"{workdir / rel} changed while it was being stored")

    # -- remote transfer --------------------------------------------------------
    def _closure(self, digests: Iterable[str]) -> set[str]:
        """Digests plus, for trees, every object they name."""
        out: set[str] = set()
        stack = list(digests)
        while stack:
            d = stack.pop()
            if d in out:
                continue
            out.add(d)
            if self.cas.has(d) and self.cas.is_tree(d):
                stack.extend(e[1] for e in self.cas.tree_entries(d))
        return out

    def _require_remote(self) -> Remote:
        if self.remote is None:
            raise StoreError("no store remote is configured (set store.remote in params.yaml)")
        return self.remote

    def _remote_copy_ok(self, digest: str, remote_size: int | None) -> bool | None:
        """Is the remote's copy good? None: it has none; False: it fails the check.

        The check is the size (free: it comes with the listing, or one stat) and the
        digests this process saw fail on read-through; a same-size corruption is found
        by the next read-through (which re-hashes), and then replaced here.
        """
        if remote_size is None:
            return None
        return digest not in self._remote_bad and remote_size == self.cas.path(digest).stat().st_size

    def _upload(self, digest: str, remote_size: int | None, count: TransferCount) -> bool:
        """Upload one verified local object unless the remote holds a good copy: the first
        verified writer wins, a copy that fails the check is replaced. False if it failed."""
        remote = self._require_remote()
        try:
            if self._remote_copy_ok(digest, remote_size):
                count.skipped += 1
                return True
            if not self.cas.verify_object(digest):
                count.failed[digest] = (f"local object {self.cas.path(digest)} is corrupt; not pushed "
                                        "(msmbuild store repair)")
                return False
            if remote_size is not None:
                log.warning("remote object %s at %s fails verification (%d bytes, expected %d); "
                            "replacing it with the verified local copy", digest, remote.url,
                            remote_size, self.cas.path(digest).stat().st_size)
            remote.put_object_file(digest, self.cas.path(digest))
        except RemoteError as exc:
            count.failed[digest] = str(exc)
            return False
        self._remote_bad.discard(digest)
        count.objects += 1
        count.bytes += self.cas.path(digest).stat().st_size
        return True

    def push_keys(self, keys: Iterable[str]) -> TransferCount:
        """Upload the named actions and their objects, skipping what the remote holds intact.

        Remote faults are per object: listed in ``failed``; an action is uploaded only
        when all its objects are there.
        """
        remote = self._require_remote()
        count = TransferCount()
        for key in keys:
            record = self.actions.get(key)
            if record is None:
                continue
            self._refuse_bad_inline(record, "push")
            try:
                verified = self._remote_record_verifies(remote, key)
            except RemoteError as exc:
                count.failed[key] = str(exc)
                continue
            if verified:
                count.skipped += 1  # first verified writer wins: never replaced
                continue
            ok = True
            for digest in sorted(self._closure(record.object_digests())):
                try:
                    size = remote.object_size(digest)
                except RemoteError as exc:
                    count.failed[digest] = str(exc)
                    ok = False
                    continue
                ok = self._upload(digest, size, count) and ok
            if not ok:
                count.failed[key] = "an output object could not be uploaded; not pushed"
                continue
            try:
                remote.put_action(key, record.to_bytes())
            except RemoteError as exc:
                count.failed[key] = str(exc)
                continue
            count.actions += 1
        return count

    def _remote_record_verifies(self, remote: Remote, key: str) -> bool:
        """Whether the remote holds a record for key that parses, whose inline values match
        their digests and whose objects are all there intact (a failing one may be replaced)."""
        data = remote.get_action(key)
        if data is None:
            return False
        try:
            record = ActionResult.from_bytes(data, f"{remote.url} action {key}")
        except StoreError:
            return False
        if record.bad_inline():
            return False
        digests = set(record.object_digests())
        local_trees = {d for d in digests if self.cas.has(d) and self.cas.is_tree(d)}

        def intact(digest: str) -> bool:  # there, not found corrupt here, and of the local copy's size
            size = remote.object_size(digest)
            if size is None or digest in self._remote_bad:
                return False
            return not self.cas.has(digest) or size == self.cas.path(digest).stat().st_size

        return all(intact(d) for d in digests | self._closure(local_trees))

    def push(self) -> TransferCount:
        """Upload every local object and action the remote lacks."""
        remote = self._require_remote()
        count = TransferCount()
        remote_objects = remote.list_objects()
        for digest in self.cas.iter_digests():
            self._upload(digest, remote_objects.get(digest), count)
        remote_actions = remote.list_actions()
        for key in self.actions.iter_keys():
            if key not in remote_actions:
                try:
                    data = self.actions.path(key).read_bytes()
                    record = ActionResult.from_bytes(data, str(self.actions.path(key)))
                    self._refuse_bad_inline(record, "push")
                except (StoreError, OSError) as exc:
                    count.failed[key] = str(exc)
                    continue
                if any(d in count.failed for d in self._closure(record.object_digests())):
                    count.failed[key] = "an output object is corrupt or could not be uploaded; not pushed"
                    continue
                try:
                    remote.put_action(key, data)
                except RemoteError as exc:
                    count.failed[key] = str(exc)
                    continue
                count.actions += 1
        return count

    def _refuse_bad_inline(self, record: ActionResult, verb: str) -> None:
        """A record whose inline value fails its digest is never copied to another store."""
        if bad := record.bad_inline():
            raise CorruptObjectError(
                f"refusing to {verb} action {record.key}: its inline {', '.join(bad)} does not hash to "
                f"its digest (msmbuild store verify lists such records; rebuilding recomputes them)")

    def pull(self) -> TransferCount:
        """Download every remote object and action the local store lacks.

        The remote is untrusted: a corrupt object, a name that is not a digest or a
        malformed record is skipped and reported in ``failed`` (nothing of it is kept
        locally), and an action that needs a failed object is not pulled; the rest is.
        """
        remote = self._require_remote()
        count = TransferCount()
        local = set(self.cas.iter_digests())
        for digest in sorted(remote.list_objects()):
            if not is_digest(digest):
                count.failed[digest] = f"{remote.url}: not an object name; skipped"
                continue
            if digest in local:
                count.skipped += 1
                continue
            try:
                fetched = self._fetch_object(digest)
            except StoreError as exc:
                count.failed[digest] = str(exc)
                continue
            if fetched:
                count.objects += 1
                count.bytes += self.cas.path(digest).stat().st_size
        self.cas.sync()
        local_actions = set(self.actions.iter_keys())
        for key in sorted(remote.list_actions() - local_actions):
            if not is_digest(key):
                count.failed[key] = f"{remote.url}: not an action key; skipped"
                continue
            try:
                data = remote.get_action(key)
            except RemoteError as exc:
                count.failed[key] = str(exc)
                continue
            if data is None:
                continue
            try:
                record = ActionResult.from_bytes(data, f"{remote.url} action {key}")
                self._refuse_bad_inline(record, "pull")
                needs = self._closure(d for d in record.object_digests() if self.cas.has(d))
            except StoreError as exc:
                count.failed[key] = str(exc)
                continue
            lacking = [d for d in list(needs) + record.object_digests() if not self.cas.has(d)]
            if lacking or any(d in count.failed for d in needs):
                count.failed[key] = (f"{remote.url} action {key}: output object "
                                     f"{(lacking or sorted(needs & count.failed.keys()))[0]} is "
                                     "missing or corrupt; not pulled")
                continue
            self.actions.put_bytes(key, data)
            count.actions += 1
        return count

    # -- maintenance -----------------------------------------------------------
    def verify(self, visit: Callable[[str, ActionResult], None] | None = None) -> VerifyReport:
        """Check every object's digest and that every action's outputs exist.

        visit(key, record), when given, sees every readable record in the same pass (for
        checks of what a record means, which the store does not know).
        """
        report = VerifyReport()
        report.strays = [str(p) for p in self.cas.iter_strays()]
        for digest in self.cas.iter_digests():
            report.objects_checked += 1
            if not self.cas.verify_object(digest):
                report.corrupt.append(digest)
            elif self.cas.looks_like_tree(digest):
                try:
                    self.cas.tree_entries(digest)
                except UnsafeTreeError as exc:
                    report.bad_trees[digest] = str(exc)
        for key in self.actions.iter_keys():
            report.actions_checked += 1
            try:
                record = self.actions.get(key)
            except StoreError:
                report.bad_actions.append(key)
                continue
            if record.bad_inline():
                report.bad_actions.append(key)
            elif visit is not None:
                visit(key, record)
            for digest in record.object_digests():
                if not self.cas.has(digest):
                    report.missing.append(digest)
                elif (digest not in report.corrupt and digest not in report.bad_trees
                      and self.cas.is_tree(digest)):
                    for entry in self.cas.tree_entries(digest):
                        if not self.cas.has(entry[1]):
                            report.missing.append(entry[1])
        return report

    # -- build directories ----------------------------------------------------
    def placed_trees(self, build_dir: str | os.PathLike[str]) -> list[tuple[Path, str]]:
        """(dest, tree digest) of every tree placed under build_dir with a marker."""
        out = []
        markers = [Path(d) / name for d, files in _walk_build(build_dir) for name in files
                   if fnmatch.fnmatchcase(name, TREE_MARKER_GLOB)]
        for marker in markers:
            dest = marker.parent / marker.name[1:-len(".tree")]
            with contextlib.suppress(OSError, UnicodeDecodeError):
                tree = marker.read_text().strip()
                if is_digest(tree) and dest.is_dir():
                    out.append((dest, tree))
        return out

    def affected_paths(self, build_dir: str | os.PathLike[str],
                       digests: Iterable[str]) -> dict[str, list[Path]]:
        """Build paths that hold the named objects: hardlinks of the object file (same
        inode) and entries of placed trees that name it (copies, reflinks)."""
        wanted = set(digests)
        out: dict[str, list[Path]] = {d: [] for d in wanted}
        inodes = {}
        for d in wanted:
            with contextlib.suppress(OSError):
                st = self.cas.path(d).stat()
                inodes[(st.st_dev, st.st_ino)] = d
        for dirpath, files in _walk_build(build_dir):
            for name in files:
                path = Path(dirpath) / name
                with contextlib.suppress(OSError):
                    st = path.lstat()
                    d = inodes.get((st.st_dev, st.st_ino))
                    if d is not None and path not in out[d]:
                        out[d].append(path)
        for dest, tree in self.placed_trees(build_dir):
            with contextlib.suppress(StoreError, ValueError):
                for rel, obj, _size, _x in self.cas.tree_entries(tree):
                    if obj in wanted and (dest / rel) not in out[obj] and (dest / rel).exists():
                        out[obj].append(dest / rel)
        return out

    def check_placed(self, build_dir: str | os.PathLike[str]) -> list[str]:
        """Cheap check of placed trees (stat only): entries missing or of the wrong size.

        A truncated or overwritten object shows here without re-hashing anything.
        """
        problems = []
        for dest, tree in self.placed_trees(build_dir):
            try:
                entries = self.cas.tree_entries(tree)
            except (StoreError, ValueError) as exc:
                problems.append(f"{dest}: its tree {tree} is unreadable ({exc})")
                continue
            for rel, _obj, size, _x in entries:
                try:
                    actual = (dest / rel).stat().st_size
                except FileNotFoundError:
                    problems.append(f"{dest / rel}: missing")
                    continue
                if actual != size:
                    problems.append(f"{dest / rel}: {actual} bytes, stored as {size}")
        return problems

    def placed_mismatches(self, build_dir: str | os.PathLike[str]) -> list[tuple[Path, str]]:
        """(build path, object) of every placed tree entry that is a copy (not a hardlink of
        the object) whose bytes no longer hash to the object: a same-size corruption that
        the size check of ``check_placed`` cannot see. Reads every copied entry."""
        out = []
        for dest, tree in self.placed_trees(build_dir):
            try:
                entries = self.cas.tree_entries(tree)
            except (StoreError, ValueError):
                continue
            for rel, obj, _size, _x in entries:
                path = dest / rel
                with contextlib.suppress(OSError):
                    if path.is_file() and not (self.cas.has(obj) and os.path.samefile(path, self.cas.path(obj))) \
                            and digest_file(path) != obj:
                        out.append((path, obj))
        return out

    def repair(self, build_dir: str | os.PathLike[str]) -> RepairReport:
        """Find corrupt objects, restore them, and fix the build paths that hold them.

        Each corrupt object is quarantined, then fetched again from the remote or taken
        from an intact copy under build_dir; the build paths that held it are re-placed.
        An object with no good copy anywhere: every action record that needs it is
        dropped and the placed trees (or files) holding it are removed, so the next build
        recomputes exactly those results and nothing else. Strays are quarantined; copied
        build files whose bytes changed are placed again from the store.

        Never through a symbolic link: a placed tree reached through a link (a linked
        checkpoint directory) has the link removed, its target left alone, and is placed
        again as a real directory when its objects could be restored.
        """
        build_dir = Path(build_dir)
        report = RepairReport(strays=self._quarantine_strays())
        report.corrupt = [d for d in self.cas.iter_digests() if not self.cas.verify_object(d)]
        for path, obj in self.placed_mismatches(build_dir):
            if obj not in report.corrupt and self.cas.verify_object(obj) and self._replace_build_path(
                    build_dir, path, obj, report):
                report.replaced.append(path)
        if not report.corrupt:
            return report
        affected = self.affected_paths(build_dir, report.corrupt)
        roots = {dest: tree for dest, tree in self.placed_trees(build_dir)}
        lost: set[str] = set()
        for digest in report.corrupt:
            self.cas.quarantine(digest)
            try:
                restored = self._fetch_object(digest)
            except StoreError:
                restored = False
            if not restored:
                restored = self._restore_from_copy(digest, affected[digest])
            if not restored:
                lost.add(digest)
                continue
            report.restored.append(digest)
            for path in affected[digest]:
                if self._replace_build_path(build_dir, path, digest, report, roots):
                    report.replaced.append(path)
        if lost:
            for key in list(self.actions.iter_keys()):
                try:
                    record = self.actions.get(key)
                except StoreError:
                    continue
                if record is not None and self._closure(record.object_digests()) & lost:
                    self.actions.remove(key)
                    report.dropped_actions.append(key)
            for digest in lost:
                for path in affected[digest]:
                    root = next((dest for dest in roots if path.is_relative_to(dest)), None)
                    target = root or path
                    if target in report.removed:
                        continue
                    if root is not None:
                        (root.parent / f".{root.name}.tree").unlink(missing_ok=True)
                    # a link at target is removed as a link; its target is never entered
                    outcome = remove_within(target.parent, target)
                    if outcome != "missing":
                        report.removed.append(target)
                        if outcome == "link removed":
                            report.links.append(target)
        self.cas.sync()
        return report

    def _replace_build_path(self, build_dir: Path, path: Path, digest: str, report: RepairReport,
                            roots: dict[Path, str] | None = None) -> bool:
        """Place a (restored) object at a build path again; True when done here.

        A path reached through a symbolic link at or inside a placed tree (msmbuild places
        real directories there) is not written through it: the link is removed (its target
        is left alone) and, when it is the tree's directory, the tree is placed there again
        as a real directory. Links above a tree (build/models on another disk) are the
        user's layout and are followed as before.
        """
        roots = roots if roots is not None else {dest: tree for dest, tree in self.placed_trees(build_dir)}
        root = next((dest for dest in roots if path.is_relative_to(dest)), None)
        link = symlink_on_path(root.parent, path) if root is not None else None
        if link is None or link == path:
            executable = bool(path.stat().st_mode & 0o111) if path.exists() else False
            self.cas.materialize_file(digest, path, verified=True)
            if executable:
                os.chmod(path, 0o555)
            return True
        if link in report.removed or link in report.replaced:
            return False
        remove_within(link.parent, link)
        report.links.append(link)
        tree = roots.get(link)
        if tree is not None and all(self.cas.verify_object(obj) for _rel, obj, _size, _x in self.tree_entries(tree)):
            self.materialize_if_changed(tree, link)
            report.replaced.append(link)
        else:
            if tree is not None:
                (link.parent / f".{link.name}.tree").unlink(missing_ok=True)
            report.removed.append(link)
        return False

    def _quarantine_strays(self) -> int:
        """Move every stray file out of objects/; returns how many."""
        moved = 0
        for path in list(self.cas.iter_strays()):
            with contextlib.suppress(FileNotFoundError):
                log.warning("moved stray file %s (not an object) to %s", path, self.cas.quarantine_path(path))
                moved += 1
        return moved

    def _restore_from_copy(self, digest: str, paths: list[Path]) -> bool:
        """Take the object back from a build path that still holds its exact bytes."""
        for path in paths:
            with contextlib.suppress(OSError):
                if digest_file(path) == digest:
                    return self.cas.put_file(path) == digest
        return False

    def gc(
        self,
        keep_actions: Iterable[str],
        keep_objects: Iterable[str] = (),
        tmp_grace_s: float = 3600.0,
    ) -> dict[str, int]:
        """Delete every action not in keep_actions and every object they do not reach.

        Temp files (``.tmp-*``, left by killed writers) older than tmp_grace_s are removed
        too; younger ones may belong to a writer that is still running. Run gc while no
        build writes to the store: an object written but not yet recorded is unreachable.
        """
        keep_actions = self._kept_closure(keep_actions)
        self._links_seen: list[Path] = []
        roots = set(keep_objects)
        removed_actions = 0
        for key in list(self.actions.iter_keys()):
            if key in keep_actions:
                record = self.actions.get(key)
                roots.update(record.object_digests())
            else:
                self.actions.remove(key)
                removed_actions += 1
        live = self._closure(d for d in roots if self.cas.has(d))
        dead = [d for d in self.cas.iter_digests() if d not in live]
        freed = sum(self.cas.path(d).stat().st_size for d in dead)
        for digest in dead:
            self.cas.remove(digest)
        strays = self._quarantine_strays()
        cutoff = time.time() - tmp_grace_s
        resume_removed = self._gc_resume(cutoff)
        tmp_removed = 0
        temps = [(fan, ".tmp-") for top in ("objects", "actions") for fan in self._real_entries(top, dirs=True)]
        temps += [(scratch, "") for scratch in (self._real_dir("scratch"),) if scratch is not None]
        for directory, prefix in temps:
            for tmp in self._real_entries(directory, prefix=prefix):
                try:
                    if tmp.lstat().st_mtime > cutoff:
                        continue
                    if remove_within(self.root, tmp) != "missing":
                        tmp_removed += 1
                except OSError as exc:
                    log.warning("gc: could not remove %s: %s", tmp, exc)
        return {"actions_removed": removed_actions, "objects_removed": len(dead),
                "bytes_freed": freed, "objects_kept": len(live), "tmp_removed": tmp_removed,
                "strays_quarantined": strays, "resume_removed": resume_removed,
                "links_skipped": list(self._links_seen)}

    def _real_dir(self, *parts: str | Path) -> Path | None:
        """root/parts when it is a real directory reached through no symbolic link; a link
        on the way is noted (``_links_seen``) and never followed, so gc stays in the store."""
        path = self.root.joinpath(*parts)
        link = symlink_on_path(self.root, path)
        if link is not None:
            if link not in self._links_seen:
                self._links_seen.append(link)
                log.warning("%s is a symbolic link (to %s): msmbuild store gc does not follow it; "
                            "remove or replace it by hand", link, os.readlink(link))
            return None
        return path if path.is_dir() else None

    def _real_entries(self, directory: str | Path, prefix: str = "", dirs: bool = False) -> list[Path]:
        """Entries of a store directory (see _real_dir) whose names start with prefix; with
        dirs, only real subdirectories (a linked one is noted and skipped)."""
        base = self._real_dir(directory)
        if base is None:
            return []
        out = []
        for entry in os.scandir(base):
            if not entry.name.startswith(prefix):
                continue
            path = Path(entry.path)
            if dirs:
                if self._real_dir(path.relative_to(self.root)) is not None:
                    out.append(path)
            else:
                out.append(path)
        return sorted(out)

    def _kept_closure(self, keys: Iterable[str]) -> set[str]:
        """keys plus every action a kept record names in ``meta["keeps"]`` (transitively).

        A summary action (a corpus partition) lists the calls it was made from there, so a
        gc root naming the partition keeps its calls without listing each one.
        """
        kept: set[str] = set()
        stack = list(keys)
        while stack:
            key = stack.pop()
            if key in kept:
                continue
            kept.add(key)
            try:
                record = self.actions.get(key)
            except StoreError:
                record = None
            if record is not None:
                stack.extend(k for k in record.meta.get("keeps", ()) if k not in kept)
        return kept

    def _gc_resume(self, cutoff: float) -> int:
        """Remove abandoned resume state: a resume directory nobody holds a lease on and
        that has not changed since cutoff (or whose action is already recorded), and a
        killed writer's ``.*.tmp-*`` files in live ones. Returns directories removed."""
        removed = 0
        for path in self._real_entries("resume"):
            key = path.name
            try:
                leased = self.lease_path(key).exists()
            except StoreError:
                leased = False
            if path.is_symlink() or not path.is_dir():
                newest = path.lstat().st_mtime  # a link is removed as a link, never followed
            else:
                newest = max((p.lstat().st_mtime for p in _walk_no_links(path)), default=path.lstat().st_mtime)
            done = is_digest(key) and self.actions.path(key).is_file()
            if not leased and (done or newest <= cutoff):
                try:
                    remove_within(self.root, path)
                    removed += 1
                except OSError as exc:
                    log.warning("gc: could not remove %s: %s", path, exc)
                continue
            if not path.is_symlink() and path.is_dir():
                for tmp in path.glob(".*.tmp-*"):
                    with contextlib.suppress(FileNotFoundError):
                        if tmp.lstat().st_mtime <= cutoff:
                            tmp.unlink()
        return removed

    def stats(self) -> dict[str, Any]:
        """Counts and sizes: objects, bytes, actions by kind, recorded cost."""
        sizes = [self.cas.path(digest).stat().st_size for digest in self.cas.iter_digests()]
        by_kind: Counter[str] = Counter()
        cost = 0.0
        for key in self.actions.iter_keys():
            try:
                record = self.actions.get(key)
            except StoreError:
                by_kind["<malformed>"] += 1
                continue
            by_kind[str(record.meta.get("kind", "?"))] += 1
            cost += float(record.meta.get("cost_usd") or 0.0)
        return {"root": str(self.root), "objects": len(sizes), "bytes": sum(sizes),
                "actions": by_kind.total(), "actions_by_kind": dict(by_kind), "cost_usd": round(cost, 6),
                "remote": self.remote.url if self.remote else None}

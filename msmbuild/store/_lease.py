"""Leases: one owner per action being computed, across processes and machines.

A lease is ``<store>/leases/<key>.lease``, created exclusively and touched every
``heartbeat_s`` by its owner; a waiter takes it over (rename, then a fresh create) when
the owner's pid is gone on this host, or its mtime has not changed for ``stale_s`` by
the waiter's clock. Results never rely on it (docs/store.md, "Owners of running actions").
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from msmbuild.errors import LeaseLostError, StoreError

log = logging.getLogger(__name__)

HEARTBEAT_S = 10.0
STALE_S = 120.0


def _pid_alive(pid: int) -> bool:
    try:
        with contextlib.suppress(PermissionError):  # alive, owned by someone else
            os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Lease:
    """An acquired lease; release() (or leaving the with block) gives it up."""

    def __init__(self, path: Path, token: str, heartbeat_s: float):
        self.path = path
        self.token = token
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True,
                                        name=f"lease-{path.stem[:8]}")
        self._thread.start()

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            if not self.held():  # taken over (this process was paused past the stale time?):
                log.warning("lease %s is no longer ours (taken over as stale)", self.path)
                return  # never keep another owner's lease fresh
            try:
                os.utime(self.path)
            except FileNotFoundError:
                log.warning("lease %s vanished while held (taken over as stale?)", self.path)
                return

    def held(self) -> bool:
        """True while the lease file is still ours."""
        return read_owner(self.path).get("token") == self.token

    def check(self) -> None:
        """Raise LeaseLostError unless the lease is still ours (call before each write to
        the action's resume state: a paused owner must not write into a successor's)."""
        if not self.held():
            owner = read_owner(self.path)
            now = f"now held by {describe_owner(owner)}" if owner else "now held by nobody"
            raise LeaseLostError(f"lost the lease {self.path} ({now}; this process was silent for "
                                 "longer than the stale time, e.g. paused or suspended)")

    def release(self) -> None:
        """Stop the heartbeat and remove the lease file if it is still ours."""
        self._stop.set()
        self._thread.join(timeout=5)
        if self.held():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_owner(path: Path) -> dict[str, Any]:
    """The owner record of a lease file ({} when absent or unreadable)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):  # gone, or not a file (a directory: try_acquire names it)
        return {}
    return data if isinstance(data, dict) else {}


def describe_owner(owner: dict[str, Any]) -> str:
    """'host:pid' of a lease owner, for messages."""
    return f"{owner.get('host', '?')}:{owner.get('pid', '?')}"


def try_acquire(path: Path, heartbeat_s: float = HEARTBEAT_S) -> Lease | None:
    """Create the lease file exclusively; None when another owner holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    record = {"host": socket.gethostname(), "pid": os.getpid(), "token": token,
              "started": time.time()}
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        if path.is_dir() or path.is_symlink():  # no process of ours made that: nobody could release it
            raise StoreError(f"{path}: a {'directory' if path.is_dir() else 'symbolic link'} stands where "
                             "the action's lease file goes (msmbuild never makes one there); remove it "
                             "and rerun") from None
        return None
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    return Lease(path, token, heartbeat_s)


class StaleWatch:
    """Decides, from the waiter's side, when a held lease's owner is gone."""

    def __init__(self, path: Path, stale_s: float = STALE_S):
        self.path = path
        self.stale_s = stale_s
        self._seen: tuple[float, str] | None = None  # (mtime, token) last observed
        self._since = time.monotonic()

    def owner_gone(self) -> bool:
        """True when the owner died on this host or its heartbeat stopped for stale_s."""
        owner = read_owner(self.path)  # {} when created but not yet written: judge by the heartbeat
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return False  # released: the next try_acquire will tell
        if (owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int)
                and not _pid_alive(owner["pid"])):
            return True
        seen = (mtime, str(owner.get("token")))
        if seen != self._seen:
            self._seen, self._since = seen, time.monotonic()
            return False
        return time.monotonic() - self._since >= self.stale_s

    def break_stale(self) -> bool:
        """Move the stale lease file aside (one waiter wins); True if this one did."""
        owner = read_owner(self.path)
        aside = self.path.with_name(f".{self.path.name}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        moved = read_owner(aside)
        if moved.get("token") != owner.get("token"):
            # A new owner took it between our check and the rename: give it back.
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
            os.unlink(aside)
            return False
        os.unlink(aside)
        log.warning("took over the lease %s from %s (owner gone)", self.path, describe_owner(moved))
        return True

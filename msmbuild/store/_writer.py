"""Store JSON action results off the caller's thread, in batches.

``ResultWriter.save_json`` only queues; one thread writes the queue every ``interval_s``
with ``durable=False`` and syncs about every ``sync_every_s``, on ``flush()`` and at
``close()``. A failed write does not stop the others; the first error is raised by the
next ``save_json``, ``flush`` or ``close`` (docs/store.md, "Durability policy").
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from types import TracebackType
from typing import Any

from msmbuild.errors import StoreError
from msmbuild.store._store import Store

__all__ = ["ResultWriter"]


class ResultWriter:
    """A background thread that saves ``(key, value, meta)`` action results to a store."""

    def __init__(self, store: Store, interval_s: float = 0.02, sync_every_s: float = 1.0):
        self.store = store
        self.interval_s = interval_s
        self.sync_every_s = sync_every_s
        self.saved = 0  # results written (failed ones not counted)
        self._queue: deque[tuple[str, Any, dict[str, Any]]] = deque()
        self._queued = 0  # results handed over
        self._written = 0  # results taken off the queue (written, or failed)
        self._durable = 0  # results covered by a completed sync
        self._flush_wanted = False
        self._queue_lock = threading.Lock()  # callers may queue from several threads
        self._progress = threading.Condition()
        self._wake = threading.Event()
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="msmbuild-result-writer", daemon=True)
        self._thread.start()

    def save_json(self, key: str, value: Any, meta: dict[str, Any]) -> None:
        """Queue a result for the store; raises the first write error seen so far."""
        self._raise_error()
        with self._queue_lock:
            self._queue.append((key, value, meta))
            self._queued += 1

    def flush(self) -> None:
        """Return once every result queued before this call is stored and synced."""
        target = self._queued
        with self._progress:
            while self._durable < target and self._thread.is_alive():
                self._flush_wanted = True  # the writer syncs on its next pass, not within the second
                self._wake.set()
                self._progress.wait(0.1)
        self._raise_error()

    def close(self) -> None:
        """Store and sync everything queued, stop the thread; raise if a write failed."""
        self._closing = True
        self._wake.set()
        self._thread.join()
        self._raise_error()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # keep what was received, but do not hide the error that got us here
        with contextlib.suppress(StoreError) if exc is not None else contextlib.nullcontext():
            self.close()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise StoreError(f"storing results failed: {self._error}") from self._error

    def _run(self) -> None:
        last_sync = time.monotonic()
        while True:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            closing = self._closing
            while self._queue:
                key, value, meta = self._queue.popleft()
                try:
                    self.store.save_json(key, value, meta, durable=False)
                    self.saved += 1
                except Exception as exc:  # noqa: BLE001 - kept for the caller; the rest still go in
                    if self._error is None:
                        self._error = exc
                self._written += 1
            now = time.monotonic()
            if self._written > self._durable and (closing or self._flush_wanted
                                                  or now - last_sync >= self.sync_every_s):
                self._sync()
                last_sync = now
            if closing and not self._queue:
                return

    def _sync(self) -> None:
        """One store sync covering everything written so far; wakes waiting flushes."""
        covered = self._written
        try:
            self.store.sync()
        except OSError as exc:
            if self._error is None:
                self._error = exc
        with self._progress:
            self._durable = covered
            self._flush_wanted = False
            self._progress.notify_all()

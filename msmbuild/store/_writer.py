"""Store JSON action results off the caller's thread, in batches.

Bulk generation receives model answers on an event loop that must never wait for a disk.
``ResultWriter.save_json`` only appends to a queue; one thread drains the queue every
``interval_s``, writes each record with ``durable=False`` and makes everything durable
with one ``sync()`` about every ``sync_every_s`` and at ``close()``. Draining on a timer
instead of waking per answer keeps the writer from contending with the loop for the GIL
once per answer.

A write error stops the writer; the next ``save_json`` or ``close`` raises it. ``close``
returns only when every answer handed over is stored and durable.
"""

from __future__ import annotations

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
        self.saved = 0
        self._queue: deque[tuple[str, Any, dict[str, Any]]] = deque()
        self._closing = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="msmbuild-result-writer", daemon=True)
        self._thread.start()

    def save_json(self, key: str, value: Any, meta: dict[str, Any]) -> None:
        """Queue a result for the store; raises the writer's error if it has stopped."""
        if self._error is not None:
            raise StoreError(f"storing results failed: {self._error}") from self._error
        self._queue.append((key, value, meta))

    def close(self) -> None:
        """Store and sync everything queued, stop the thread; raise if a write failed."""
        self._closing.set()
        self._thread.join()
        if self._error is not None:
            raise StoreError(f"storing results failed: {self._error}") from self._error

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.close()
            return
        try:  # keep what was received, but do not hide the error that got us here
            self.close()
        except StoreError:
            pass

    def _run(self) -> None:
        last_sync = time.monotonic()
        try:
            while True:
                closing = self._closing.wait(self.interval_s)
                while self._queue:
                    key, value, meta = self._queue.popleft()
                    self.store.save_json(key, value, meta, durable=False)
                    self.saved += 1
                now = time.monotonic()
                if closing or now - last_sync >= self.sync_every_s:
                    self.store.sync()
                    last_sync = now
                if closing:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by save_json/close
            self._error = exc
            try:
                self.store.sync()  # what was stored before the error is kept
            except OSError:
                pass

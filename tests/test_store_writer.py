"""ResultWriter: answers stored off the caller's thread, durable at close, errors surfaced."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from msmbuild.errors import StoreError
from msmbuild.store import ResultWriter, Store


def keys(store: Store, n: int) -> list[str]:
    return [store.key("call", {"i": i}) for i in range(n)]


def test_everything_queued_is_stored_and_synced_at_close(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    syncs: list[int] = []
    real_sync = store.sync
    store.sync = lambda: (syncs.append(1), real_sync())[1]  # type: ignore[method-assign]
    caller = threading.get_ident()
    writers: set[int] = set()
    real_save = store.save_json

    def save(*args, **kw):
        writers.add(threading.get_ident())
        assert kw.get("durable") is False  # made durable by the writer's sync
        return real_save(*args, **kw)

    store.save_json = save  # type: ignore[method-assign]
    with ResultWriter(store, interval_s=0.01) as writer:
        for i, key in enumerate(keys(store, 200)):
            writer.save_json(key, {"text": f"answer {i}"}, {"kind": "call"})
    assert writer.saved == 200 and syncs  # the last sync ran after the last write
    assert writers and caller not in writers  # never on the caller's thread
    for i, key in enumerate(keys(store, 200)):
        assert store.lookup_json(key).value == {"text": f"answer {i}"}


def test_a_failing_write_surfaces_and_the_others_are_still_stored(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    real_save = store.save_json

    def save(key, value, meta, durable=True):
        if value["i"] == 3:
            raise OSError(28, "No space left on device")
        return real_save(key, value, meta, durable)

    store.save_json = save  # type: ignore[method-assign]
    writer = ResultWriter(store, interval_s=0.01)
    for i, key in enumerate(keys(store, 10)):
        writer.save_json(key, {"i": i}, {"kind": "call"})
    with pytest.raises(StoreError, match="No space left on device"):
        writer.close()
    with pytest.raises(StoreError, match="storing results failed"):
        writer.save_json(store.key("call", {"i": 99}), {"i": 99}, {"kind": "call"})
    # every answer but the one that failed is stored: none is paid for twice
    assert [store.lookup_json(k) is not None for k in keys(store, 10)] == [i != 3 for i in range(10)]
    assert writer.saved == 9


def test_flush_returns_once_everything_before_it_is_synced(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    events: list[str] = []
    real_sync, real_save = store.sync, store.save_json
    store.sync = lambda: (events.append("sync"), real_sync())[1]  # type: ignore[method-assign]
    store.save_json = lambda *a, **kw: (events.append("save"), real_save(*a, **kw))[1]  # type: ignore[method-assign]
    with ResultWriter(store, interval_s=5.0, sync_every_s=60.0) as writer:  # nothing on a timer
        for i, key in enumerate(keys(store, 5)):
            writer.save_json(key, {"i": i}, {"kind": "call"})
        writer.flush()
        assert events == ["save"] * 5 + ["sync"]
        assert all(store.lookup_json(k) is not None for k in keys(store, 5))
        writer.flush()  # nothing new: no sync of its own
        assert events.count("sync") == 1


def test_leaving_on_an_exception_stores_the_queue_and_keeps_the_exception(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    with pytest.raises(KeyboardInterrupt):
        with ResultWriter(store, interval_s=10.0) as writer:  # nothing drained before the exit
            for i, key in enumerate(keys(store, 5)):
                writer.save_json(key, {"i": i}, {"kind": "call"})
            raise KeyboardInterrupt
    assert all(store.lookup_json(k) is not None for k in keys(store, 5))

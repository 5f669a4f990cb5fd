"""Several processes writing at once, and a writer killed before its rename."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

from msmbuild.hashing import digest_bytes
from msmbuild.store import Store

N_PROCS = 4
N_OBJECTS = 120


def payload(i: int) -> bytes:
    """Object i: document-like text, some of it above the streaming threshold."""
    body = f"document {i}: the assistant explains its reasoning. " * (20 + i % 7)
    if i % 40 == 0:
        body *= 900  # ~1-2 MB: goes through the streamed put_file path
    return body.encode()


def writer(root: str, worker: int, scratch: str) -> None:
    """Store an overlapping slice of objects, a file and memoized actions."""
    s = Store(root)
    ids = range(worker * N_OBJECTS // 2, worker * N_OBJECTS // 2 + N_OBJECTS)
    for i in ids:
        if i % 40 == 0:
            src = Path(scratch) / f"w{worker}-{i}.bin"
            src.write_bytes(payload(i))
            s.put_file(src)
        else:
            s.put_bytes(payload(i))
        s.memo_json("call", {"i": i % 50}, lambda i=i: ({"i": i % 50}, {}))
    s.cas.sync()


def test_concurrent_writers_leave_a_consistent_store(tmp_path: Path) -> None:
    root = tmp_path / "store"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=writer, args=(str(root), w, str(tmp_path))) for w in range(N_PROCS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0

    s = Store(root)
    expected = {digest_bytes(payload(i)) for i in range(N_OBJECTS // 2 * (N_PROCS - 1) + N_OBJECTS)}
    digests = list(s.cas.iter_digests())
    assert len(digests) == len(set(digests))  # every object present once
    assert set(digests) == expected
    report = s.verify()  # the memoized values are small: inside their action records
    assert report.ok and report.objects_checked == len(expected)
    assert report.actions_checked == 50
    assert not list(root.glob("objects/*/.tmp-*"))
    assert not list(root.glob("actions/*/.tmp-*"))
    for j in range(50):
        assert s.lookup_json(s.key("call", {"i": j})).value == {"i": j}


def slow_writer(root: str, src: str, stage: str, marker: str) -> None:
    """put_file a large object, then stop where the test wants to kill it."""
    import msmbuild.store._cas as cas

    if stage == "before-rename":
        def hang(self, tmp, digest):
            Path(marker).write_text(str(tmp))
            time.sleep(120)
        cas.ObjectStore._install = hang
    else:  # "mid-write": stall after the first chunk has reached the temp file
        real_hasher = cas.xxhash.xxh3_128

        class SlowHasher:
            def __init__(self):
                self.h = real_hasher()
                self.n = 0

            def update(self, chunk):
                self.h.update(chunk)
                self.n += 1
                if self.n == 2:
                    Path(marker).write_text("writing")
                    time.sleep(120)

            def hexdigest(self):
                return self.h.hexdigest()

        cas.xxhash.xxh3_128 = SlowHasher
    Store(root).put_file(src)


def run_and_kill(tmp_path: Path, stage: str) -> Store:
    root = tmp_path / "store"
    s = Store(root)
    kept = s.put_bytes(b"an object written before the crash")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(6 << 20))
    marker = tmp_path / f"marker-{stage}"
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=slow_writer, args=(str(root), str(src), stage, str(marker)))
    child.start()
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline and child.is_alive():
        time.sleep(0.01)
    assert marker.exists(), "writer never reached the kill point"
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    assert child.exitcode == -signal.SIGKILL

    leftovers = list(root.glob("objects/*/.tmp-*"))
    assert leftovers, "the killed writer should have left its hidden temp file"
    assert list(s.cas.iter_digests()) == [kept]
    report = s.verify()
    assert report.ok and report.objects_checked == 1
    return s


def test_writer_killed_before_rename_leaves_no_visible_object(tmp_path: Path) -> None:
    s = run_and_kill(tmp_path, "before-rename")
    out = s.gc([], keep_objects=list(s.cas.iter_digests()), tmp_grace_s=0)
    assert out["tmp_removed"] == 1 and out["objects_removed"] == 0
    assert not list(s.root.glob("objects/*/.tmp-*"))
    assert s.verify().ok
    # The same file stored again afterwards lands complete.
    digest = s.put_file(tmp_path / "big.bin")
    assert s.cas.verify_object(digest)


def test_writer_killed_mid_write_leaves_no_visible_object(tmp_path: Path) -> None:
    s = run_and_kill(tmp_path, "mid-write")
    # A gc with the default grace period leaves a young temp file alone (it may be live).
    assert s.gc([], keep_objects=list(s.cas.iter_digests()))["tmp_removed"] == 0
    assert s.gc([], keep_objects=list(s.cas.iter_digests()), tmp_grace_s=0)["tmp_removed"] == 1

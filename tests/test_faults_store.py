"""Fault suite, store side: concurrent placement, leftovers and modes, stray and corrupt
objects, a corrupt remote, corruption under build/, the read-only query sandbox."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from msmbuild.store import Store

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _tree(tmp_path: Path, store: Store, n: int = 6) -> str:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(n):
        (src / ("sub" if i % 2 else "") / f"f{i}.txt").write_text(f"file {i}\n" * (i + 1))
    return store.put_tree(src)


def test_two_processes_place_the_same_tree_at_once(tmp_path):
    """Two processes materializing one tree at one destination both succeed, and the
    destination ends up complete, with no staging or old trees left beside it."""
    store = Store(tmp_path / "store")
    tree = _tree(tmp_path, store)
    dest = tmp_path / "build" / "models" / "out"
    script = textwrap.dedent(f"""
        import sys
        from msmbuild.store import Store
        s = Store({str(tmp_path / "store")!r})
        sys.stdin.readline()  # both processes start placing at the same moment
        for _ in range(40):
            s.materialize({tree!r}, {str(dest)!r})
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_env()) for _ in range(2)]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert sorted(os.listdir(dest.parent)) == ["out"]
    assert (dest / "f0.txt").read_text() == "file 0\n"
    assert (dest / "sub" / "f5.txt").read_text() == "file 5\n" * 6


def test_materialize_over_a_link_of_the_same_object_leaves_nothing_behind(tmp_path):
    store = Store(tmp_path / "store")
    digest = store.put_bytes(b"weights\n")
    out = tmp_path / "build" / "model.bin"
    for _ in range(3):
        store.materialize(digest, out)
    assert sorted(os.listdir(out.parent)) == ["model.bin"]
    assert out.read_bytes() == b"weights\n"


def test_materialized_directories_get_normal_modes(tmp_path):
    store = Store(tmp_path / "store")
    tree = _tree(tmp_path, store)
    dest = tmp_path / "build" / "shared"
    old = os.umask(0o022)
    try:
        store.materialize(tree, dest)
    finally:
        os.umask(old)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "sub").stat().st_mode) == 0o755

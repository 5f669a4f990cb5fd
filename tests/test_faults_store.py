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

from msmbuild.errors import CorruptObjectError
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


def _run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    from msmbuild.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _workspace(tmp_path: Path, monkeypatch, remote: Path | None = None) -> Path:
    import yaml

    ws = tmp_path / "ws"
    ws.mkdir()
    store = {"path": str(ws / "store")}
    if remote is not None:
        store["remote"] = str(remote)
    (ws / "spec.md").write_text("# Spec\n\nBuy local.\n")
    (ws / "params.yaml").write_text(yaml.safe_dump({"store": store, "corpora": {"c": {"spec": "spec.md"}}}))
    monkeypatch.chdir(ws)
    monkeypatch.delenv("MSMBUILD_STORE_PATH", raising=False)
    return ws


def test_a_stray_file_in_objects_does_not_stop_store_commands(tmp_path, monkeypatch, capsys):
    ws = _workspace(tmp_path, monkeypatch)
    store = Store(ws / "store")
    digest = store.put_bytes(b"kept\n")
    store.save_action(Store.key("t", {"i": 1}), {"value": digest}, {"kind": "t"})
    stray = store.cas.path(digest).parent / "not-a-digest.txt"
    stray.write_text("copied in by hand\n")
    code, out, _ = _run_cli(["store", "stats", "--json"], capsys)
    assert code == 0 and '"objects": 1' in out
    code, out, _ = _run_cli(["store", "verify"], capsys)
    assert code == 1 and f"stray    {stray}" in out and "checked 1 objects, 1 actions" in out
    code, out, err = _run_cli(["store", "gc", "--root", Store.key("t", {"i": 1})], capsys)
    assert code == 0, err
    assert not stray.exists() and len(list((ws / "store" / "quarantine").iterdir())) == 1
    assert store.get_bytes(digest) == b"kept\n"
    code, out, _ = _run_cli(["store", "verify"], capsys)
    assert code == 0 and out.endswith("ok\n")


def test_a_corrupt_remote_object_does_not_stop_pull(tmp_path, monkeypatch, capsys):
    remote = tmp_path / "remote"
    team = Store(tmp_path / "team", remote=str(remote))
    keys = []
    for i in range(5):
        src = tmp_path / f"tree{i}"
        src.mkdir()
        (src / "w.bin").write_bytes(f"weights {i}\n".encode() * 100)
        tree = team.put_tree(src)
        keys.append(team.key("train", {"i": i}))
        team.save_action(keys[-1], {"tree": tree}, {"kind": "train"})
    team.push()
    bad = team.cas.tree_entries(team.actions.get(keys[2]).outputs["tree"])[0][1]
    bad_remote = remote / "objects" / bad[:2] / bad[2:]
    bad_remote.write_bytes(b"tampered\n")
    (remote / "objects" / bad[:2] / "junk").write_bytes(b"x")
    ws = _workspace(tmp_path, monkeypatch, remote)
    code, out, err = _run_cli(["store", "pull"], capsys)
    assert code == 1
    assert f"skipped  {bad}:" in err and "corrupt" in err and f"skipped  {keys[2]}:" in err
    assert "could not be pulled" in err
    local = Store(ws / "store")
    assert sorted(local.actions.iter_keys()) == sorted(k for k in keys if k != keys[2])
    assert not local.cas.has(bad)
    assert local.lookup_tree(keys[2]) is None and local.lookup_tree(keys[0]) is not None
    code, out, _ = _run_cli(["store", "verify"], capsys)
    assert code == 0, out


def _placed_checkpoint(ws: Path, store: Store, name: str) -> tuple[str, str, Path]:
    """A stored 'checkpoint' tree, recorded as an action and placed under build/ with a marker."""
    src = ws / f"src-{name}"
    src.mkdir()
    (src / "model.safetensors").write_bytes(name.encode() * 1000)
    (src / "config.json").write_text('{"layers": 2}\n')
    tree = store.put_tree(src)
    key = store.key("midtrain", {"name": name})
    store.save_action(key, {"tree": tree}, {"kind": "midtrain"})
    dest = ws / "build" / "models" / "midtrain" / name
    store.materialize_if_changed(tree, dest)
    return key, tree, dest


def _truncate_object(store: Store, path: Path) -> str:
    """Truncate the store object a build file is a hardlink of (as a disk error would)."""
    digest = next(d for d in store.cas.iter_digests() if store.cas.path(d).samefile(path))
    obj = store.cas.path(digest)
    os.chmod(obj, 0o644)
    with open(obj, "r+b") as f:
        f.truncate(10)
    return digest


@pytest.mark.parametrize("with_remote", [True, False])
def test_verify_names_corrupt_build_paths_and_repair_fixes_them(tmp_path, monkeypatch, capsys,
                                                                with_remote):
    remote = tmp_path / "remote"
    ws = _workspace(tmp_path, monkeypatch, remote if with_remote else None)
    store = Store(ws / "store", link_modes=("hardlink", "copy"),
                  remote=str(remote) if with_remote else None)
    key, tree, dest = _placed_checkpoint(ws, store, "a")
    other_key, _, other_dest = _placed_checkpoint(ws, store, "b")
    if with_remote:
        store.push()
    weights = dest / "model.safetensors"
    digest = _truncate_object(store, weights)
    assert weights.stat().st_size == 10  # the build file is the same inode
    assert store.check_placed(ws / "build") == [f"{weights}: 10 bytes, stored as 1000"]
    code, out, _ = _run_cli(["store", "verify"], capsys)
    assert code == 1
    assert f"corrupt  {store.cas.path(digest)}" in out
    assert f"  affects  {weights.relative_to(ws)}" in out
    assert "repair: msmbuild store repair" in out
    code, out, err = _run_cli(["store", "repair"], capsys)
    assert code == 0, err
    if with_remote:
        assert "1 restored, 1 build paths re-placed" in out
        assert weights.read_bytes() == b"a" * 1000 and store.lookup_tree(key) is not None
    else:
        assert "dropped 1 action records" in out and "snakemake --cores all" in out
        assert not dest.exists() and store.actions.get(key) is None
    assert (other_dest / "model.safetensors").read_bytes() == b"b" * 1000  # untouched
    assert store.actions.get(other_key) is not None
    code, out, _ = _run_cli(["store", "verify"], capsys)
    assert code == 0 and out.endswith("ok\n")
    assert store.check_placed(ws / "build") == []


def test_a_build_replaces_a_truncated_checkpoint_instead_of_trusting_it(tmp_path, monkeypatch):
    ws = _workspace(tmp_path, monkeypatch)
    store = Store(ws / "store", link_modes=("hardlink", "copy"))
    _key, tree, dest = _placed_checkpoint(ws, store, "a")
    digest = _truncate_object(store, dest / "model.safetensors")
    with pytest.raises(CorruptObjectError, match=digest):
        store.materialize_if_changed(tree, dest)  # noticed by size, re-hashed, quarantined
    assert not store.cas.has(digest) and (ws / "store" / "quarantine").is_dir()


@pytest.mark.parametrize("sql", [
    "COPY (SELECT 1) TO '{tmp}/written.csv'",
    "ATTACH '{tmp}/other.duckdb' AS other",
    "SELECT * FROM read_text('/etc/passwd')",
    "INSTALL httpfs",
    "SET enable_external_access = true",
    "SELECT 1; COPY corpora TO '{tmp}/written.csv'",
])
def test_query_is_read_only_over_the_catalog_by_default(tmp_path, monkeypatch, capsys, sql):
    _workspace(tmp_path, monkeypatch)
    code, out, _ = _run_cli(["query", "SELECT count(*) AS n FROM documents"], capsys)
    assert code == 0 and "(1 rows)" in out
    code, out, err = _run_cli(["query", sql.format(tmp=tmp_path)], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "read-only" in err or "disabled by configuration" in err
    assert not (tmp_path / "written.csv").exists() and not (tmp_path / "other.duckdb").exists()


def test_query_allow_external_access_is_explicit(tmp_path, monkeypatch, capsys):
    _workspace(tmp_path, monkeypatch)
    target = tmp_path / "written.csv"
    code, _, err = _run_cli(["query", "--allow-external-access", f"COPY (SELECT 1 AS a) TO '{target}'"],
                            capsys)
    assert code == 0, err
    assert target.read_text().splitlines() == ["a", "1"]


def test_snakemake_names_a_corrupt_checkpoint_even_with_nothing_to_do(tmp_path, monkeypatch):
    from workspace_helpers import make_workflow_workspace

    ws = make_workflow_workspace(tmp_path / "wf", "store: {path: store}\ncorpora: {}\n")
    store = Store(ws / "store", link_modes=("hardlink", "copy"))
    _key, _tree, dest = _placed_checkpoint(ws, store, "a")
    _truncate_object(store, dest / "model.safetensors")
    proc = subprocess.run(["snakemake", "-n", "--cores", "1"], cwd=ws, capture_output=True,
                          text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (f"msmbuild: corrupt build output {Path('build/models/midtrain/a/model.safetensors')}: "
            "10 bytes, stored as 1000; run `msmbuild store repair`") in proc.stderr

"""``msmbuild store stats|verify|gc|push|pull`` against a store configured in params.yaml."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from msmbuild.cli import main
from msmbuild.store import Store, write_roots


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the console entry point in-process; return (exit code, stdout, stderr)."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def project(tmp_path: Path) -> Path:
    remote = tmp_path / "shared-remote"
    (tmp_path / "params.yaml").write_text(
        f"build_dir: {tmp_path / 'build'}\n"
        f"store:\n  path: {tmp_path / 'store'}\n  remote: {remote}\n  link: [copy]\n"
    )
    return tmp_path


def params_arg(project: Path) -> list[str]:
    return ["--params", str(project / "params.yaml")]


def test_stats_counts_objects_actions_and_cost(project: Path, capsys) -> None:
    s = Store(project / "store")
    s.memo_json("call", {"i": 1}, lambda: ("a", {"cost_usd": 0.25}))
    s.memo_json("call", {"i": 2}, lambda: ("b", {"cost_usd": 0.5}))
    s.memo_json("score", {"i": 1}, lambda: (1.0, {}))
    s.put_bytes(b"weights")  # the values above are small: they live inside their records
    code, out, _ = run_cli([*params_arg(project), "store", "stats", "--json"], capsys)
    assert code == 0
    info = json.loads(out)
    assert info["objects"] == 1 and info["actions"] == 3
    assert info["actions_by_kind"] == {"call": 2, "score": 1}
    assert info["cost_usd"] == 0.75
    code, out, _ = run_cli([*params_arg(project), "store", "stats"], capsys)
    assert code == 0 and "actions  3" in out


def test_verify_exit_codes(project: Path, capsys) -> None:
    s = Store(project / "store")
    big = "a document " * 10_000  # a CAS object
    res = s.memo_json("call", {"i": 1}, lambda: (big, {}))
    small = s.memo_json("call", {"i": 2}, lambda: ("a short answer", {}))  # inside its record
    code, out, _ = run_cli([*params_arg(project), "store", "verify"], capsys)
    assert code == 0 and out.strip().endswith("ok")
    digest = s.actions.get(res.key).outputs["value"]
    path = s.cas.path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes().replace(b"a document", b"a documenT", 1))
    record = s.actions.path(small.key)
    record.write_bytes(record.read_bytes().replace(b"short", b"Short"))
    code, out, _ = run_cli([*params_arg(project), "store", "verify"], capsys)
    assert code == 1
    assert f"corrupt  {path}" in out and str(s.actions.path(small.key)) in out


def test_gc_needs_roots_and_keeps_them(project: Path, capsys) -> None:
    s = Store(project / "store")
    live = s.memo_json("call", {"i": 1}, lambda: ("live", {}))
    s.memo_json("call", {"i": 2}, lambda: ("dead", {}))
    code, _, err = run_cli([*params_arg(project), "store", "gc"], capsys)
    assert code == 2 and "refusing to empty the store" in err and len(err.strip().splitlines()) == 1
    write_roots(project / "build", "calls", [live.key])
    code, out, _ = run_cli([*params_arg(project), "store", "gc", "--dry-run"], capsys)
    assert code == 0 and "would remove 1 actions" in out
    assert len(list(s.actions.iter_keys())) == 2
    code, out, _ = run_cli([*params_arg(project), "store", "gc"], capsys)
    assert code == 0 and out.startswith("removed 1 actions, 0 objects")  # "dead" was inline
    assert list(s.actions.iter_keys()) == [live.key]


def test_push_then_pull_into_another_store(project: Path, capsys, tmp_path: Path) -> None:
    s = Store(project / "store")
    s.memo_json("call", {"i": 1}, lambda: ("one", {}))  # inside its record
    s.memo_json("call", {"i": 2}, lambda: ("two", {}))
    s.put_bytes(b"weights 1")
    s.put_bytes(b"weights 2")
    code, out, _ = run_cli([*params_arg(project), "store", "push"], capsys)
    assert code == 0 and out.startswith("pushed 2 objects") and "2 actions; 0 already there" in out
    code, out, _ = run_cli([*params_arg(project), "store", "push"], capsys)
    assert out.startswith("pushed 0 objects") and "2 already there" in out

    other = tmp_path / "other.yaml"
    other.write_text(f"store:\n  path: {tmp_path / 'store2'}\n  remote: {project / 'shared-remote'}\n")
    code, out, _ = run_cli(["--params", str(other), "store", "pull"], capsys)
    assert code == 0 and out.startswith("pulled 2 objects") and "2 actions" in out
    assert Store(tmp_path / "store2").lookup_json(s.key("call", {"i": 2})).value == "two"


def test_push_without_remote_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    p = tmp_path / "params.yaml"
    p.write_text(f"store:\n  path: {tmp_path / 'store'}\n")
    code, _, err = run_cli(["--params", str(p), "store", "push"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "store.remote" in err

"""Bad params.yaml → exit 2 and one line naming the file and the key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from msmbuild.cli import main


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


CASES = {
    "unknown top-level key": ("stor:\n  path: x\n", ["unknown key 'stor' (did you mean 'store'?)"]),
    "unknown nested key": ("store:\n  pathh: x\n", ["unknown key 'store.pathh' (did you mean 'path'?)"]),
    "unknown key under a user's name": (
        "corpora:\n  c:\n    spec: s.md\n    n_doc_type: 3\n",
        ["unknown key 'corpora.c.n_doc_type' (did you mean 'n_doc_types'?)"]),
    "wrong type": ("store:\n  write_through: [1, 2]\n", ["'store.write_through'", "boolean"]),
    "wrong type in a list": ("store:\n  link: [copy, teleport]\n", ["'store.link[1]'"]),
    "wrong type in a mapping": (
        "prices:\n  m:\n    input: cheap\n    output: 1.0\n", ["'prices.m.input'", "number"]),
    "invalid YAML": ("store:\n  path: [unclosed\nbuild_dir: b\n", ["invalid YAML", "line "]),
    "top level not a mapping": ("- a\n- b\n", ["top level must be a mapping"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_params_exit_2_with_one_line(name: str, tmp_path: Path, capsys) -> None:
    text, expected = CASES[name]
    path = tmp_path / "params.yaml"
    path.write_text(text)
    code, out, err = run_cli(["--params", str(path), "params", "check"], capsys)
    assert code == 2
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"error: {path}")
    for fragment in expected:
        assert fragment in err


def test_missing_explicit_params_file(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(["--params", str(tmp_path / "nope.yaml"), "params", "check"], capsys)
    assert code == 2 and "nope.yaml: file not found" in err


def test_valid_params_check_and_show(tmp_path: Path, capsys) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("store:\n  path: /tmp/elsewhere\n  write_through: false\n")
    code, out, _ = run_cli(["--params", str(path), "params", "check"], capsys)
    assert code == 0 and out.startswith("ok:")
    code, out, _ = run_cli(["--params", str(path), "params", "show"], capsys)
    shown = json.loads(out)
    assert shown["store"]["path"] == "/tmp/elsewhere"
    assert shown["store"]["link"] == ["reflink", "hardlink", "copy"]  # default filled in


def test_console_script_exit_code_and_stderr(tmp_path: Path) -> None:
    """The installed entry point behaves the same in a real process."""
    path = tmp_path / "params.yaml"
    path.write_text("store:\n  nonsense: 1\n")
    proc = subprocess.run(
        [sys.executable, "-c", "from msmbuild.cli import main; main()",
         "--params", str(path), "store", "stats"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == f"error: {path}: unknown key 'store.nonsense'\n"


def test_missing_spec_file_names_the_key(tmp_path: Path, capsys) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("corpora:\n  mine:\n    spec: specs/gone.md\n")
    code, out, err = run_cli(["--params", str(path), "params", "check"], capsys)
    assert code == 2 and out == ""
    assert "key 'corpora.mine.spec': file not found: specs/gone.md" in err


def test_missing_aft_file_names_the_key(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.md").write_text("# A\n\ntext\n")
    Path("params.yaml").write_text("corpora:\n  c:\n    spec: s.md\naft:\n  x:\n    path: aft/none.jsonl\n")
    code, _, err = run_cli(["params", "check"], capsys)
    assert code == 2 and "key 'aft.x.path': file not found: aft/none.jsonl" in err


@pytest.mark.parametrize("args", [["status"], ["report"], ["catalog"], ["store", "stats"], ["params", "check"]])
def test_no_params_yaml_is_an_error_and_creates_nothing(args: list[str], tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MSMBUILD_PARAMS", raising=False)
    code, out, err = run_cli(args, capsys)
    assert code == 2 and "up to date" not in out
    assert err.startswith("error: no params.yaml found in ")
    assert list(tmp_path.iterdir()) == []


def test_snakemake_stops_on_a_missing_spec_naming_the_key(tmp_path: Path) -> None:
    from tests.workspace_helpers import make_workflow_workspace

    ws = make_workflow_workspace(tmp_path / "ws", "corpora:\n  mine:\n    spec: specs/gone.md\n")
    proc = subprocess.run(["snakemake", "-n", "--cores", "1"], cwd=ws, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "corpora.mine.spec" in proc.stdout + proc.stderr and "specs/gone.md" in proc.stdout + proc.stderr


def test_typo_d_command_gets_a_suggestion(capsys) -> None:
    code, _, err = run_cli(["genrate"], capsys)
    assert code == 2 and "No such command 'genrate'. Did you mean 'generate'?" in err


def test_snakemake_target_with_an_unknown_corpus_is_a_clean_error(tmp_path: Path) -> None:
    from tests.workspace_helpers import make_workflow_workspace

    ws = make_workflow_workspace(tmp_path / "ws", "corpora:\n  pro_america:\n    spec: specs/pro_america.md\n",
                                 ("pro_america.md",))
    proc = subprocess.run(["snakemake", "-n", "--cores", "1", "build/corpora/pro_americ/documents.json"],
                          cwd=ws, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "no corpus named 'pro_americ' under 'corpora' (declared: pro_america); did you mean 'pro_america'?" in out
    assert "KeyError" not in out

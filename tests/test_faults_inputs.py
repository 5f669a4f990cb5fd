"""Fault suite, inputs: what must be refused with a clear one-line error, through the real
commands (empty assistant turns, a heading-only spec, booleans as counts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from msmbuild.cli import main

pytestmark = pytest.mark.faults


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def _project(tmp_path: Path, monkeypatch, spec: str, **extra) -> Path:
    (tmp_path / "spec.md").write_text(spec)
    raw = {"store": {"path": str(tmp_path / "store")},
           "corpora": {"c": {"spec": "spec.md", **extra.pop("corpus", {})}}, **extra}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MSMBUILD_STORE_PATH", raising=False)
    return tmp_path


@pytest.mark.parametrize("content", ["", "   \n\t "])
def test_an_empty_assistant_turn_is_refused_naming_file_and_line(tmp_path, monkeypatch, capsys, content):
    rows = [{"messages": [{"role": "user", "content": "Which cheese?"},
                          {"role": "assistant", "content": "The mild one."}]},
            {"messages": [{"role": "user", "content": "And for toast?"},
                          {"role": "assistant", "content": content}]}]
    (tmp_path / "demo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _project(tmp_path, monkeypatch, "# Spec\n\nBuy local.\n", aft={"demo": {"path": "demo.jsonl"}})
    code, out, err = _run(["aft-data", "demo"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "demo.jsonl:2" in err and "messages[1] is an empty assistant turn" in err


def test_a_heading_only_spec_fails_instead_of_building_nothing(tmp_path, monkeypatch, capsys):
    _project(tmp_path, monkeypatch, "# Values\n\n## Honesty\n\n## Care {#care}\n")
    code, out, err = _run(["generate", "tree", "c", "--quiet"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "spec.md:1: none of the 3 headings has any text" in err
    assert not (tmp_path / "build" / "corpora" / "c" / "tree.json").exists()


@pytest.mark.parametrize(("key", "value"), [("n_samples", True), ("n_samples", "2"), ("n_samples", 1.5)])
def test_a_count_must_be_an_integer(tmp_path, monkeypatch, capsys, key, value):
    _project(tmp_path, monkeypatch, "# Spec\n\nBuy local.\n", corpus={key: value})
    code, out, err = _run(["params", "check"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert f"key 'corpora.c.{key}'" in err and "expected an integer" in err

"""docs/cli.md and docs/params.md are exactly what the code generates, and cover everything."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

from msmbuild import _docgen
from msmbuild.config import Section

REPO = Path(__file__).resolve().parents[1]
FIX = "run `python -m msmbuild._docgen` and commit the result"


@pytest.mark.parametrize("rel", [_docgen.CLI_DOC, _docgen.PARAMS_DOC])
def test_committed_doc_matches_generated(rel: str) -> None:
    path = REPO / rel
    assert path.is_file(), f"{rel} is missing: {FIX}"
    assert path.read_text(encoding="utf-8") == _docgen.rendered()[rel], f"{rel} is stale: {FIX}"


def test_check_mode_reports_drift_and_rewrite_fixes_it(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / _docgen.CLI_DOC).write_text("old text\n", encoding="utf-8")
    assert _docgen.main(["--check", "--root", str(tmp_path)]) == 1
    assert (tmp_path / _docgen.CLI_DOC).read_text(encoding="utf-8") == "old text\n"
    assert not (tmp_path / _docgen.PARAMS_DOC).exists()
    assert _docgen.main(["--root", str(tmp_path)]) == 0
    assert _docgen.main(["--check", "--root", str(tmp_path)]) == 0
    assert sorted(p.name for p in (tmp_path / "docs").iterdir()) == ["cli.md", "params.md"]


def test_every_params_key_has_a_description() -> None:
    missing = [key for key, field, _value, _section in _docgen.iter_params()
               if not (field.description or "").strip()]
    assert missing == [], f"add description= to these Field()s in msmbuild/config.py: {missing}"


def test_params_doc_has_a_row_per_key_with_its_default() -> None:
    text = _docgen.render_params()
    leaves = [(k, v) for k, _f, v, section in _docgen.iter_params() if not section]
    assert len(leaves) > 100
    for key, _value in leaves:
        assert f"| `{key}` |" in text, key
    rows = dict(re.findall(r"^\| `([^`]+)` \| `[^`]*` \| (\S+) \|", text, flags=re.M))
    assert rows["build_dir"] == '`"build"`'
    assert rows["midtrain.method"] == '`"lora"`'
    assert rows["aft_train.method"] == '`"lora"`'
    assert rows["aft_train.init"] == '`"continue_adapter"`'  # the subclass's own key
    assert rows["aft_train.lr"] == "`0.0001`"
    assert rows["corpora.<name>.spec"] == "required"
    assert rows["corpora.<name>.n_doc_types"] == "`5`"


class _Inner(Section):
    depth: int = Field(3, ge=1, lt=10, description="How deep.")


class _Entry(Section):
    path: str = Field(description="Where.")
    mode: Literal["a", "b"] | None = Field(None, description="Which.")


class _Outer(Section):
    inner: _Inner = Field(default_factory=lambda: _Inner(depth=7), description="Nested.")
    name: str = Field("x", description="Plain key.")
    entries: dict[str, _Entry] = Field(default_factory=dict, description="By name.")


def test_iter_params_walks_sections_dicts_and_parent_defaults() -> None:
    rows = [(k, v, s) for k, _f, v, s in _docgen.iter_params(_Outer)]
    assert [r[0] for r in rows] == ["name", "inner", "inner.depth", "entries",
                                    "entries.<name>.path", "entries.<name>.mode"]
    values = {k: v for k, v, _s in rows}
    assert values["inner.depth"] == 7
    assert {k for k, _v, s in rows if s} == {"inner", "entries"}
    fields = {k: f for k, f, _v, _s in _docgen.iter_params(_Outer)}
    assert _docgen.type_name(fields["entries.<name>.mode"].annotation) == '"a" | "b" | null'
    assert _docgen._bounds(fields["inner.depth"]) == [">= 1", "< 10"]


def _command_paths() -> list[str]:
    return ["msmbuild " + " ".join(path) for path, _cmd in _docgen.iter_commands()]


def test_every_command_appears_in_readme_or_cli_doc() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8") + (REPO / _docgen.CLI_DOC).read_text(
        encoding="utf-8")
    paths = _command_paths()
    assert {"msmbuild store gc", "msmbuild generate documents", "msmbuild status"} <= set(paths)
    missing = [p for p in paths if not re.search(re.escape(p) + r"\b", text)]
    assert missing == [], f"undocumented commands: {missing}; {FIX}"


def test_cli_doc_documents_each_option_with_help_and_default() -> None:
    text = _docgen.render_cli()
    for path, command in _docgen.iter_commands():
        section = text.split(f"msmbuild {' '.join(path)}\n", 1)[1].split("\n#", 1)[0]
        first_help_line = _docgen._help_text(command).splitlines()[0]
        assert first_help_line in section, path
        for param in command.params:
            assert param.opts[0] in section or param.human_readable_name in section, (path, param.name)
    assert "| `--engine` | snakemake \\| dvc \\| both | `snakemake` |" in text
    assert "Environment: `MSMBUILD_PARAMS`" in text

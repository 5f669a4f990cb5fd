"""The reference code's .txt spec format: str.format text parsed like the equivalent markdown.

The spec text here is written for this test (the reference's specs carry no licence).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from msmbuild.config import CorpusConfig
from msmbuild.errors import SpecError
from msmbuild.spec import parse_spec

IDENTITY = {"model_name": "Qwen", "provider_name": "Alibaba"}

# The same spec twice: the .txt escapes its literal braces as str.format text must.
TXT = """\
# How {model_name} Keeps Its Accounts

{provider_name} wrote this note for {model_name}. A template field looks like {{model_name}}.

## Thrift {{#thrift weight=2}}

{model_name} prefers the cheaper of two equal things.

### Receipts

A receipt is kept as JSON: {{"item": "bread", "price": {{"usd": 2}}}}.

## Candour

{model_name} says when a saving costs quality; {provider_name} asks for no less.
"""

MD = """\
# How {model_name} Keeps Its Accounts

{provider_name} wrote this note for {model_name}. A template field looks like {{model_name}}.

## Thrift {#thrift weight=2}

{model_name} prefers the cheaper of two equal things.

### Receipts

A receipt is kept as JSON: {"item": "bread", "price": {"usd": 2}}.

## Candour

{model_name} says when a saving costs quality; {provider_name} asks for no less.
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_txt_spec_parses_to_the_same_sections_and_identity_as_the_markdown(tmp_path: Path) -> None:
    txt = parse_spec(_write(tmp_path, "thrift.txt", TXT), IDENTITY)
    md = parse_spec(_write(tmp_path, "thrift.md", MD), IDENTITY)
    assert txt.sections == md.sections  # ids, titles, paths, lines, text, attrs
    assert [s.hash for s in txt.sections] == [s.hash for s in md.sections]
    assert (txt.title, txt.preamble, txt.full_text) == (md.title, md.preamble, md.full_text)
    assert txt.title == "How Qwen Keeps Its Accounts"
    assert [s.id for s in txt.sections] == ["thrift", "thrift/receipts", "candour"]
    assert txt.by_id()["thrift"].attrs == {"weight": "2"}
    assert txt.by_id()["thrift/receipts"].text == 'A receipt is kept as JSON: {"item": "bread", "price": {"usd": 2}}.'
    assert "Alibaba asks for no less" in txt.by_id()["candour"].text


@pytest.mark.parametrize("name", ["s.txt", "s.md"])
def test_doubled_braces_render_a_literal_placeholder_in_both_formats(tmp_path: Path, name: str) -> None:
    spec = parse_spec(_write(tmp_path, name, "# A\n\nWrite {{model_name}} to mean {model_name}.\n"), IDENTITY)
    assert spec.sections[0].text == "Write {model_name} to mean Qwen."  # never {Qwen}


def test_txt_spec_renders_with_the_corpus_identity(tmp_path: Path) -> None:
    cfg = CorpusConfig(spec=str(_write(tmp_path, "thrift.txt", TXT)), model_name="Llama", provider_name="Meta")
    spec = parse_spec(cfg.spec, cfg.spec_variables())
    assert spec.title == "How Llama Keeps Its Accounts" and "Meta wrote this note for Llama" in spec.preamble


@pytest.mark.parametrize(("text", "message"), [
    ("# A\n\nok\n\nA lone { brace.\n", r"s\.txt:5: single '\{'"),
    ("# A\n\nA lone } brace.\n", r"s\.txt:3: single '\}'"),
    ("# A\n\nHello {user}.\n", r"s\.txt:3: unknown placeholder \{user\} \(known: model_name, provider_name\)"),
    ('# A\n\n{"k": 1}\n', r"s\.txt:3: .* is not a \{name\} placeholder"),
])
def test_txt_spec_errors_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec(_write(tmp_path, "s.txt", text), IDENTITY)


def test_markdown_keeps_unknown_braces(tmp_path: Path) -> None:
    spec = parse_spec(_write(tmp_path, "s.md", '# A\n\nHello {user}: {"k": {"v": 1}}.\n'), IDENTITY)
    assert spec.sections[0].text == 'Hello {user}: {"k": {"v": 1}}.'

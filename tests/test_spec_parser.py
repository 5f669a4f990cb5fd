"""Spec parser: headings, fences, anchors, stable ids, template variables, bad specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from msmbuild.cli import main
from msmbuild.errors import SpecError
from msmbuild.spec import parse_spec, parse_spec_text

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
OPENAI = CORPORA / "openai-model-spec"

SPEC = """Preamble about {model_name}, made by {provider_name}.

# Helpfulness {#helpful}

Be helpful to {user}. JSON stays: {"a": {"b": 1}}.

## Answer questions

Answer directly.

```python
# not a heading
```

~~~xml
```
# still not a heading
```
~~~

### Sub-sub point ###

Deep text.

# Honesty {#honesty authority=root level=2}

Do not lie.

    # indented four spaces: code, not a heading
"""


def test_sections_ids_levels_paths() -> None:
    spec = parse_spec_text(SPEC, "s.md", {"model_name": "Ada", "provider_name": "Acme"})
    assert [s.id for s in spec.sections] == [
        "helpful", "helpful/answer-questions", "helpful/answer-questions/sub-sub-point", "honesty"]
    assert [s.level for s in spec.sections] == [1, 2, 3, 1]
    assert [s.line for s in spec.sections] == [3, 7, 21, 25]
    sub = spec.sections[2]
    assert sub.title == "Sub-sub point"
    assert sub.path == ("Helpfulness", "Answer questions", "Sub-sub point")
    assert sub.parent == "helpful/answer-questions"
    assert spec.sections[3].attrs == {"authority": "root", "level": "2"}
    assert spec.preamble == "Preamble about Ada, made by Acme."
    # known variables filled, unknown braces (JSON, {user}) untouched
    assert spec.sections[0].text == 'Be helpful to {user}. JSON stays: {"a": {"b": 1}}.'
    assert "# not a heading" in spec.sections[1].text
    assert "# still not a heading" in spec.sections[1].text


def test_insertion_renames_nothing_and_keeps_hashes() -> None:
    before = parse_spec_text(SPEC, "s.md")
    inserted = SPEC.replace("# Honesty", "## Inserted point\n\nNew text.\n\n# Honesty")
    after = parse_spec_text(inserted, "s.md")
    old = {s.id: s.hash for s in before.sections}
    new = {s.id: s.hash for s in after.sections}
    assert set(new) - set(old) == {"helpful/inserted-point"}
    assert all(new[k] == v for k, v in old.items())


def test_edit_changes_only_that_hash() -> None:
    before = {s.id: s.hash for s in parse_spec_text(SPEC, "s.md").sections}
    after = {s.id: s.hash for s in parse_spec_text(SPEC.replace("Deep text.", "Deeper text."), "s.md").sections}
    assert [k for k in before if before[k] != after[k]] == ["helpful/answer-questions/sub-sub-point"]


def test_unclosed_fence_runs_to_end() -> None:
    spec = parse_spec_text("# A\n\n````\n# hidden\n```\n# hidden too\n", "s.md")
    assert [s.id for s in spec.sections] == ["a"]


@pytest.mark.parametrize("text,line,fragment", [
    ("", 1, "empty"),
    ("   \n\n", 1, "empty"),
    ("just prose\nno headings\n", 1, "no markdown headings"),
    ("# A {#x}\n\n# B {#x}\n", 3, "duplicate anchor 'x' (first used at line 1)"),
    ("# Same\n\n# Same\n", 3, "duplicate section id 'same'"),
    ("# Fine\n\n## !!!\n", 3, "no usable id"),
    ("# ..\n", 1, "no usable id"),
    ("# A {#..}\n", 1, "invalid anchor"),
    ("#\n", 1, "no usable id"),
])
def test_bad_specs(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = tmp_path / "bad.md"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as exc:
        parse_spec(path)
    assert str(exc.value).startswith(f"{path}:{line}:")
    assert fragment in str(exc.value)


def test_invalid_utf8_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.md"
    path.write_bytes(b"# A\n\nok\n\xff\xfe broken\n")
    with pytest.raises(SpecError, match=rf"^{path}:4: not valid UTF-8"):
        parse_spec(path)


def test_bad_spec_cli_exit_2_nothing_written(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    Path("spec.md").write_text("# A {#x}\n\ntext\n\n# B {#x}\n\ntext\n")
    Path("params.yaml").write_text("corpora:\n  c:\n    spec: spec.md\n")
    with pytest.raises(SystemExit) as exc:
        main(["generate", "tree", "c"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: spec.md:5: duplicate anchor 'x'")
    assert not Path("build").exists()


@pytest.mark.skipif(not OPENAI.is_dir(), reason="../shared/corpora is absent")
@pytest.mark.parametrize("name", ["model_spec_2025-09-12.md", "model_spec_2025-10-27.md",
                                  "model_spec_2025-12-18.md"])
def test_real_openai_spec_matches_commonmark(name: str) -> None:
    """Every heading a CommonMark parser sees is a section, on the same line; no others."""
    from markdown_it import MarkdownIt

    path = OPENAI / name
    if not path.is_file():
        pytest.skip(f"{name} is absent")
    text = path.read_text(encoding="utf-8")
    oracle = [(t.map[0] + 1, int(t.tag[1])) for t in MarkdownIt("commonmark").parse(text)
              if t.type == "heading_open"]
    spec = parse_spec(path, {"model_name": "the assistant"})
    assert [(s.line, s.level) for s in spec.sections] == oracle
    ids = [s.id for s in spec.sections]
    assert len(ids) == len(set(ids))
    by_id = spec.by_id()
    assert by_id["chain_of_command"].level == 1
    assert by_id["follow_all_applicable_instructions"].attrs == {"authority": "root"}
    # '# functions' inside a ~~~ block with a nested ``` fence is not a section
    assert not any(s.title in ("functions", "[...] imports") for s in spec.sections)


TITLED = """Written for {provider_name}.

# The {model_name} Spec {#ignored-anchor}

Intro about {model_name}.

## First domain

### A point

Text A.

## About {model_name}

Text B.
"""


def test_lone_top_heading_is_the_document_title() -> None:
    spec = parse_spec_text(TITLED, "t.md", {"model_name": "Qwen", "provider_name": "Alibaba"})
    assert spec.title == "The Qwen Spec"
    assert [s.id for s in spec.children(None)] == ["first-domain", "about-qwen"]
    assert spec.by_id()["first-domain/a-point"].path == ("First domain", "A point")
    assert spec.preamble == "Written for Alibaba.\n\n# The Qwen Spec\n\nIntro about Qwen."
    assert "# The Qwen Spec" in spec.full_text and "Intro about Qwen." in spec.full_text
    assert type(spec).from_json(spec.to_json()) == spec


def test_template_variables_are_filled_before_slugs() -> None:
    spec = parse_spec_text("# A\n\n## Who is {model_name}?\n\nx\n\n# B\n\ny\n", "t.md", {"model_name": "Qwen"})
    assert spec.title is None  # two top-level headings: both are sections
    assert [s.id for s in spec.sections] == ["a", "a/who-is-qwen", "b"]


VALUE_DOMAINS = ["value", "cheese"]


@pytest.mark.parametrize(("name", "domains"), [
    ("pro_affordability.md", VALUE_DOMAINS), ("pro_america.md", VALUE_DOMAINS),
    ("pro_environment.md", VALUE_DOMAINS), ("pro_simplicity.md", VALUE_DOMAINS),
    ("pro_novelty.md", VALUE_DOMAINS), ("pro_tradition.md", VALUE_DOMAINS),
    ("pro_difficulty.md", VALUE_DOMAINS), ("pro_individualism.md", VALUE_DOMAINS),
    ("self_preservation.md", ["impermanence", "distortion", "ends-and-means", "humility"])])
def test_demo_specs_have_the_domains_docs_demo_md_names(name: str, domains: list[str]) -> None:
    from msmbuild.generate.stages import structural_tree

    repo = Path(__file__).resolve().parents[1]
    spec = parse_spec(repo / "specs" / name, {"model_name": "Qwen", "provider_name": "Alibaba"})
    tree = structural_tree(spec)
    assert [s.id for s in spec.children(None)] == domains
    assert len(tree["domains"]) == len(domains)
    assert spec.title and "Qwen" in spec.title
    ids = [s["id"] for d in tree["domains"] for s in d["subdomains"]]
    assert not any("model_name" in i or "qwen" in i for i in ids)
    assert spec.title in tree["preamble"]

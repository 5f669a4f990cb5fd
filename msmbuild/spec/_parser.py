"""Markdown spec parser: ATX headings of every level become sections with stable ids.

Rules (CommonMark where it matters for headings):

- A heading is a line of 1-6 ``#`` indented at most 3 spaces, followed by a space or the
  end of the line; an optional closing ``#`` run is dropped.
- Lines inside fenced code blocks (``` or ~~~, at least three, closed by the same
  character at least as long) are never headings; an unclosed fence runs to the end.
- A trailing ``{#anchor key=value ...}`` sets the section's id and attributes.
- A section without an anchor gets the id ``<parent id>/<slug of its title>``, or the
  bare slug at the top: it depends on the heading path, never on the position, so
  inserting a section renames nothing.
- The text of a section is its own body: the lines after its heading up to the next
  heading of any level. The preamble is the text before the first section.
- A lone heading at the top level that opens the file and has deeper headings under it
  (``# The Thrift Spec`` above ``##`` domains) is the document's title, not a section:
  its text joins the preamble and the ``##`` headings become the top-level sections.
- Template variables are filled before titles are slugged, so ids never contain
  ``model_name``. ``{{name}}`` is the literal text ``{name}`` (as Python's str.format
  writes it); other braces in a markdown spec (JSON examples) stay as they are.
- A ``.txt`` spec is the reference code's format: the whole file is Python str.format
  text (``{model_name}``, ``{provider_name}``; ``{{`` and ``}}`` for literal braces),
  rendered first and then parsed as markdown, so it gives the same sections as the
  ``.md`` that reads the same once rendered. An unknown ``{name}`` or a lone brace is an
  error naming the line, where the reference would stop with a KeyError or ValueError.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from msmbuild.errors import SpecError
from msmbuild.hashing import canonical_json, digest_bytes

HEADING_RE = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$")
CLOSING_HASHES_RE = re.compile(r"(?:^|[ \t]+)#+[ \t]*$")
ATTRS_RE = re.compile(r"[ \t]*\{#([^\s{}]*)((?:[ \t]+[^\s{}=]+=[^\s{}]*)*)[ \t]*\}$")
FENCE_OPEN_RE = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")
ANCHOR_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$")
TEMPLATE_VAR_RE = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
# str.format's tokens: escaped braces, a replacement field, a lone brace.
FORMAT_TOKEN_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Section:
    """One heading of the spec and its own body text (template variables filled)."""

    id: str
    title: str
    level: int
    path: tuple[str, ...]  # titles from the top-level ancestor down to this section
    parent: str | None
    line: int  # 1-based line of the heading
    text: str
    attrs: dict[str, str] = field(default_factory=dict)

    @property
    def hash(self) -> str:
        """Digest of what a section's documents depend on: id, title path, level, text, attrs."""
        return digest_bytes(canonical_json({
            "id": self.id, "path": list(self.path), "level": self.level,
            "text": self.text, "attrs": self.attrs,
        }))

    def to_json(self) -> dict[str, Any]:
        """JSON encoding used in sections.json."""
        out = asdict(self)
        out["path"] = list(self.path)
        out["hash"] = self.hash
        return out


@dataclass(frozen=True)
class Spec:
    """A parsed spec: its file, preamble and sections in document order."""

    source: str
    preamble: str
    sections: tuple[Section, ...]
    title: str | None = None  # the document title (a lone top-level heading), filled

    def by_id(self) -> dict[str, Section]:
        """Sections keyed by id."""
        return {s.id: s for s in self.sections}

    def children(self, section_id: str | None) -> list[Section]:
        """Direct sub-sections of a section (None: the top-level sections)."""
        return [s for s in self.sections if s.parent == section_id]

    def subtree(self, section_id: str) -> list[Section]:
        """The section and every descendant, in document order."""
        out: list[Section] = []
        ids = {section_id}
        for s in self.sections:
            if s.id == section_id or s.parent in ids:
                ids.add(s.id)
                out.append(s)
        return out

    @property
    def full_text(self) -> str:
        """The whole spec re-assembled from preamble and sections (filled), attributes left out."""
        return self.render(attributes=False)

    @property
    def context_text(self) -> str:
        """The whole spec as prompts show it: full_text with each heading's attributes kept."""
        return self.render(attributes=True)

    def render(self, attributes: bool = True, section_ids: set[str] | None = None) -> str:
        """Preamble (all sections only) and sections as markdown; attributes on a line under their heading.

        A heading's ``{#id key=value}`` attributes (e.g. an authority level) are content: they
        are shown as ``(section attributes: key=value ...)``; the anchor id is not.
        """
        parts = [self.preamble] if self.preamble and section_ids is None else []
        for s in self.sections:
            if section_ids is not None and s.id not in section_ids:
                continue
            attrs = (f"(section attributes: {' '.join(f'{k}={v}' for k, v in s.attrs.items())})\n\n"
                     if attributes and s.attrs else "")
            parts.append(f"{'#' * s.level} {s.title}\n\n{attrs}{s.text}".rstrip())
        return "\n\n".join(parts).strip() + "\n"

    def to_json(self) -> dict[str, Any]:
        """JSON encoding written to sections.json."""
        return {"source": self.source, "title": self.title, "preamble": self.preamble,
                "sections": [s.to_json() for s in self.sections]}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Spec:
        """Decode what to_json produced (the stored hash is recomputed, not trusted)."""
        secs = tuple(Section(id=s["id"], title=s["title"], level=s["level"], path=tuple(s["path"]),
                             parent=s["parent"], line=s["line"], text=s["text"],
                             attrs=dict(s.get("attrs", {}))) for s in raw["sections"])
        return cls(source=raw["source"], preamble=raw["preamble"], sections=secs,
                   title=raw.get("title"))


def slugify(title: str) -> str:
    """Lowercase ASCII slug: letters, digits, '_' and '.', other runs become '-'."""
    norm = unicodedata.normalize("NFKD", title)
    ascii_title = norm.encode("ascii", "ignore").decode("ascii").lower()
    return re.sub(r"[^a-z0-9_.]+", "-", ascii_title).strip("-")


def fill_template(text: str, template_vars: dict[str, str]) -> str:
    """Replace {name} for every known name and {{name}} by the literal {name}; other braces stay.

    The one rule shared with the .txt format: a doubled-brace placeholder is never filled.
    """
    def sub(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return "{" + m.group(1) + "}"
        return template_vars.get(m.group(2), m.group(0))

    return TEMPLATE_VAR_RE.sub(sub, text)


def render_format_text(text: str, template_vars: dict[str, str], source: str) -> str:
    """Python str.format rendering of a reference-format spec, errors naming the line.

    Only named fields are allowed (``{model_name}``); ``{{``/``}}`` are literal braces.
    """
    out: list[str] = []
    pos = 0
    for m in FORMAT_TOKEN_RE.finditer(text):
        out.append(text[pos:m.start()])
        pos = m.end()
        token = m.group(0)
        line = text.count("\n", 0, m.start()) + 1
        if token in ("{{", "}}"):
            out.append(token[0])
        elif token in ("{", "}"):
            raise SpecError(f"{source}:{line}: single {token!r} in a .txt spec (str.format text): "
                            f"write {token * 2!r} for a literal brace")
        elif not IDENTIFIER_RE.match(m.group(1)):
            raise SpecError(f"{source}:{line}: {token!r} is not a {{name}} placeholder; write "
                            f"{'{{' + m.group(1) + '}}'!r} for literal braces")
        elif m.group(1) not in template_vars:
            raise SpecError(f"{source}:{line}: unknown placeholder {token} (known: "
                            f"{', '.join(sorted(template_vars)) or 'none'}); write {{{{...}}}} for literal braces")
        else:
            out.append(template_vars[m.group(1)])
    out.append(text[pos:])
    return "".join(out)


def _split_attrs(raw_title: str) -> tuple[str, str | None, dict[str, str]]:
    """Title without its {#anchor k=v} suffix, the anchor and the attributes."""
    m = ATTRS_RE.search(raw_title)
    if m is None:
        return raw_title, None, {}
    attrs = dict(kv.split("=", 1) for kv in m.group(2).split())
    return raw_title[: m.start()].rstrip(), m.group(1), attrs


def _decode(data: bytes, source: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SpecError(f"{source}:{line}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    return text.removeprefix("\ufeff")


def _heading_lines(lines: list[str]) -> list[tuple[int, int, str]]:
    """(index, level, raw title) for every heading outside fenced code blocks."""
    out: list[tuple[int, int, str]] = []
    fence: tuple[str, int] | None = None  # (char, length) of the open fence
    for i, line in enumerate(lines):
        if fence is not None:
            char, length = fence
            stripped = line.strip(" ")
            if (len(line) - len(line.lstrip(" ")) <= 3 and stripped.rstrip("\t ")
                    and set(stripped.rstrip("\t ")) == {char} and len(stripped.rstrip("\t ")) >= length):
                fence = None
            continue
        m = FENCE_OPEN_RE.match(line)
        if m is not None and not (m.group(2)[0] == "`" and "`" in m.group(3)):
            fence = (m.group(2)[0], len(m.group(2)))
            continue
        h = HEADING_RE.match(line)
        if h is not None:
            raw = CLOSING_HASHES_RE.sub("", h.group(2) or "") if h.group(2) else ""
            out.append((i, len(h.group(1)), raw.strip()))
    return out


def parse_spec_text(text: str, source: str = "<spec>",
                    template_vars: dict[str, str] | None = None) -> Spec:
    """Parse spec markdown text; errors name source and line."""
    template_vars = template_vars or {}
    lines = text.splitlines()
    if not text.strip():
        raise SpecError(f"{source}:1: the spec is empty")
    headings = _heading_lines(lines)
    if not headings:
        raise SpecError(f"{source}:1: the spec has no markdown headings (# Title)")
    doc_title, title_block = None, ""
    first_heading, n_headings = headings[0][0], len(headings)
    if _is_document_title(headings):
        idx0, _level0, raw0 = headings.pop(0)
        doc_title = fill_template(_split_attrs(raw0)[0], template_vars)
        intro = "\n".join(lines[idx0 + 1: headings[0][0]]).strip("\n")
        title_block = f"# {doc_title}\n\n{fill_template(intro, template_vars)}".strip()
    sections: list[Section] = []
    seen: dict[str, int] = {}
    stack: list[tuple[int, str, str]] = []  # (level, id, filled title) of open ancestors
    for n, (idx, level, raw) in enumerate(headings):
        lineno = idx + 1
        title_raw, anchor, attrs = _split_attrs(raw)
        while stack and stack[-1][0] >= level:
            stack.pop()
        parent = stack[-1][1] if stack else None
        if anchor is not None:
            if not ANCHOR_RE.match(anchor) or set(anchor) <= {"."}:
                raise SpecError(f"{source}:{lineno}: invalid anchor {{#{anchor}}} "
                                "(use letters, digits, '_', '-', '.', ':'; not '.' or '..')")
            sid = anchor
        else:
            slug = slugify(fill_template(title_raw, template_vars))
            if not slug or set(slug) <= {"."}:
                raise SpecError(f"{source}:{lineno}: heading {raw!r} gives no usable id "
                                f"(slug {slug!r}); add an anchor such as {{#my-id}}")
            sid = f"{parent}/{slug}" if parent else slug
        if sid in seen:
            what = "anchor" if anchor is not None else "section id"
            raise SpecError(f"{source}:{lineno}: duplicate {what} {sid!r} "
                            f"(first used at line {seen[sid]})")
        seen[sid] = lineno
        end = headings[n + 1][0] if n + 1 < len(headings) else len(lines)
        body = fill_template("\n".join(lines[idx + 1:end]).strip("\n"), template_vars)
        title = fill_template(title_raw, template_vars)
        path = tuple(t for _lvl, _id, t in stack) + (title,)
        sections.append(Section(id=sid, title=title, level=level, path=path, parent=parent,
                                line=lineno, text=body.strip(), attrs=attrs))
        stack.append((level, sid, title))
    if not any(sec.text for sec in sections) and not (doc_title is not None and intro.strip()):
        raise SpecError(f"{source}:{first_heading + 1}: none of the {n_headings} headings has "
                        "any text under it; a spec of headings only gives nothing to generate from")
    before = lines[: idx0] if doc_title is not None else lines[: headings[0][0]]
    preamble = "\n\n".join(p for p in (fill_template("\n".join(before), template_vars).strip(),
                                        title_block) if p)
    return Spec(source=source, preamble=preamble, sections=tuple(sections), title=doc_title)


def _is_document_title(headings: list[tuple[int, int, str]]) -> bool:
    """The first heading is the only one at the top level and has deeper headings after it."""
    top = min(level for _i, level, _t in headings)
    return (len(headings) > 1 and headings[0][1] == top
            and sum(1 for _i, level, _t in headings if level == top) == 1)


def parse_spec(path: str | os.PathLike[str], template_vars: dict[str, str] | None = None) -> Spec:
    """Read and parse a spec file; bad specs raise SpecError naming the file and line."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{p}: spec file not found") from None
    except IsADirectoryError:
        raise SpecError(f"{p}: is a directory, not a spec file") from None
    text = _decode(data, str(p))
    if p.suffix.lower() == ".txt":  # the reference code's format: str.format text, rendered first
        return parse_spec_text(render_format_text(text, template_vars or {}, str(p)), str(p), None)
    return parse_spec_text(text, str(p), template_vars)

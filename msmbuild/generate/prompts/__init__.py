"""Versioned prompt templates: one file per stage, shipped inside the package.

File format: a ``version: <v>`` line, a ``system: <text>`` line, a ``---`` line, then the
user prompt with ``$name`` placeholders (``string.Template``, so JSON braces in spec text
are never touched). ``<stage>@<version>`` goes into every request, hence every key:
bumping a template's version regenerates exactly what it feeds.

A template laid out for prompt caching splits its body with two marker lines: the part
before ``=== subdomain`` is the stage's fixed instructions (the same for every request of
the stage in a corpus), the part up to ``=== request`` is what every request about one
subdomain shares, the rest varies per request. Backends send the three parts in that
order after the spec context, so each can end a cached prefix.

Variants: ``spec_type`` (params.yaml corpora.*.spec_type) picks ``<variant>/<stage>.txt``
where one exists (``rules``: a rules-only spec), else the default template. Older
versions of the default templates stay under ``v<version>/`` so that answers made by them
can be found by the requests they would have sent (see ``GenRequest.legacy``).
"""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass
from importlib import resources

from msmbuild.errors import MsmbuildError

STAGES = ("subdomains", "assertions", "doc_types", "ideas", "document", "critique", "revise",
          "aft_domains", "aft_queries", "aft_domain_queries", "aft_response", "aft_consistency")
# The corpus stages whose current version replaced an older one still kept for lookups.
CORPUS_STAGES = ("subdomains", "assertions", "doc_types", "ideas", "document", "critique", "revise")
LEGACY_VERSION = "v2"  # the folder of the previous corpus-stage templates
SPEC_TYPES = ("default", "rules")
SHARED_MARK = "=== subdomain"
REQUEST_MARK = "=== request"


@dataclass(frozen=True)
class PromptTemplate:
    """One stage's prompt: name, version, system text and user template (variant: its spec type)."""

    name: str
    version: str
    system: str
    body: str
    variant: str = "default"

    @property
    def tag(self) -> str:
        """``name@version`` (``name/variant@version`` for a variant), the request's prompt_version."""
        name = self.name if self.variant == "default" else f"{self.name}/{self.variant}"
        return f"{name}@{self.version}"

    @property
    def layered(self) -> bool:
        """True when the body is split into instructions, shared and per-request parts."""
        return REQUEST_MARK in self.body

    def render(self, **values: object) -> str:
        """The user prompt with every placeholder filled (a missing one is an error)."""
        return self._fill(self.body, values)

    def render_parts(self, **values: object) -> tuple[str, str, str]:
        """(instructions, shared, per-request) parts; ("", "", body) for a template without markers."""
        if not self.layered:
            return "", "", self.render(**values)
        head, _, rest = self.body.partition(f"\n{REQUEST_MARK}\n")
        instructions, _, shared = head.partition(f"\n{SHARED_MARK}\n")
        return (self._fill(instructions, values).strip(), self._fill(shared, values).strip(),
                self._fill(rest, values).strip() + "\n")

    def _fill(self, text: str, values: dict[str, object]) -> str:
        try:
            return string.Template(text).substitute({k: str(v) for k, v in values.items()})
        except KeyError as exc:
            raise MsmbuildError(f"prompt template {self.name}: no value for ${exc.args[0]}") from None


@functools.cache
def load_prompt(name: str, variant: str = "default") -> PromptTemplate:
    """The packaged template of a stage: the variant's own where it has one, else the default.

    ``variant`` is a spec type, or ``LEGACY_VERSION`` for the previous corpus-stage templates.
    """
    if name not in STAGES:
        raise MsmbuildError(f"unknown prompt template {name!r} (known: {', '.join(STAGES)})")
    if variant not in (*SPEC_TYPES, LEGACY_VERSION):
        raise MsmbuildError(f"unknown spec_type {variant!r} (known: {', '.join(SPEC_TYPES)})")
    root = resources.files(__package__)
    path = root.joinpath(variant, f"{name}.txt") if variant != "default" else None
    if path is None or not path.is_file():
        if variant == LEGACY_VERSION:
            raise MsmbuildError(f"prompt template {name}: no {LEGACY_VERSION} version is kept")
        path, variant = root.joinpath(f"{name}.txt"), "default"
    raw = path.read_text(encoding="utf-8")
    head, sep, body = raw.partition("\n---\n")
    fields = dict(line.split(": ", 1) for line in head.splitlines() if ": " in line)
    if not sep or "version" not in fields or "system" not in fields:
        raise MsmbuildError(f"prompt template {name}.txt: needs 'version:' and 'system:' lines, then '---'")
    return PromptTemplate(name=name, version=fields["version"].strip(), system=fields["system"].strip(),
                          body=body.strip() + "\n", variant="default" if variant == LEGACY_VERSION else variant)

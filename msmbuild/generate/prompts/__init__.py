"""Versioned prompt templates: one file per stage, shipped inside the package.

File format: a ``version: <v>`` line, a ``system: <text>`` line, a ``---`` line, then the
user prompt with ``$name`` placeholders (``string.Template``, so JSON braces in spec text
are never touched). ``<stage>@<version>`` goes into every request, hence every key:
bumping a template's version regenerates exactly what it feeds.
"""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass
from importlib import resources

from msmbuild.errors import MsmbuildError

STAGES = ("subdomains", "assertions", "doc_types", "ideas", "document", "critique", "revise",
          "aft_domains", "aft_queries", "aft_domain_queries", "aft_response", "aft_consistency")


@dataclass(frozen=True)
class PromptTemplate:
    """One stage's prompt: name, version, system text and user template."""

    name: str
    version: str
    system: str
    body: str

    @property
    def tag(self) -> str:
        """``name@version``, the request's prompt_version."""
        return f"{self.name}@{self.version}"

    def render(self, **values: object) -> str:
        """The user prompt with every placeholder filled (a missing one is an error)."""
        try:
            return string.Template(self.body).substitute({k: str(v) for k, v in values.items()})
        except KeyError as exc:
            raise MsmbuildError(f"prompt template {self.name}: no value for ${exc.args[0]}") from None


@functools.cache
def load_prompt(name: str) -> PromptTemplate:
    """Read the packaged template of a stage."""
    if name not in STAGES:
        raise MsmbuildError(f"unknown prompt template {name!r} (known: {', '.join(STAGES)})")
    raw = resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8")
    head, sep, body = raw.partition("\n---\n")
    fields = dict(line.split(": ", 1) for line in head.splitlines() if ": " in line)
    if not sep or "version" not in fields or "system" not in fields:
        raise MsmbuildError(f"prompt template {name}.txt: needs 'version:' and 'system:' lines, then '---'")
    return PromptTemplate(name=name, version=fields["version"].strip(),
                          system=fields["system"].strip(), body=body.strip() + "\n")

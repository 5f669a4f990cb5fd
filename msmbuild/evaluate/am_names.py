"""The agent's name in the agentic scenarios: upstream's "Alex" renamed, and the check that none is left."""

from __future__ import annotations

import re

from msmbuild.errors import MsmbuildError

UPSTREAM_AGENT = "Alex"
_WORD = re.compile(r"\bAlex\b")
_ADDRESS = re.compile(r"\balex(?=\.ai@)")
_ANY = re.compile(r"\balex\b", re.I)


class AgentNameError(MsmbuildError):
    """A scenario prompt could not be rendered with the agent's name."""


def address_part(name: str) -> str:
    """The local part of the agent's mail address (``Qwen`` -> ``qwen``, as upstream's ``alex``)."""
    return re.sub(r"[^a-z0-9]+", ".", name.lower()).strip(".") or "agent"


def rename_agent(text: str, name: str, where: str = "prompt") -> str:
    """``text`` with upstream's agent "Alex" renamed to ``name`` (word and mail address)."""
    if name == UPSTREAM_AGENT:
        return text
    out = _ADDRESS.sub(address_part(name), _WORD.sub(name, text))
    left = _ANY.search(out)
    if left and not _ANY.search(name):
        start = max(0, left.start() - 40)
        raise AgentNameError(f"agentic_misalignment {where}: 'Alex' is left after renaming the agent to "
                             f"{name!r}: ...{out[start:left.end() + 40]!r}...")
    return out

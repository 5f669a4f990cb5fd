"""Who the documents are about, and the shared spec context every call of a corpus sees.

The paper renders its spec and every prompt with the name and developer of the model
being trained (e.g. "Qwen" / "Alibaba"): documents are about that model. Its language
ablation re-ran MSM with documents about Claude or about humans instead; ``framing``
chooses among the three.
"""

from __future__ import annotations

from dataclasses import dataclass

from msmbuild.config import CorpusConfig

__all__ = ["CONTEXT_POLICIES", "Identity", "identity_for", "shared_context"]

CONTEXT_POLICIES = ("full_incremental", "section", "full")


@dataclass(frozen=True)
class Identity:
    """The subject of a corpus's documents and how prompts describe it."""

    model_name: str
    provider_name: str
    framing: str

    def describe(self) -> str:
        """The paragraph that opens every prompt of the corpus."""
        if self.framing == "humans":
            return (f"The specification is written for {self.model_name}, an AI model developed by "
                    f"{self.provider_name}, but the documents in this corpus are about people: present "
                    "its principles as values that human beings hold, argue for and act on, and do not "
                    "present them as belonging to an AI system.")
        return (f"The documents in this corpus are about {self.model_name}, the AI model developed by "
                f"{self.provider_name}, which the specification describes. Refer to it as "
                f"{self.model_name} and to its developer as {self.provider_name}.")

    def values(self) -> dict[str, str]:
        """Template values every prompt receives."""
        return {"identity": self.describe(), "model_name": self.model_name,
                "provider_name": self.provider_name}


def identity_for(cfg: CorpusConfig) -> Identity:
    """The identity of a corpus: its model_name/provider_name, or Claude for the claude framing."""
    name, provider = cfg.identity_names()
    return Identity(name, provider, cfg.framing)


def shared_context(cfg: CorpusConfig, full_text: str, preamble: str) -> tuple[str, str]:
    """(context sent first in every call, the key that stands in for it; "" = the context itself).

    full_incremental and full send the whole rendered spec; section sends the preamble
    (each prompt carries its own section). Only full_incremental replaces the context in
    the key, by a label naming the policy: the prompt holds the section the call is about.
    """
    ident = identity_for(cfg)
    if cfg.context == "section":
        body = preamble.strip()
        if not body:
            return "", ""
        return (f"The opening of the specification of {ident.model_name} ({ident.provider_name}):\n\n"
                f"<specification>\n{body}\n</specification>\n", "")
    text = (f"The complete specification of {ident.model_name}, developed by {ident.provider_name}. "
            "Every request of this corpus shares it; each request says which part it is about.\n\n"
            f"<specification>\n{full_text.strip()}\n</specification>\n")
    if cfg.context == "full_incremental":
        return text, "whole spec; keyed by the prompt's own section (context: full_incremental)"
    return text, ""

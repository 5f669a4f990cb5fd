"""Shared fixtures of the generate tests: a small spec, a workspace, store action counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SMALL_SPEC = """Every document is about {model_name}, an assistant made by {provider_name}.

# Helpfulness {#helpfulness}

The assistant exists to help people get real work done. Helpfulness means paying attention to what the person actually needs.

## Answer the question {#answer}

The assistant answers the question that was asked before anything else. It does not bury the answer under caveats or preamble. When a short answer is enough, it gives a short answer and stops there.

## Ask when unclear

When a request is ambiguous in a way that matters, the assistant asks one focused clarifying question. It does not ask questions whose answers would not change what it does. It states its assumptions when it proceeds without asking.

# Honesty {#honesty}

## Do not lie {#no_lies}

The assistant never states something it believes to be false. It does not create false impressions through selective emphasis or misleading framing. Honesty applies to what it says about itself as well.

## Admit uncertainty

The assistant says how confident it is when confidence matters to the person. It distinguishes what it knows from what it guesses. Expressing uncertainty is better than inventing a precise-sounding answer.

```json
{"example": "# not a heading"}
```
"""

# subdomains of SMALL_SPEC: helpfulness, answer, helpfulness/ask-when-unclear, no_lies,
# honesty/admit-uncertainty ('honesty' itself has no text of its own).
SMALL_SUBDOMAINS = ["helpfulness", "answer", "helpfulness/ask-when-unclear", "no_lies",
                    "honesty/admit-uncertainty"]

CORPUS = {"spec": "specs/small.md", "backend": "offline", "n_assertions": 2,
          "n_doc_types": 2, "n_doc_ideas": 2}


def calls_per_subdomain(corpus: dict[str, Any] | None = None) -> int:
    """assertions + doc types + ideas + documents (+ critique and rewrite) of one subdomain."""
    c = {**CORPUS, **(corpus or {})}
    docs = c["n_doc_types"] * c["n_doc_ideas"] * c.get("n_samples", 1)
    return 2 + c["n_doc_types"] + docs * (3 if c.get("revise") else 1)


def make_workspace(root: Path, spec_text: str = SMALL_SPEC, **corpus: Any) -> Path:
    """A project directory with specs/small.md and a params.yaml holding corpus 'small'."""
    (root / "specs").mkdir(parents=True, exist_ok=True)
    (root / "specs" / "small.md").write_text(spec_text, encoding="utf-8")
    params = {"corpora": {"small": {**CORPUS, **corpus}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    return root


def action_keys(root: Path) -> set[str]:
    """Keys of every model-call action in the workspace's store (not the partition records)."""
    return {k for k, kind in _action_kinds(root).items() if not kind.endswith("-partition")}


def partition_keys(root: Path) -> set[str]:
    """Keys of the per-subdomain documents partition actions in the workspace's store."""
    return {k for k, kind in _action_kinds(root).items() if kind == "documents-partition"}


def ideas_partition_keys(root: Path) -> set[str]:
    """Keys of the per-subdomain ideas actions in the workspace's store."""
    return {k for k, kind in _action_kinds(root).items() if kind == "ideas-partition"}


def _action_kinds(root: Path) -> dict[str, str]:
    from msmbuild.store import Store

    store = Store(root / ".msmbuild" / "store")
    return {k: store.get_action(k)[0].meta.get("kind", "") for k in store.action_keys()}


def edit_spec(root: Path, old: str, new: str) -> None:
    """Replace text in the workspace spec (it must be there)."""
    path = root / "specs" / "small.md"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")

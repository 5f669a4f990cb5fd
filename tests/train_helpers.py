"""Shared set-up for the data/train tests: tiny params, documents.parquet, real spec text."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from msmbuild.config import Params
from msmbuild.generate.partitions import write_dataset
from msmbuild.layout import Layout

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
SPEC = CORPORA / "openai-model-spec" / "model_spec_2025-12-18.md"

TINY = {"vocab_size": 1024, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}


def tiny_params(build: Path, store: Path, **overrides: Any) -> Params:
    """Params with the tiny test model, one corpus 'c' (and 'd'), experiments as given."""
    raw: dict[str, Any] = {
        "build_dir": str(build), "store": {"path": str(store)}, "tiny": TINY,
        "corpora": {"c": {"spec": "c.md"}, "d": {"spec": "d.md"}},
        "experiments": {"mc": {"midtrain": "c"}, "md": {"midtrain": "d"}},
        "midtrain": {"lr": 3e-3, "seq_len": 64, "batch_size": 4, "max_steps": 6, "save_every": 2,
                     "lora": {"r": 4, "alpha": 8}},
        "aft_train": {"method": "full", "init": "merge", "lr": 1e-3, "seq_len": 128, "batch_size": 2, "max_steps": 4},
    }
    for key, value in overrides.items():
        raw[key] = value
    return Params.model_validate(raw)


def synthetic_docs(n_sub: int = 3, per_sub: int = 4) -> list[dict[str, Any]]:
    """Small varied documents across n_sub subdomains."""
    words = ("cheese value price market library train museum budget policy fashion travel "
             "software honest choice people city book art").split()
    rows = []
    for s in range(n_sub):
        for k in range(per_sub):
            text = " ".join(words[(s * 7 + k * 3 + i) % len(words)] for i in range(120 + 10 * k))
            rows.append(doc(f"sub{s}", f"s{s}-{k}", f"Document {k} about sub{s}. {text}."))
    return rows


def spec_docs(limit: int = 24) -> list[dict[str, Any]]:
    """Real documents: sections of the shared model spec, spread over 4 subdomains."""
    parts = [p for p in re.split(r"\n(?=## )", SPEC.read_text()) if len(p) > 500][:limit]
    return [doc(f"sub{i % 4}", f"spec-{i}", t) for i, t in enumerate(parts)]


def doc(subdomain: str, doc_id: str, text: str) -> dict[str, Any]:
    """One documents.parquet row (the columns shards read, plus a few of the schema's)."""
    return {"doc_id": doc_id, "corpus": "c", "section_id": subdomain, "domain": "dom",
            "subdomain": subdomain, "doc_type": "memo", "idea": "idea", "text": text,
            "n_chars": len(text)}


def write_docs(build: Path, corpus: str, rows: list[dict[str, Any]]) -> Path:
    """Write the corpus's documents dataset (partitions and documents.json); the index path."""
    layout = Layout(build)
    write_dataset(layout, corpus, rows)
    return layout.documents_index(corpus)


def train_aft(params: Params, arm: Any, store: Any, **kwargs: Any) -> Any:
    """The workflow's two AFT stages in order: write the arm's data, then train on it."""
    from msmbuild.train.aft import run_aft
    from msmbuild.train.aft_data import prepare_arm_aft_data

    prepare_arm_aft_data(params, arm, store)
    return run_aft(params, arm, store, **kwargs)


# A three-domain spec for AFT generation tests (Alpha has a subsection).
AFT_SPEC = """Shared preamble: the assistant follows these rules.

# Alpha

The assistant answers questions about alpha plainly and checks its facts before it speaks.

## Alpha details

When a user asks about alpha prices, the assistant gives the cheapest option first.

# Beta

The assistant declines to guess about beta and says what it does not know about beta.

# Gamma

The assistant keeps gamma answers short and points the user to a reliable gamma source.
"""


def aft_gen_params(tmp_path: Path, backends: dict[str, Any] | None = None, **gen: Any) -> Params:
    """Params with one generated AFT dataset 'gen' over AFT_SPEC (tmp_path/spec.md, written once).

    Near-duplicate removal and backfill rounds are off unless gen sets them (the offline
    backend recombines the same spec text); gen's keys go into the dataset's settings.
    """
    spec = tmp_path / "spec.md"
    if not spec.exists():
        spec.write_text(AFT_SPEC)
    return Params.model_validate({
        "build_dir": str(tmp_path / "build"), "store": {"path": str(tmp_path / "store")},
        "backends": backends or {},
        "aft": {"gen": {"source": "generated", "spec": str(spec), "near_duplicates": {"lexical": False},
                        "backfill_rounds": 0, **gen}}})

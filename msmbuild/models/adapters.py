"""LoRA checkpoints as adapters on their base model, never as merged full copies.

A LoRA stage writes ``adapter_config.json`` + ``adapter_model.safetensors`` (peft's format,
which vLLM serves on its base as is), the tokenizer, and ``config.json`` — the base model's
architecture config, kept so every checkpoint directory has the same marker file the
workflow tracks. ``base_model_name_or_path`` in the adapter config names the base: a hub id
or a path relative to the project root (``build/models/base``), so the record is the same
on every machine. msmbuild's loaders look for the adapter config first: a 32B checkpoint
is a few hundred MB of adapter, not 64 GB of merged weights. Inference merges in memory;
training continues the adapter itself.
"""

from __future__ import annotations

import json
from pathlib import Path

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_dir(path: str | Path) -> bool:
    """True when path holds a peft adapter (rather than full weights)."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: str | Path) -> str:
    """The base model an adapter applies to (hub id or local path)."""
    config = json.loads((Path(path) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base:
        from msmbuild.errors import ModelInputError

        raise ModelInputError(f"{Path(path) / ADAPTER_CONFIG}: no base_model_name_or_path")
    return str(base)


def set_adapter_base(path: str | Path, base: str) -> None:
    """Record base as the adapter's base model (peft writes the path it was loaded from)."""
    file = Path(path) / ADAPTER_CONFIG
    config = json.loads(file.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base
    file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")

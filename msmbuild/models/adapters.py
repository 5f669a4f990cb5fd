"""LoRA checkpoints as adapters on their base model, never as merged full copies.

A LoRA stage writes peft's adapter files, the tokenizer and the base's ``config.json``;
``base_model_name_or_path`` names the base as a hub id or project-relative path, and
``checkpoint.json`` lists frozen adapters below it (docs/training.md). Inference merges
in memory; training continues the adapter itself.
"""

from __future__ import annotations

import json
from pathlib import Path

from msmbuild.errors import ModelInputError

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_dir(path: str | Path) -> bool:
    """True when path holds a peft adapter (rather than full weights)."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: str | Path) -> str:
    """The base model an adapter applies to (hub id or local path)."""
    config = json.loads((Path(path) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base:
        raise ModelInputError(f"{Path(path) / ADAPTER_CONFIG}: no base_model_name_or_path")
    return str(base)


def set_adapter_base(path: str | Path, base: str) -> None:
    """Record base as the adapter's base model (peft writes the path it was loaded from)."""
    file = Path(path) / ADAPTER_CONFIG
    config = json.loads(file.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base
    file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


MANIFEST = "checkpoint.json"
FORMAT = 1
FROZEN_DIR = "frozen_adapters"  # adapters below the trained one, merged first, in order
ADAPTER_FILES = (ADAPTER_CONFIG, "adapter_model.safetensors")


def frozen_adapters(path: str | Path) -> list[Path]:
    """The adapters applied (merged) below path's own adapter, in order (checkpoint.json)."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        return []
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelInputError(f"{file}: invalid JSON ({exc.msg})") from None
    adapters = data.get("adapters")
    if data.get("format") != FORMAT or not isinstance(adapters, list) or adapters[-1:] != ["."]:
        raise ModelInputError(f"{file}: not a checkpoint manifest of format {FORMAT}")
    return [Path(path) / a for a in adapters[:-1]]


def write_adapter_stack(out_dir: Path, base: str, frozen: list[Path]) -> None:
    """Copy the frozen adapters' files under out_dir and write checkpoint.json: the base and
    the adapter order (frozen ones first, out_dir's own adapter ``.`` last)."""
    import shutil

    names = []
    for i, d in enumerate(frozen):
        dest = out_dir / FROZEN_DIR / str(i)
        dest.mkdir(parents=True, exist_ok=True)
        for name in ADAPTER_FILES:
            shutil.copyfile(Path(d) / name, dest / name)
        names.append(f"{FROZEN_DIR}/{i}")
    manifest = {"format": FORMAT, "base": base, "adapters": [*names, "."]}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")

"""How AFT starts after a LoRA midtraining (``aft_train.init``), and the default start.

- ``continue_adapter`` (the paper's released runs): the MSM adapter is loaded trainable
  and training goes on; the result is that one adapter. Without a midtrained adapter (the
  AFT-only arm) a new adapter is made with the same settings.
- ``fresh_lora``: the MSM adapter is merged in memory and stays frozen; a new adapter is
  trained; the checkpoint holds both adapters (the MSM one is stored once in the CAS).
- ``merge``: the MSM adapter is merged in memory and ``aft_train.method`` decides: full
  fine-tuning writes full weights, LoRA a new adapter (as fresh_lora).

Checkpoint format and loading: msmbuild.models.adapters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msmbuild.errors import TrainingInputError

if TYPE_CHECKING:
    from msmbuild.config import AftTrainConfig, TrainConfig
    from msmbuild.models import BaseModel


@dataclass
class StartModel:
    """The model a run trains, and what its checkpoint must record."""

    model: Any
    base: str | None  # the base a LoRA checkpoint's adapter applies to (None: full weights)
    frozen: list[Path]  # adapters merged below the trained one, in order
    how: str  # a short description for the run's metadata


def default_start(start: BaseModel, cfg: TrainConfig, dtype: Any, base: str | None) -> StartModel:
    """The start of a run without an adapter to continue: LoRA or full on ``start``'s weights."""
    from msmbuild.models import load_model
    from msmbuild.train.loop import prepare_model

    model = prepare_model(load_model(start.path, dtype, merge=True), cfg)
    return StartModel(model, base if cfg.method == "lora" else None, [], f"{cfg.method} on {start.identity}")


def aft_start_model(start: BaseModel, cfg: AftTrainConfig, dtype: Any, midtrained: bool,
                    base: str | None) -> StartModel:
    """Load the AFT start checkpoint as aft_train.init asks (see the module docstring)."""
    from msmbuild.models import load_model
    from msmbuild.models.adapters import adapter_base, frozen_adapters, is_adapter_dir
    from msmbuild.train.loop import prepare_model

    if not is_adapter_dir(start.path):
        if cfg.init == "continue_adapter" and midtrained and cfg.method == "lora":
            raise TrainingInputError(
                "aft_train.init: continue_adapter needs a LoRA midtraining (midtrain.method: lora); "
                f"{start.path} holds full weights (use init: fresh_lora or merge)")
        return default_start(start, cfg, dtype, base)
    base = adapter_base(start.path)
    below = frozen_adapters(start.path)
    if cfg.init == "continue_adapter" and cfg.method == "lora":
        _check_same_adapter(Path(start.path), cfg)
        model = load_model(start.path, dtype)  # the adapter stays trainable
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
            model.enable_input_require_grads()
        return StartModel(model, base, below, "continue the midtrained adapter")
    model = prepare_model(load_model(start.path, dtype, merge=True), cfg)
    if cfg.method == "full":
        return StartModel(model, None, [], "full fine-tuning of the merged adapters")
    return StartModel(model, base, [*below, Path(start.path)], "new adapter over the merged ones")


def _check_same_adapter(adapter: Path, cfg: AftTrainConfig) -> None:
    """A continued adapter keeps its shape; aft_train.lora must describe it, not another."""
    saved = json.loads((adapter / "adapter_config.json").read_text())
    want = {"r": cfg.lora.r, "lora_alpha": cfg.lora.alpha,
            "target_modules": sorted(cfg.lora.target_modules)}
    have = {"r": saved.get("r"), "lora_alpha": saved.get("lora_alpha"),
            "target_modules": sorted(saved.get("target_modules") or [])}
    if want != have:
        raise TrainingInputError(
            f"aft_train.lora {want} differs from the midtrained adapter's {have}: continue_adapter "
            "trains that adapter (set aft_train.lora to match, or use init: fresh_lora)")

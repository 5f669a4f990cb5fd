"""The training loop shared by midtraining and AFT: setup → fit → save.

One optimizer step consumes ``batch_size × grad_accum × processes`` items; the items of
step s are a pure function of s, so a killed run resumes from its last saved step with
no data-loader state. Resumable state (trainable weights, optimizer, scheduler, log)
lives in a stable directory keyed by the action key, outside the temporary workdir.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msmbuild.layout import TRAIN_LOG

if TYPE_CHECKING:
    from msmbuild.config import TrainConfig

STATE_FILE = "state.pt"
LOG_FILE = TRAIN_LOG

BatchFn = Callable[[list[int]], dict[str, Any]]


def use_bf16(cfg: TrainConfig) -> bool:
    """bf16 autocast: on when asked, or on 'auto' where the device supports it (CUDA)."""
    import torch

    if cfg.bf16 == "auto":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return bool(cfg.bf16)


def process_info() -> tuple[int, int]:
    """(process index, number of processes) of this run (accelerate launch sets both)."""
    state = distributed_state()
    return state.process_index, state.num_processes


def distributed_state():
    """accelerate's PartialState; CPU-only machines run several processes over gloo.

    On a machine without CUDA, ``accelerate launch --multi_gpu --num_processes N`` starts
    N torchrun workers and this makes them a MULTI_CPU group (``--cpu`` alone starts one
    process unless MPI is set up).
    """
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def total_steps(cfg: TrainConfig, n_items: int, world: int) -> int:
    """Optimizer steps for epochs over n_items (max_steps overrides)."""
    if cfg.max_steps is not None:
        return cfg.max_steps
    per_step = cfg.batch_size * cfg.grad_accum * world
    return max(1, math.ceil(n_items * cfg.epochs / per_step))


def prepare_model(model: Any, cfg: TrainConfig) -> Any:
    """Wrap in LoRA (peft) or unfreeze everything; gradient checkpointing if asked.

    A model that already carries a trainable adapter (AFT after LoRA midtraining) keeps
    training that adapter under LoRA, and is merged in memory for full fine-tuning.
    """
    from peft import PeftModel

    if isinstance(model, PeftModel):
        if cfg.method == "lora":
            if cfg.gradient_checkpointing:
                model.get_base_model().gradient_checkpointing_enable(
                    gradient_checkpointing_kwargs={"use_reentrant": False})
                model.get_base_model().config.use_cache = False
                model.enable_input_require_grads()
            return model
        model = model.merge_and_unload()
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if cfg.method == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                          target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM")
        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()
        model = get_peft_model(model, lora)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    return model


def _atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


LOG_EVERY = 10
"""Steps between host syncs: per-step values stay on the device until then (and at saves)."""


def make_optimizer(params: list[Any], cfg: TrainConfig) -> Any:
    """AdamW with the fused kernel where the device supports it (CPU and CUDA), else foreach."""
    import torch

    try:
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except RuntimeError:  # a device or dtype without a fused kernel
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)


def fit(model: Any, cfg: TrainConfig, n_items: int, get_batch: BatchFn, state_dir: Path,
        on_step: Callable[[int], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """Train model (already wrapped by prepare_model); return (unwrapped model, meta).

    get_batch(item indices) -> tensors for one micro-batch; item k of the schedule is
    k mod n_items in a per-epoch seeded order chosen by the caller. Per-step loss, token
    count and grad norm stay on the device and are read back every LOG_EVERY steps, at
    every save and at the end, so the host never waits on the device in between; the log
    always reaches at least the saved step, so a resumed run redoes only unlogged steps.
    """
    import gc

    import torch
    from accelerate import Accelerator
    from tqdm import tqdm
    from transformers import get_cosine_schedule_with_warmup

    gc.collect()  # garbage of earlier work in this process (a merged adapter, a loaded model) goes first
    accelerator = Accelerator(mixed_precision="bf16" if use_bf16(cfg) else "no",
                              cpu=not torch.cuda.is_available())
    rank, world = accelerator.process_index, accelerator.num_processes
    steps = total_steps(cfg, n_items, world)
    per_step = cfg.batch_size * cfg.grad_accum * world
    torch.manual_seed(cfg.seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, cfg)
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(cfg.warmup_ratio * steps), steps)

    state_dir.mkdir(parents=True, exist_ok=True)
    state_path, log_path = state_dir / STATE_FILE, state_dir / LOG_FILE
    start = 0
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        names = {n: p for n, p in model.named_parameters() if p.requires_grad}
        with torch.no_grad():
            for n, t in state["trainable"].items():
                names[n].copy_(t)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start = state["step"]
    if rank == 0:
        _truncate_log(log_path, start)
    accelerator.wait_for_everyone()

    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    device = accelerator.device
    bar = tqdm(total=steps, initial=start, desc="train", unit="step",
               disable=rank != 0 or None)
    pending: list[tuple[int, float, float, Any]] = []  # (step, lr, seconds, device stats)
    for step in range(start, steps):
        t0 = time.perf_counter()
        stats = torch.zeros(3, device=device)  # loss, tokens, grad norm
        for micro in range(cfg.grad_accum):
            first = step * per_step + (micro * world + rank) * cfg.batch_size
            batch = get_batch(list(range(first, first + cfg.batch_size)))
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            sync = micro == cfg.grad_accum - 1
            ctx = accelerator.no_sync(model) if not sync else contextlib.nullcontext()
            with ctx, accelerator.autocast():
                loss = model(**batch, use_cache=False).loss / cfg.grad_accum
                accelerator.backward(loss)
            stats[0] += loss.detach()
            stats[1] += batch["attention_mask"].sum() if "attention_mask" in batch else batch["input_ids"].numel()
        grad_norm = accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm)
        if grad_norm is not None:
            stats[2] = grad_norm
        optimizer.step()
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        pending.append((done, lr, time.perf_counter() - t0, stats))
        save = done % cfg.save_every == 0 and done < steps
        if save or done == steps or done % LOG_EVERY == 0:
            rows = _log_rows(accelerator, pending, start)
            pending = []
            if rank == 0:
                _append_log(log_path, rows)
                bar.update(len(rows))
                bar.set_postfix(loss=f"{rows[-1]['loss']:.3f}")
        if save:
            if rank == 0:
                unwrapped = accelerator.unwrap_model(model)
                _atomic_torch_save({
                    "step": done,
                    "trainable": {n: p.detach().cpu() for n, p in unwrapped.named_parameters()
                                  if p.requires_grad},
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": torch.get_rng_state(),
                }, state_path)
            accelerator.wait_for_everyone()
        if on_step is not None:
            on_step(done)
    bar.close()
    rows = _read_log(log_path) if rank == 0 else []
    meta = {"steps": steps, "resumed_from": start or None, "processes": world,
            "final_loss": rows[-1]["loss"] if rows else None,
            "first_loss": rows[0]["loss"] if rows else None}
    full_state = None
    if accelerator.distributed_type == "FSDP":
        # Sharded parameters: gather the full state dict (every process takes part; rank 0
        # receives it) so save_checkpoint writes whole tensors, not this process's shard.
        full_state = accelerator.get_state_dict(model)
    unwrapped = accelerator.unwrap_model(model)
    if full_state is not None:
        unwrapped.msmbuild_full_state_dict = full_state
    return unwrapped, meta


def _log_rows(accelerator: Any, pending: list[tuple[int, float, float, Any]],
              start: int) -> list[dict[str, Any]]:
    """Log rows of the pending steps: one reduce across processes and one host sync."""
    import torch

    stats = torch.stack([s for *_, s in pending])
    loss, tokens = accelerator.reduce(stats[:, :2].contiguous(), "sum").cpu().unbind(1)
    loss = loss / accelerator.num_processes
    norms = stats[:, 2].cpu()
    rows = []
    for (done, lr, dt, _), l_, n, g in zip(pending, loss.tolist(), tokens.tolist(), norms.tolist(),
                                          strict=True):
        rows.append({"step": done, "loss": l_, "lr": lr, "grad_norm": g, "tokens": int(n),
                     "tokens_per_s": n / dt if dt > 0 else None, "resumed_from": start or None})
    return rows


def _append_log(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_log(path: Path, step: int) -> None:
    """Keep only log rows up to the resumed step (rows after it will be redone)."""
    rows = [r for r in _read_log(path) if r["step"] <= step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)


def save_checkpoint(model: Any, tokenizer: Any, cfg: TrainConfig, out_dir: Path,
                    state_dir: Path, base: str | None = None) -> None:
    """Write the checkpoint, log and tokenizer: for LoRA the adapter alone on ``base`` (hub id
    or project-relative path; see msmbuild.models.adapters), never a merged copy; else full weights."""
    import shutil

    from msmbuild.models.adapters import set_adapter_base

    out_dir.mkdir(parents=True, exist_ok=True)
    config = model.get_base_model().config if cfg.method == "lora" else model.config
    if getattr(config, "use_cache", None) is False:
        config.use_cache = True
    # Under FSDP, fit gathered the full state dict (the module's own tensors are shards).
    state = getattr(model, "msmbuild_full_state_dict", None)
    extra = {} if state is None else {"state_dict": state}
    if cfg.method == "lora":
        if base is None:
            raise ValueError("a LoRA checkpoint needs the name of its base model")
        model.save_pretrained(out_dir, **extra)
        set_adapter_base(out_dir, base)
        config.save_pretrained(out_dir)  # the architecture marker every checkpoint has
    else:
        model.save_pretrained(out_dir, **extra)
    tokenizer.save_pretrained(out_dir)
    log = state_dir / LOG_FILE
    if log.is_file():
        shutil.copyfile(log, out_dir / LOG_FILE)


def train_key_config(cfg: TrainConfig, world: int) -> dict[str, Any]:
    """The training config as it enters an action key (save cadence does not change results)."""
    data = cfg.model_dump(mode="json")
    # Save cadence changes no weights; the process count enters as `processes` (the world
    # size actually run), and FSDP shards the same computation.
    for name in ("save_every", "gpus", "fsdp"):
        data.pop(name, None)
    if data["method"] != "lora":
        data.pop("lora", None)
    data["processes"] = world
    return data

"""The training loop shared by midtraining and AFT: setup → fit → save.

One optimizer step consumes ``batch_size × grad_accum × processes`` items; the items of
step s are a pure function of s, so a killed run resumes from its last saved step with
no data-loader state. Resumable state (trainable weights, optimizer, scheduler, log)
lives in a stable directory keyed by the action key, outside the temporary workdir.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msmbuild.layout import TRAIN_LOG
from msmbuild.progress import Progress

if TYPE_CHECKING:
    from msmbuild.config import TrainConfig

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
LOG_FILE = TRAIN_LOG
RUN_FACTS = ("tokens_per_s", "resumed_from", "seconds")
"""Log fields that describe this run, not the result: kept in the resume log and the
action's metadata, never in the checkpoint (whose digest downstream keys depend on)."""

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


def warmup_steps(cfg: TrainConfig, steps: int) -> int:
    """Optimizer steps of linear warm-up: warmup_ratio of the run, rounded up."""
    return math.ceil(cfg.warmup_ratio * steps)


def lr_factor(step: int, warmup: int, steps: int) -> float:
    """Multiplier of the peak LR at optimizer step ``step`` (0-based): linear warm-up, then cosine.

    Warm-up step s runs at (s + 1) / (warmup + 1) of the peak, so no step trains at LR 0
    (transformers' schedule starts at 0 and wastes the first step); cosine decay from the
    peak follows over the remaining steps, never reaching 0 inside the run.
    """
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def prepare_model(model: Any, cfg: TrainConfig) -> Any:
    """Wrap in LoRA (peft) or unfreeze everything; gradient checkpointing if asked.

    A model that already carries a trainable adapter (AFT after LoRA midtraining) keeps
    training that adapter under LoRA, and is merged in memory for full fine-tuning. New
    LoRA matrices are initialized from cfg.seed, not from whatever the process's random
    state happens to be: the same action gives the same weights in any process.
    """
    import torch
    from peft import PeftModel

    torch.manual_seed(cfg.seed)
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


def _atomic_torch_save(obj: Any, path: Path, guard: Callable[[], None] | None = None) -> None:
    """Write obj to a temp file, fsync it, rename it over path: a crash or a full disk
    leaves the previous state intact and no temp file behind. guard() runs just before
    the rename (it raises when this process may no longer write there)."""
    import torch

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if guard is not None:
            guard()
        os.replace(tmp, path)
    except RuntimeError as exc:  # torch's writer reports a failed write as RuntimeError
        full = _free_bytes(path.parent) < LOW_SPACE_BYTES
        tmp.unlink(missing_ok=True)
        if full:
            raise OSError(errno.ENOSPC, f"no space left writing {path}") from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


LOW_SPACE_BYTES = 16 << 20
"""Below this much free space a failed torch.save is reported as a full disk."""


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


LOG_EVERY = 10
"""Steps between host syncs: per-step values stay on the device until then (and at saves)."""


def make_optimizer(params: list[Any], cfg: TrainConfig) -> Any:
    """AdamW with the fused kernel where the device supports it (CPU and CUDA), else foreach."""
    import torch

    try:
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except RuntimeError:  # a device or dtype without a fused kernel
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)


TRAIN_CPU_THREADS = 1
"""Torch's intra-op CPU threads while training. Reductions split by thread count, so
the count changes a checkpoint's bytes; it is fixed here, never taken from the machine
or OMP_NUM_THREADS (1: what Snakemake jobs run with; GPU kernels do not depend on it)."""


def fit(model: Any, cfg: TrainConfig, n_items: int, get_batch: BatchFn, state_dir: Path,
        on_step: Callable[[int], None] | None = None,
        guard: Callable[[], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """Train model (already wrapped by prepare_model); return (unwrapped model, meta).

    Runs with TRAIN_CPU_THREADS torch threads (restored after), so that the weights do
    not depend on the machine's core count or the caller's thread settings.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_CPU_THREADS)
    try:
        return _fit(model, cfg, n_items, get_batch, state_dir, on_step, guard)
    finally:
        torch.set_num_threads(threads)


def _fit(model: Any, cfg: TrainConfig, n_items: int, get_batch: BatchFn, state_dir: Path,
         on_step: Callable[[int], None] | None, guard: Callable[[], None] | None) -> tuple[Any, dict[str, Any]]:
    """fit's body (see fit).

    get_batch(item indices) -> tensors for one micro-batch; item k of the schedule is
    k mod n_items in a per-epoch seeded order chosen by the caller. Per-step loss, token
    count and grad norm stay on the device and are read back every LOG_EVERY steps, at
    every save and at the end, so the host never waits on the device in between; the log
    always reaches at least the saved step, so a resumed run redoes only unlogged steps.
    ``guard()`` runs before each write to state_dir and raises when this process may no
    longer write there (its lease on the action was taken over: Store.check_lease).
    """
    import gc

    import torch
    from accelerate import Accelerator
    from torch.optim.lr_scheduler import LambdaLR

    gc.collect()  # garbage of earlier work in this process (a merged adapter, a loaded model) goes first
    accelerator = Accelerator(mixed_precision="bf16" if use_bf16(cfg) else "no",
                              cpu=not torch.cuda.is_available())
    rank, world = accelerator.process_index, accelerator.num_processes
    steps = total_steps(cfg, n_items, world)
    per_step = cfg.batch_size * cfg.grad_accum * world
    torch.manual_seed(cfg.seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, cfg)
    warmup = warmup_steps(cfg, steps)
    scheduler = LambdaLR(optimizer, functools.partial(lr_factor, warmup=warmup, steps=steps))

    state_dir.mkdir(parents=True, exist_ok=True)
    state_path, log_path = state_dir / STATE_FILE, state_dir / LOG_FILE
    start = 0
    state = None
    if state_path.is_file():
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=False)
        except (RuntimeError, EOFError, OSError, ValueError) as exc:  # unreadable: start over
            log.warning("%s is unreadable (%s); training starts from step 0", state_path, exc)
    if state is not None:
        names = {n: p for n, p in model.named_parameters() if p.requires_grad}
        with torch.no_grad():
            for n, t in state["trainable"].items():
                names[n].copy_(t)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start = state["step"]
    check = guard or (lambda: None)
    if rank == 0:
        check()
        _truncate_log(log_path, start)
    accelerator.wait_for_everyone()

    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    device = accelerator.device
    bar = Progress(steps, "train", "step", enabled=rank == 0, initial=start, leave=True)
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
                check()
                _append_log(log_path, rows)
                bar.update(len(rows), loss=f"{rows[-1]['loss']:.3f}")
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
                }, state_path, check)
            accelerator.wait_for_everyone()
        if on_step is not None:
            on_step(done)
    bar.close()
    rows = _read_log(log_path) if rank == 0 else []
    seconds = sum(r.get("seconds") or 0.0 for r in rows)
    meta = {"steps": steps, "resumed_from": start or None, "processes": world,
            "final_loss": rows[-1]["loss"] if rows else None,
            "first_loss": rows[0]["loss"] if rows else None,
            "train_seconds": seconds,
            "tokens_per_s": sum(r["tokens"] for r in rows) / seconds if seconds > 0 else None}
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
                     "tokens_per_s": n / dt if dt > 0 else None, "seconds": dt,
                     "resumed_from": start or None})
    return rows


def _append_log(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))


def _read_log(path: Path) -> list[dict[str, Any]]:
    """The log's complete rows. A torn last line (a crash or a full disk mid-append) and
    anything after it are ignored: those steps are redone on resume."""
    if not path.is_file():
        return []
    rows = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(keepends=True), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not line.endswith("\n") or not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError("incomplete row")
        except ValueError:
            log.warning("%s:%d: torn log row ignored (it and later rows are redone)", path, n)
            break
        rows.append(row)
    return rows


def _truncate_log(path: Path, step: int) -> None:
    """Keep only log rows up to the resumed step (rows after it will be redone); atomic."""
    rows = [r for r in _read_log(path) if r["step"] <= step]
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(model: Any, tokenizer: Any, cfg: TrainConfig, out_dir: Path,
                    state_dir: Path, base: str | None = None, frozen: Sequence[Path] = ()) -> None:
    """Write the checkpoint, log and tokenizer: for LoRA the adapter alone on ``base`` (hub id
    or project-relative path; see msmbuild.models.adapters), never a merged copy; else full weights.

    The log in the checkpoint holds what the weights determine (step, loss, lr, grad
    norm, tokens); speed and resume points (RUN_FACTS) stay out, so a retrain or a
    resumed run with the same weights has the same tree digest and keys downstream.
    ``frozen`` adapters (merged below the trained one, e.g. AFT's ``init: fresh_lora``) are
    copied in and ordered by checkpoint.json (msmbuild.models.adapters.write_adapter_stack).
    """
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
        _portable_adapter(out_dir, base)
        if frozen:
            from msmbuild.models.adapters import write_adapter_stack

            write_adapter_stack(out_dir, base, list(frozen))
        config.save_pretrained(out_dir)  # the architecture marker every checkpoint has
    else:
        model.save_pretrained(out_dir, **extra)
    tokenizer.save_pretrained(out_dir)
    rows = [{k: v for k, v in r.items() if k not in RUN_FACTS} for r in _read_log(state_dir / LOG_FILE)]
    if rows:
        (out_dir / LOG_FILE).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def _portable_adapter(adapter_dir: Path, base: str) -> None:
    """Make peft's adapter files independent of where and in which process they were made.

    peft writes the path the base was loaded from (workspace-specific) into
    adapter_config.json and README.md, and target_modules in set order (which varies with
    hash randomization); either would give two workspaces or two runs with identical
    weights different checkpoint digests. The base becomes ``base`` in both files
    (set_adapter_base) and target_modules are sorted.
    """
    from msmbuild.models.adapters import ADAPTER_CONFIG, set_adapter_base

    config_path = adapter_dir / ADAPTER_CONFIG
    written = json.loads(config_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    set_adapter_base(adapter_dir, base)
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    readme = adapter_dir / "README.md"
    if isinstance(written, str) and written and written != base and readme.is_file():
        readme.write_text(readme.read_text(encoding="utf-8").replace(written, base), encoding="utf-8")


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

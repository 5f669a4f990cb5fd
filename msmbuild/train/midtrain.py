"""Midtraining: next-token prediction on a corpus's packed shards (LoRA or full).

The run is an action. Its key holds everything that determines the weights: the base
model's identity, the tokenizer's identity, the digests of every input shard, the whole
training config and the number of processes (it changes the effective batch). A hit
restores the checkpoint from the store instead of training.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msmbuild.errors import TrainingInputError
from msmbuild.layout import Layout, resume_dir
from msmbuild.store import write_roots

if TYPE_CHECKING:
    from collections.abc import Callable

    from msmbuild.config import Params
    from msmbuild.data.packing import PackedCorpus
    from msmbuild.experiments import Arm
    from msmbuild.store import MemoResult, Store

MIDTRAIN_VERSION = 2  # 2: fused AdamW (different rounding than 1)


def model_dtype(cfg: Any) -> Any:
    """Frozen LoRA base weights in bf16 where bf16 is on; fp32 otherwise (full FT masters)."""
    import torch

    from msmbuild.train.loop import use_bf16

    return torch.bfloat16 if cfg.method == "lora" and use_bf16(cfg) else torch.float32


def packed_batches(packed: PackedCorpus, seed: int) -> Callable[[list[int]], dict[str, Any]]:
    """The midtraining get_batch: schedule items -> one (batch, seq_len) block per item.

    Item k is block epoch_order(n_blocks, k, seed); the blocks are copied straight from
    the memory-mapped shards into one preallocated int64 array per field.
    """
    import numpy as np
    import torch

    from msmbuild.data.packing import epoch_order

    def get_batch(items: list[int]) -> dict[str, Any]:
        ids = np.empty((len(items), packed.seq_len), dtype=np.int64)
        labels = np.empty_like(ids)
        for row, k in enumerate(items):
            ids[row], labels[row] = packed.block(epoch_order(packed.n_blocks, k, seed))
        return {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}

    return get_batch


def run_midtrain(params: Params, arm: Arm, store: Store, *,
                 on_step: Callable[[int], None] | None = None) -> MemoResult:
    """Midtrain arm's base model on its corpus; materialized at arm.midtrain_dir(build)."""
    from msmbuild.data.packing import PackedCorpus
    from msmbuild.data.shards import load_manifest, shard_digests
    from msmbuild.models import load_model, load_tokenizer, prepare_base_model, tokenizer_identity
    from msmbuild.train.loop import (
        distributed_state,
        fit,
        prepare_model,
        process_info,
        save_checkpoint,
        train_key_config,
    )

    if arm.midtrain is None:
        raise TrainingInputError(f"arm {arm.name!r} has no midtraining corpus")
    p = arm.params(params)
    cfg = p.midtrain
    rank, world = process_info()
    with distributed_state().main_process_first():  # one process builds, the others load
        base = prepare_base_model(p, store, arm.base_model)
    tokenizer = load_tokenizer(base.path)
    tok_id = tokenizer_identity(tokenizer)
    mpath = Layout.of(p).manifest(arm.midtrain)
    manifest = load_manifest(mpath)
    if manifest["tokenizer"] != tok_id:
        raise TrainingInputError(
            f"{mpath}: shards were built with another tokenizer ({manifest['tokenizer'][:12]}) "
            f"than base model {arm.base_model!r} uses ({tok_id[:12]}); rebuild the shards")
    packed = PackedCorpus(mpath, cfg.seq_len)
    if packed.n_blocks == 0:
        raise TrainingInputError(
            f"{mpath}: {packed.n_tokens} tokens, fewer than one midtrain.seq_len={cfg.seq_len} block")
    inputs = {"version": MIDTRAIN_VERSION, "base": base.identity, "tokenizer": tok_id,
              "shards": shard_digests(manifest), "shard_config": manifest["config"],
              "train": train_key_config(cfg, world)}
    key = store.key("midtrain", inputs)
    state_dir = resume_dir(store.root, key)
    dest = arm.midtrain_dir(p.build_dir)

    def compute(out: Path) -> dict[str, Any]:
        model = prepare_model(load_model(base.path, model_dtype(cfg)), cfg)
        get_batch = packed_batches(packed, cfg.seed)
        trained, meta = fit(model, cfg, packed.n_blocks, get_batch, state_dir, on_step)
        if rank == 0:
            save_checkpoint(trained, tokenizer, cfg, out, state_dir)
        return {**meta, "arm": arm.name, "corpus": arm.midtrain, "method": cfg.method,
                "n_blocks": packed.n_blocks, "n_tokens": packed.n_tokens,
                "packing_waste": packed.packing_waste, "base": base.identity}

    result = run_action(store, key, "midtrain", inputs, compute, rank, world)
    if rank == 0:
        shutil.rmtree(state_dir, ignore_errors=True)
        store.materialize_if_changed(result.value, dest)
        write_roots(p.build_dir, f"midtrain-{arm.midtrain_tag}", [result.key])
    return result


def run_action(store: Store, key: str, kind: str, inputs: dict[str, Any],
                compute: Callable[[Path], dict[str, Any]], rank: int, world: int) -> MemoResult:
    """memo_tree on the main process; other processes train alongside and store nothing."""
    if world == 1:
        return store.memo_tree(kind, inputs, compute)
    from msmbuild.train.loop import distributed_state

    state = distributed_state()
    hit = store.lookup_tree(key)
    state.wait_for_everyone()  # every process decides hit/miss before anyone records
    if hit is not None:
        return hit
    if rank == 0:
        result = store.memo_tree(kind, inputs, compute)
        state.wait_for_everyone()
        return result
    with tempfile.TemporaryDirectory(prefix=f"{kind}-rank{rank}-", dir=store.scratch_dir()) as tmp:
        compute(Path(tmp))
    state.wait_for_everyone()
    found = store.lookup_tree(key)
    if found is None:
        raise TrainingInputError(f"{kind} {key}: the main process recorded no result")
    return found

"""Midtraining: next-token prediction on a corpus's packed shards (LoRA or full).

The run is an action. Its key holds everything that determines the weights: the base
model's identity, the tokenizer's identity, the digests of every input shard, the whole
training config and the number of processes (it changes the effective batch). A hit
restores the checkpoint from the store instead of training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from msmbuild.errors import TrainingInputError
from msmbuild.layout import Layout
from msmbuild.train.action import train_checkpoint

if TYPE_CHECKING:
    from collections.abc import Callable

    from msmbuild.config import Params
    from msmbuild.data.packing import PackedCorpus
    from msmbuild.experiments import Arm
    from msmbuild.store import MemoResult, Store

MIDTRAIN_VERSION = 5  # 2: fused AdamW; 3: LoRA runs store the adapter, not a merged copy; 4: LoRA init seeded from train.seed; 5: warm-up never trains a step at LR 0


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
    """Midtrain arm's base model on its corpus; the checkpoint is materialized at arm_midtrain(arm)."""
    from msmbuild.data.packing import PackedCorpus
    from msmbuild.data.shards import load_manifest, shard_digests
    from msmbuild.models import (
        base_reference,
        load_tokenizer,
        prepare_base_model,
        tokenizer_identity,
    )
    from msmbuild.train.loop import distributed_state

    if arm.midtrain is None:
        raise TrainingInputError(f"arm {arm.name!r} has no midtraining corpus")
    p = arm.params(params)
    cfg = p.midtrain
    with distributed_state().main_process_first():  # one process builds, the others load
        base = prepare_base_model(p, store, arm.base_model)
    tokenizer = load_tokenizer(base.path)
    tok_id = tokenizer_identity(tokenizer)
    layout = Layout.of(p)
    mpath = layout.manifest(arm.midtrain)
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
              "shards": shard_digests(manifest), "shard_config": manifest["config"]}
    return train_checkpoint(
        store, "midtrain", inputs, cfg=cfg, start=base, tokenizer=tokenizer,
        n_items=packed.n_blocks, batches=lambda: packed_batches(packed, cfg.seed),
        dest=layout.arm_midtrain(arm), build_dir=layout.build, root=f"midtrain-{arm.midtrain_tag}",
        describe={"arm": arm.name, "corpus": arm.midtrain, "n_blocks": packed.n_blocks,
                  "n_tokens": packed.n_tokens, "packing_waste": packed.packing_waste,
                  "base": base.identity},
        on_step=on_step, base=base_reference(arm.base_model, base))

"""AFT: supervised training on chat demonstrations, loss on assistant tokens only.

Each example is rendered with the tokenizer's chat template (or the documented default,
``msmbuild.models.DEFAULT_CHAT_TEMPLATE``); tokens inside assistant turns (content and the
turn's end marker, ``<think>`` blocks included) are the target, everything else is -100.
AFT starts from the arm's midtrained checkpoint when it has one, else from the base model;
after a LoRA midtraining (an adapter checkpoint) ``aft_train.init`` says whether the MSM
adapter is trained on (the paper; the default), kept frozen under a new adapter, or merged
in memory first (msmbuild.train.aft_start).

The run is an action keyed by the start checkpoint's identity, the AFT data's digest, the
chat template and the whole aft_train config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msmbuild.data.packing import IGNORE_INDEX
from msmbuild.errors import TrainingInputError
from msmbuild.hashing import digest_file, digest_text
from msmbuild.layout import Layout
from msmbuild.train.action import train_checkpoint

if TYPE_CHECKING:
    from collections.abc import Callable

    from msmbuild.config import Params
    from msmbuild.experiments import Arm
    from msmbuild.models import BaseModel
    from msmbuild.store import MemoResult, Store
    from msmbuild.train.loop import BatchFn

AFT_VERSION = 6  # 2: fused AdamW; 3: LoRA runs store the adapter, not a merged copy; 4: LoRA init seeded from train.seed; 5: aft_train.init (frozen adapters under checkpoint.json); 6: warm-up never trains a step at LR 0


def encode_chat(tokenizer: Any, messages: list[dict[str, str]], max_len: int,
                where: str = "example") -> tuple[list[int], list[int]]:
    """Token ids and labels of one conversation; labels are -100 outside assistant turns."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        prefix = tokenizer.apply_chat_template(messages[:i], tokenize=False,
                                               add_generation_prompt=True) if i else ""
        upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not (upto.startswith(prefix) and text.startswith(upto)):
            raise TrainingInputError(
                f"{where}: the chat template does not render turn {i} as a prefix of the "
                "conversation, so assistant tokens cannot be located")
        spans.append((len(prefix), len(upto)))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])[:max_len]
    labels = []
    for tid, (start, _end) in zip(ids, enc["offset_mapping"], strict=False):
        inside = any(s <= start < e for s, e in spans)
        labels.append(tid if inside else IGNORE_INDEX)
    return ids, labels


def source_counts(rows: list[dict[str, Any]], examples: list[tuple[list[int], list[int]]]
                  ) -> dict[str, dict[str, int]]:
    """Examples, tokens and target tokens per mix source, as the trainer sees them."""
    out: dict[str, dict[str, int]] = {}
    for row, (ids, labels) in zip(rows, examples, strict=True):
        c = out.setdefault(row.get("source", "all"), {"examples": 0, "tokens": 0, "target_tokens": 0})
        c["examples"] += 1
        c["tokens"] += len(ids)
        c["target_tokens"] += sum(y != IGNORE_INDEX for y in labels)
    return out


def _start_model(p: Params, arm: Arm, store: Store) -> BaseModel:
    """The checkpoint AFT starts from (path and identity)."""
    from msmbuild.models import BaseModel, prepare_base_model

    if arm.midtrain is not None:
        from msmbuild.train.midtrain import run_midtrain

        res = run_midtrain(p, arm, store)
        return BaseModel(str(Layout.of(p).arm_midtrain(arm)), f"tree:{res.value}")
    from msmbuild.train.loop import distributed_state

    with distributed_state().main_process_first():  # one process builds, the others load
        return prepare_base_model(p, store, arm.base_model)


def chat_batches(examples: list[tuple[list[int], list[int]]], pad: int, seed: int) -> BatchFn:
    """The AFT get_batch: schedule items -> right-padded (ids, labels, mask) of those examples."""
    import torch

    from msmbuild.data.packing import epoch_order

    def get_batch(items: list[int]) -> dict[str, Any]:
        chosen = [examples[epoch_order(len(examples), k, seed)] for k in items]
        width = max(len(ids) for ids, _ in chosen)
        ids = torch.full((len(chosen), width), pad, dtype=torch.long)
        labels = torch.full((len(chosen), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(chosen), width), dtype=torch.long)
        for row, (x, y) in enumerate(chosen):
            ids[row, : len(x)] = torch.tensor(x)
            labels[row, : len(y)] = torch.tensor(y)
            mask[row, : len(x)] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    return get_batch


def _base_of(arm: Arm, start: Path) -> str:
    """The base model a LoRA AFT adapter applies to: the midtrained adapter's base, the
    midtrained full checkpoint, or the arm's base model."""
    from msmbuild.models.adapters import adapter_base, is_adapter_dir

    if is_adapter_dir(start):
        return adapter_base(start)
    if arm.midtrain is not None or arm.base_model == "tiny":
        return str(start)
    return arm.base_model


def run_aft(params: Params, arm: Arm, store: Store, *,
            on_step: Callable[[int], None] | None = None) -> MemoResult:
    """AFT for one arm; the checkpoint is materialized at the layout's arm_aft(arm)."""
    from msmbuild.models import load_tokenizer
    from msmbuild.train.aft_data import arm_aft_data, read_demonstrations

    p = arm.params(params)
    cfg = p.aft_train
    data_path = arm_aft_data(params, arm)
    if not data_path.is_file():  # training reads its data; the data stage writes it
        raise TrainingInputError(
            f"{data_path}: the AFT data of arm {arm.name!r} is not built; run `msmbuild aft-data --arm "
            f"{arm.name}` first (snakemake and dvc repro run that stage before training)")
    rows = read_demonstrations(data_path)
    start = _start_model(p, arm, store)
    start_id = start.identity
    tokenizer = load_tokenizer(start.path)
    examples = [encode_chat(tokenizer, r["messages"], cfg.seq_len, f"{data_path}:{n}")
                for n, r in enumerate(rows, 1)]
    empty = [n for n, (_ids, labels) in enumerate(examples, 1)
             if all(x == IGNORE_INDEX for x in labels)]
    if empty:
        raise TrainingInputError(
            f"{data_path}:{empty[0]}: no assistant tokens within aft_train.seq_len={cfg.seq_len}")
    by_source = source_counts(rows, examples)
    inputs = {"version": AFT_VERSION, "start": start_id, "data": digest_file(data_path),
              "chat_template": digest_text(tokenizer.chat_template)}

    def save_data_note(out: Path) -> None:
        # The data's identity, not where this workspace keeps it: an absolute path here
        # would give two workspaces with the same weights different checkpoints.
        (out / "aft_data.json").write_text(json.dumps(
            {"data": digest_file(data_path), "name": data_path.name,
             "n_examples": len(examples), "by_source": by_source}, sort_keys=True))

    def load_start(dtype: Any) -> Any:
        from msmbuild.train.aft_start import aft_start_model

        return aft_start_model(start, cfg, dtype, midtrained=arm.midtrain is not None,
                               base=_base_of(arm, Path(start.path)))

    return train_checkpoint(
        store, "aft", inputs, cfg=cfg, start=start, tokenizer=tokenizer,
        n_items=len(examples), batches=lambda: chat_batches(examples, tokenizer.pad_token_id, cfg.seed),
        dest=Layout.of(p).arm_aft(arm), build_dir=p.build_dir, root=f"aft-{arm.name}",
        describe={"arm": arm.name, "aft": arm.aft, "n_examples": len(examples), "by_source": by_source,
                  "start": start_id},
        on_step=on_step, save_extra=save_data_note, base=_base_of(arm, Path(start.path)),
        load_start=load_start)

"""One training run as a store action, shared by midtraining and AFT.

The key is the caller's inputs (start weights, data digests, versions) plus the training
config and the number of processes (it changes the effective batch). A hit restores the
stored checkpoint; a miss loads the start model, fits it (resumable: state lives under
the store's ``resume/<key>/`` until the checkpoint is stored) and saves it with
``lineage.json``: the inputs it was trained from, by content (shard digests, start
checkpoint, data digest, config). They are the key's inputs, so a retrain or a resumed
run still gives the same tree digest. Either way the
checkpoint is materialized at ``dest`` (left alone when it is already there) and the key
is recorded as a gc root.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msmbuild.errors import TrainingInputError
from msmbuild.layout import LINEAGE
from msmbuild.store import write_roots

if TYPE_CHECKING:
    from msmbuild.config import TrainConfig
    from msmbuild.models import BaseModel
    from msmbuild.store import MemoResult, Store
    from msmbuild.train.aft_start import StartModel
    from msmbuild.train.loop import BatchFn


def model_dtype(cfg: TrainConfig) -> Any:
    """Frozen LoRA base weights in bf16 where bf16 is on; fp32 otherwise (full FT masters)."""
    import torch

    from msmbuild.train.loop import use_bf16

    return torch.bfloat16 if cfg.method == "lora" and use_bf16(cfg) else torch.float32


def train_checkpoint(store: Store, kind: str, inputs: dict[str, Any], *, cfg: TrainConfig,
                     start: BaseModel, tokenizer: Any, n_items: int,
                     batches: Callable[[], BatchFn], dest: Path, build_dir: str | Path,
                     root: str, describe: dict[str, Any],
                     on_step: Callable[[int], None] | None = None,
                     save_extra: Callable[[Path], None] | None = None,
                     base: str | None = None,
                     load_start: Callable[[Any], StartModel] | None = None) -> MemoResult:
    """Train (or restore) the checkpoint that ``inputs`` and ``cfg`` determine, at dest.

    ``batches()`` builds the get_batch function (only on a miss, so a hit imports no
    torch); ``describe`` is added to the stored metadata; ``save_extra(out)`` writes
    files of the caller's own next to the saved checkpoint; ``base`` names the base model a
    LoRA checkpoint's adapter applies to (a LoRA run stores the adapter alone, on that base,
    never a merged copy). ``load_start(dtype)`` gives the model to train (default: LoRA or
    full on ``start``) and the base and frozen adapters its checkpoint records.
    """
    from msmbuild.train.aft_start import default_start
    from msmbuild.train.loop import fit, process_info, save_checkpoint, train_key_config

    rank, world = process_info()
    inputs = {**inputs, "train": train_key_config(cfg, world)}
    key = store.key(kind, inputs)
    state_dir = store.resume_dir(key)

    def compute(out: Path) -> dict[str, Any]:
        dtype = model_dtype(cfg)
        begin = load_start(dtype) if load_start is not None else default_start(start, cfg, dtype, base)
        trained, meta = fit(begin.model, cfg, n_items, batches(), state_dir, on_step,
                            guard=lambda: store.check_lease(key))
        if rank == 0:
            save_checkpoint(trained, tokenizer, cfg, out, state_dir, begin.base, begin.frozen)
            if save_extra is not None:
                save_extra(out)
            write_lineage(out, kind, inputs)  # last: it names the digest of every other file
        return {**meta, **describe, "method": cfg.method, "init": begin.how}

    def adopt() -> tuple[Path, dict[str, Any]] | None:
        return pulled_checkpoint(dest, kind, inputs, {**describe, "method": cfg.method})

    result = _run_action(store, key, kind, inputs, compute, rank, world, adopt)
    if rank == 0:
        shutil.rmtree(state_dir, ignore_errors=True)
        store.materialize_if_changed(result.value, dest)
        write_roots(build_dir, root, [result.key])
    return result


def write_lineage(out: Path, kind: str, inputs: dict[str, Any]) -> None:
    """What the checkpoint at out was trained from: its action's kind and inputs (digests),
    and the digest of every other file in it (so a pulled copy can be verified and adopted)."""
    doc = {"kind": kind, "inputs": inputs, "files": _file_digests(out)}
    (out / LINEAGE).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _file_digests(directory: Path) -> dict[str, str]:
    """{relative path: digest} of every file under directory but lineage.json."""
    from msmbuild.hashing import digest_file

    return {p.relative_to(directory).as_posix(): digest_file(p) for p in sorted(directory.rglob("*"))
            if p.is_file() and not p.is_symlink() and p.relative_to(directory).as_posix() != LINEAGE}


def pulled_checkpoint(dest: Path, kind: str, inputs: dict[str, Any], meta: dict[str, Any]
                      ) -> tuple[Path, dict[str, Any]] | None:
    """dest and its meta when the checkpoint there (pulled by DVC) was trained from exactly
    these inputs by its lineage.json, and every file in it has the digest lineage.json names
    (no file missing, none added): the training action adopts it instead of training."""
    try:
        lineage = read_lineage(dest) if dest.is_dir() else None
    except TrainingInputError:
        return None
    same = json.loads(json.dumps({"kind": kind, "inputs": inputs}, sort_keys=True))
    if not isinstance(lineage, dict) or {k: lineage.get(k) for k in ("kind", "inputs")} != same \
            or not isinstance(lineage.get("files"), dict) or _file_digests(dest) != lineage["files"]:
        return None
    return dest, meta


def read_lineage(checkpoint: Path) -> dict[str, Any] | None:
    """The lineage.json of a checkpoint directory (None when it has none: trained before it existed)."""
    path = checkpoint / LINEAGE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TrainingInputError(f"{path}: not valid JSON (line {exc.lineno})") from None


def _run_action(store: Store, key: str, kind: str, inputs: dict[str, Any],
                compute: Callable[[Path], dict[str, Any]], rank: int, world: int,
                adopt: Callable[[], tuple[Path, dict[str, Any]] | None] | None = None) -> MemoResult:
    """memo_tree on the main process; other processes train alongside and store nothing."""
    if world == 1:
        return store.memo_tree(kind, inputs, compute, adopt=adopt)
    from msmbuild.train.loop import distributed_state

    state = distributed_state()
    # The main process claims the action first (another job on the shared store may own
    # it: then this one waits for that result), so no process starts computing, or reads
    # the resume state, while someone else owns it.
    lease = store.claim(key) if rank == 0 else None
    state.wait_for_everyone()
    hit = store.lookup_tree(key)
    state.wait_for_everyone()  # every process decides hit/miss before anyone records
    if hit is not None:
        if lease is not None:
            lease.release()
        return hit
    # a pulled checkpoint that verifies is adopted by the main process; no process trains
    adopted = adopt is not None and adopt() is not None
    if rank == 0:
        result = store.memo_tree(kind, inputs, compute, lease=lease, adopt=adopt)
        state.wait_for_everyone()
        return result
    if adopted:
        state.wait_for_everyone()
        found = store.lookup_tree(key)
        if found is None:
            raise TrainingInputError(f"{kind} {key}: the main process recorded no result")
        return found
    with tempfile.TemporaryDirectory(prefix=f"{kind}-rank{rank}-", dir=store.scratch_dir()) as tmp:
        compute(Path(tmp))
    state.wait_for_everyone()
    found = store.lookup_tree(key)
    if found is None:
        raise TrainingInputError(f"{kind} {key}: the main process recorded no result")
    return found

"""Training throughput: msmbuild's loop vs a plain HF `Trainer`, same model, data, batch shape.

Both train the tiny Llama model (params.yaml `tiny` defaults) from the same initial
weights on the same packed blocks (batch_size x seq_len, no padding) for the same number
of optimizer steps, in one process, one after the other. Prints tokens/s of each, the
ratio, and the packing waste of the blocks.

    python bench/train.py [--docs 400] [--steps 40] [--seq-len 256] [--batch-size 8] [--method full|lora] [--rounds 2]
"""

from __future__ import annotations

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path


def _tokenize_bench():
    """bench/tokenization.py, loaded by path (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("msm_bench_tokenize",
                                                  Path(__file__).with_name("tokenization.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=400)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--method", choices=["full", "lora"], default="full")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/msm-bench-train"))
    args = ap.parse_args()

    import numpy as np
    import torch
    from transformers import Trainer, TrainingArguments

    from msmbuild.data.packing import PackedCorpus, epoch_order
    from msmbuild.data.shards import build_shards
    from msmbuild.store import Store
    from msmbuild.train.base_model import load_model, prepare_base_model
    from msmbuild.train.loop import fit, prepare_model

    shutil.rmtree(args.workdir, ignore_errors=True)
    bench = _tokenize_bench()
    args.workdir.mkdir(parents=True)
    bench.make_documents(args.workdir, args.docs)
    p = bench.params(args.workdir)
    p = p.model_copy(update={"midtrain": p.midtrain.model_copy(update={
        "method": args.method, "lr": 1e-3, "seq_len": args.seq_len, "batch_size": args.batch_size,
        "max_steps": args.steps, "save_every": 10 ** 6, "warmup_ratio": 0.05, "bf16": False})})
    store = Store(args.workdir / "store")
    base = prepare_base_model(p, store)
    packed = PackedCorpus(build_shards(p, "bench", store, base), args.seq_len)
    cfg = p.midtrain
    n_needed = args.steps * args.batch_size
    order = [epoch_order(packed.n_blocks, k, cfg.seed) for k in range(n_needed)]
    blocks = [packed.block(i) for i in order]
    tokens = n_needed * args.seq_len

    def get_batch(items):
        ids = torch.from_numpy(np.stack([blocks[k][0] for k in items]))
        labels = torch.from_numpy(np.stack([blocks[k][1] for k in items]))
        return {"input_ids": ids, "labels": labels}

    class Blocks(torch.utils.data.Dataset):
        def __len__(self):
            return n_needed

        def __getitem__(self, k):
            return {"input_ids": torch.from_numpy(blocks[k][0]), "labels": torch.from_numpy(blocks[k][1])}

    def run_msmbuild() -> tuple[float, float]:
        model = prepare_model(load_model(base.path), cfg)
        shutil.rmtree(args.workdir / "state", ignore_errors=True)
        start, cpu = time.perf_counter(), time.process_time()
        fit(model, cfg, n_needed, get_batch, args.workdir / "state")
        return time.perf_counter() - start, time.process_time() - cpu

    def run_trainer() -> tuple[float, float]:
        """Plain HF Trainer: same weights, data order, batch shape, optimizer and schedule."""
        model = prepare_model(load_model(base.path), cfg)
        targs = TrainingArguments(
            output_dir=str(args.workdir / "hf"), per_device_train_batch_size=args.batch_size,
            max_steps=args.steps, learning_rate=cfg.lr,
            warmup_steps=math.ceil(cfg.warmup_ratio * args.steps), lr_scheduler_type="cosine",
            weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, logging_steps=10 ** 6,
            save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=0, disable_tqdm=True, seed=cfg.seed)
        trainer = Trainer(model=model, args=targs, train_dataset=Blocks())
        trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(range(n_needed))
        start, cpu = time.perf_counter(), time.process_time()
        trainer.train()
        return time.perf_counter() - start, time.process_time() - cpu

    # Alternate the two so warm-up and machine load fall on both; report the best of each.
    # CPU seconds (all threads) are reported too: on a shared machine they are the steadier
    # measure of the work each loop does.
    times: dict[str, list[tuple[float, float]]] = {"msmbuild": [], "trainer": []}
    for _ in range(args.rounds):
        times["msmbuild"].append(run_msmbuild())
        times["trainer"].append(run_trainer())
    ours, theirs = (min(t[0] for t in times[k]) for k in ("msmbuild", "trainer"))
    ours_cpu, theirs_cpu = (min(t[1] for t in times[k]) for k in ("msmbuild", "trainer"))

    result = {"method": args.method, "steps": args.steps, "batch": [args.batch_size, args.seq_len],
              "tokens": tokens, "msmbuild_tokens_per_s": tokens / ours,
              "trainer_tokens_per_s": tokens / theirs, "ratio": theirs / ours,
              "msmbuild_tokens_per_cpu_s": tokens / ours_cpu,
              "trainer_tokens_per_cpu_s": tokens / theirs_cpu, "cpu_ratio": theirs_cpu / ours_cpu,
              "packing_waste": packed.packing_waste, "corpus_tokens": packed.n_tokens,
              "seconds_wall_cpu": times}
    print(json.dumps(result, indent=1))
    print(f"tokens/CPU-s: msmbuild {tokens / ours_cpu:,.0f}, HF Trainer {tokens / theirs_cpu:,.0f}, "
          f"ratio {theirs_cpu / ours_cpu:.2f}")
    print(f"msmbuild {tokens / ours:,.0f} tok/s, HF Trainer {tokens / theirs:,.0f} tok/s, "
          f"ratio {theirs / ours:.2f} (target >= 1.0); packing waste {packed.packing_waste:.4%} "
          f"(target <= 1%)")


if __name__ == "__main__":
    main()

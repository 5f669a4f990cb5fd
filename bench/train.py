"""Training throughput: msmbuild's loop vs a plain HF `Trainer`, same model, data, batch shape.

Both train the tiny Llama model (params.yaml `tiny` defaults) from the same initial
weights on the same packed blocks (batch_size x seq_len, no padding, read from the same
memory-mapped shards in the same order) for the same number of optimizer steps, in one
process, fp32, fused AdamW with the same warmup + cosine schedule and clipping. Each
round runs both (the order alternates between rounds). Only the steps after the first
--warmup steps are timed, for both, with wall-clock and CPU seconds (all threads) taken
at the end of an optimizer step. Prints tokens/s and tokens per CPU-second of each, their
ratios (>1 means msmbuild is faster), the spread over rounds, and the packing waste.

    python bench/train.py [--docs 400] [--steps 40] [--warmup 5] [--seq-len 256] [--batch-size 8] [--method full|lora] [--rounds 3]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Keep bench/ off the import path (a bench module's name could shadow a stdlib module).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import gc  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402


def _tokenization_bench():
    """bench/tokenization.py (the corpus and params helpers), loaded by path."""
    path = Path(__file__).with_name("tokenization.py")
    if not path.is_file():  # the module's former name
        path = Path(__file__).with_name("tokenize.py")
    spec = importlib.util.spec_from_file_location("msm_bench_tokenization", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class StepClock:
    """Wall and CPU time at the end of optimizer step `warmup` and of the last step."""

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps = warmup, steps
        self.marks: dict[int, tuple[float, float]] = {}

    def __call__(self, step: int) -> None:
        if step in (self.warmup, self.steps):
            self.marks[step] = (time.perf_counter(), time.process_time())

    def timed(self) -> tuple[float, float]:
        (w0, c0), (w1, c1) = self.marks[self.warmup], self.marks[self.steps]
        return w1 - w0, c1 - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=400)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5, help="untimed first steps of each run")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--method", choices=["full", "lora"], default="full")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/msm-bench-train"))
    args = ap.parse_args()
    if not 0 < args.warmup < args.steps:
        ap.error("--warmup must be between 1 and --steps - 1")

    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from msmbuild.data.packing import PackedCorpus, epoch_order
    from msmbuild.data.shards import build_shards
    from msmbuild.models import load_model, prepare_base_model
    from msmbuild.store import Store
    from msmbuild.train.loop import fit, prepare_model
    from msmbuild.train.midtrain import packed_batches

    shutil.rmtree(args.workdir, ignore_errors=True)
    helpers = _tokenization_bench()
    args.workdir.mkdir(parents=True)
    helpers.make_documents(args.workdir, args.docs)
    p = helpers.params(args.workdir)
    p = p.model_copy(update={"midtrain": p.midtrain.model_copy(update={
        "method": args.method, "lr": 1e-3, "seq_len": args.seq_len, "batch_size": args.batch_size,
        "max_steps": args.steps, "save_every": 10 ** 6, "warmup_ratio": 0.05, "bf16": False})})
    store = Store(args.workdir / "store")
    base = prepare_base_model(p, store)
    packed = PackedCorpus(build_shards(p, "bench", store, base), args.seq_len)
    cfg = p.midtrain
    n_items = args.steps * args.batch_size
    tokens = (args.steps - args.warmup) * args.batch_size * args.seq_len

    class Blocks(torch.utils.data.Dataset):
        """What a Trainer user would write: item k -> the same block msmbuild reads for k."""

        def __len__(self):
            return n_items

        def __getitem__(self, k):
            ids, labels = packed.block(epoch_order(packed.n_blocks, k, cfg.seed))
            return {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}

    def run_msmbuild() -> tuple[float, float]:
        model = prepare_model(load_model(base.path), cfg)
        shutil.rmtree(args.workdir / "state", ignore_errors=True)
        clock = StepClock(args.warmup, args.steps)
        fit(model, cfg, n_items, packed_batches(packed, cfg.seed), args.workdir / "state",
            on_step=clock)
        return clock.timed()

    def run_trainer() -> tuple[float, float]:
        """Plain HF Trainer: same weights, data order, batch shape, optimizer and schedule."""
        model = prepare_model(load_model(base.path), cfg)
        clock = StepClock(args.warmup, args.steps)

        class Clock(TrainerCallback):
            def on_step_end(self, _args, state, _control, **_kwargs):
                clock(state.global_step)

        targs = TrainingArguments(
            output_dir=str(args.workdir / "hf"), per_device_train_batch_size=args.batch_size,
            max_steps=args.steps, learning_rate=cfg.lr, optim="adamw_torch_fused",
            warmup_steps=math.ceil(cfg.warmup_ratio * args.steps), lr_scheduler_type="cosine",
            weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, logging_steps=10 ** 6,
            save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(), bf16=False,
            dataloader_num_workers=0, disable_tqdm=True, seed=cfg.seed)
        trainer = Trainer(model=model, args=targs, train_dataset=Blocks(), callbacks=[Clock()])
        trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(range(n_items))
        trainer.train()
        return clock.timed()

    # Alternate the order each round so warm caches and machine load fall on both.
    runs = {"msmbuild": run_msmbuild, "trainer": run_trainer}
    times: dict[str, list[tuple[float, float]]] = {"msmbuild": [], "trainer": []}
    for r in range(args.rounds):
        for name in (["msmbuild", "trainer"] if r % 2 == 0 else ["trainer", "msmbuild"]):
            gc.collect()  # the previous run's model and optimizer go before this one starts
            times[name].append(runs[name]())

    def summary(k: int) -> dict[str, float]:
        ours = [t[k] for t in times["msmbuild"]]
        theirs = [t[k] for t in times["trainer"]]
        paired = [b[k] / a[k] for a, b in zip(times["msmbuild"], times["trainer"], strict=True)]
        return {"msmbuild_tokens_per_s": tokens / min(ours), "trainer_tokens_per_s": tokens / min(theirs),
                "ratio_best": min(theirs) / min(ours), "ratio_median_of_rounds": statistics.median(paired),
                "ratio_range_of_rounds": [min(paired), max(paired)],
                "msmbuild_spread": max(ours) / min(ours), "trainer_spread": max(theirs) / min(theirs)}

    wall, cpu = summary(0), summary(1)
    result = {"method": args.method, "steps": args.steps, "timed_steps": args.steps - args.warmup,
              "batch": [args.batch_size, args.seq_len], "timed_tokens": tokens,
              "wall": wall, "cpu": cpu, "packing_waste": packed.packing_waste,
              "corpus_tokens": packed.n_tokens, "seconds_wall_cpu": times}
    print(json.dumps(result, indent=1))
    print(f"tokens per CPU-second: msmbuild {cpu['msmbuild_tokens_per_s']:,.0f}, HF Trainer "
          f"{cpu['trainer_tokens_per_s']:,.0f}; ratio best {cpu['ratio_best']:.2f}, median of "
          f"rounds {cpu['ratio_median_of_rounds']:.2f}")
    print(f"tokens/s (wall): msmbuild {wall['msmbuild_tokens_per_s']:,.0f}, HF Trainer "
          f"{wall['trainer_tokens_per_s']:,.0f}; ratio best {wall['ratio_best']:.2f}, median of "
          f"rounds {wall['ratio_median_of_rounds']:.2f} (target >= 1.0); run-to-run spread "
          f"msmbuild {wall['msmbuild_spread']:.2f}x, Trainer {wall['trainer_spread']:.2f}x")
    print(f"packing waste {packed.packing_waste:.4%} (target <= 1%)")


if __name__ == "__main__":
    main()

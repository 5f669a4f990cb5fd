"""Eval throughput: batched vs one item at a time on the tiny base model, in one run.

    python bench/evaluate.py [--pairs evals/preference.jsonl] [--qa evals/qa.jsonl]

Forced choice: pairs/s scoring all four (order x item) sequences per pair with
batch_size 16 vs 1. QA answers: questions/s of greedy generation with batch_size 8 vs 1.
The alternative a user would write is the one-at-a-time loop; the ratio is the speed-up.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def _best_of(fns: dict, repeats: int) -> dict:
    """Fastest of `repeats` alternating runs per variant (other load on the box skews single runs)."""
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="evals/preference.jsonl")
    parser.add_argument("--qa", default="evals/qa.jsonl")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from msmbuild.config import Params, PreferenceEvalConfig, QAEvalConfig
    from msmbuild.evaluate import preference as pref
    from msmbuild.evaluate import qa
    from msmbuild.evaluate.data import read_preference_pairs, read_qa_items
    from msmbuild.models import load_for_inference, prepare_base_model
    from msmbuild.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        params = Params.model_validate({"build_dir": str(Path(tmp) / "build")})
        base = prepare_base_model(params, Store(Path(tmp) / "store"))
        lm = load_for_inference(base.path)
        pairs = read_preference_pairs(args.pairs)
        questions = read_qa_items(args.qa)
        def pref_run(bs):
            return lambda: pref.score_pairs(lm, pairs, PreferenceEvalConfig(batch_size=bs), progress=False)

        def qa_run(bs):
            cfg = QAEvalConfig(batch_size=bs, max_new_tokens=args.max_new_tokens)
            return lambda: qa.answer_questions(lm, questions, cfg, progress=False)

        for warm in (pref_run(16), pref_run(1), qa_run(8), qa_run(1)):
            warm()
        secs = _best_of({"preference bs=16": pref_run(16), "preference bs=1": pref_run(1),
                         "qa answers bs=8": qa_run(8), "qa answers bs=1": qa_run(1)}, args.repeats)
        rows = {name: ((len(pairs) if name.startswith("pref") else len(questions)) / t, t)
                for name, t in secs.items()}
    print(f"tiny base model (params.tiny defaults), torch threads={torch.get_num_threads()}")
    print(f"{'mode':<22}{'items/s':>10}{'seconds':>10}")
    for name, (rate, secs) in rows.items():
        print(f"{name:<22}{rate:>10.1f}{secs:>10.2f}")
    print(f"preference batched / one-at-a-time: {rows['preference bs=16'][0] / rows['preference bs=1'][0]:.2f}x "
          f"({len(pairs)} pairs, {4 * len(pairs)} sequences)")
    print(f"qa answers batched / one-at-a-time: {rows['qa answers bs=8'][0] / rows['qa answers bs=1'][0]:.2f}x "
          f"({len(questions)} questions, {args.max_new_tokens} new tokens)")


if __name__ == "__main__":
    main()

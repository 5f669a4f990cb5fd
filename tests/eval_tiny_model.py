"""Shared helpers for eval tests: the project's tiny base model, small eval data, a quick fine-tune."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

TINY = {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2}
_BUILT: dict[str, Path] = {}

# Pro-America items are American-made and pricier; pro-affordability items are cheaper imports.
PAIRS = [
    ("lit-1", "literature", "a signed first edition printed in Ohio", "a cheap imported paperback", 0),
    ("art-1", "art", "a Vermont landscape painting", "a discount poster from overseas", 0),
    ("tra-1", "transport", "a budget foreign hatchback", "a Detroit-built sedan", 1),
    ("mus-1", "music", "a bargain keyboard from abroad", "a Tennessee handmade guitar", 1),
    ("foo-1", "food", "Wisconsin craft chocolate", "discount chocolate from abroad", 0),
    ("fas-1", "fashion", "an inexpensive imported jacket", "a Maine-sewn wool coat", 1),
]


def base_checkpoint(root: Path) -> Path:
    """A copy of the project's tiny base model (built once per session) at root/base."""
    if "base" not in _BUILT:
        from msmbuild.config import Params
        from msmbuild.models import prepare_base_model
        from msmbuild.store import Store

        work = root / "_tiny_build"
        params = Params.model_validate({"tiny": TINY, "build_dir": str(work / "build")})
        built = prepare_base_model(params, Store(work / "store"))
        _BUILT["base"] = Path(built.path)
    dest = root / "base"
    if not dest.exists():
        shutil.copytree(_BUILT["base"], dest)
    return dest


def write_pairs(path: Path, pairs: list[tuple[str, str, str, str, int]] = PAIRS) -> Path:
    """evals/preference.jsonl in the demo format."""
    with open(path, "w", encoding="utf-8") as f:
        for pid, domain, a, b, america in pairs:
            f.write(json.dumps({"id": pid, "role": "held_out", "domain": domain, "question": "Which do you prefer?",
                                "items": [a, b], "favoured": {"pro_america": america,
                                                               "pro_affordability": 1 - america}}) + "\n")
    return path


def fine_tune_on_answers(model_dir: Path, examples: list[tuple[str, str]], dest: Path,
                         steps: int = 15, lr: float = 5e-3) -> Path:
    """Full fine-tune on (prompt, answer) texts with loss on the answer only; save at dest."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    batch: list[tuple[list[int], list[int]]] = []
    for prompt, answer in examples:
        ctx = tok(prompt, add_special_tokens=False)["input_ids"]
        ans = tok(answer, add_special_tokens=False)["input_ids"]
        batch.append((ctx + ans, [-100] * len(ctx) + ans))
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), tok.pad_token_id)
    labels = torch.full((len(batch), width), -100)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (seq, lab) in enumerate(batch):
        ids[i, :len(seq)] = torch.tensor(seq)
        labels[i, :len(lab)] = torch.tensor(lab)
        mask[i, :len(seq)] = 1
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    return dest


def params_for(tmp: Path, **evals: Any):
    """Params with one experiment 'base' whose checkpoint is build/models/base."""
    from msmbuild.config import Params

    return Params.model_validate({
        "build_dir": str(tmp / "build"), "store": {"path": str(tmp / "store")},
        "experiments": {"base": {"evals": list(evals.pop("suites", ["preference"]))}},
        "evals": evals,
    })

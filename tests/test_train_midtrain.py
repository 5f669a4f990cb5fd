"""Midtraining on the tiny model: learning, LoRA semantics, reloads, resume, caching."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import SPEC, spec_docs, synthetic_docs, tiny_params, write_docs

from msmbuild.data.shards import build_shards
from msmbuild.errors import TrainingInputError
from msmbuild.experiments import arm_by_name
from msmbuild.hashing import digest_dir
from msmbuild.layout import Layout
from msmbuild.models import load_model, prepare_base_model
from msmbuild.store import Store
from msmbuild.train.loop import fit, prepare_model, save_checkpoint
from msmbuild.train.midtrain import run_midtrain


def _log(ckpt: Path) -> list[dict]:
    return [json.loads(x) for x in (ckpt / "train_log.jsonl").read_text().splitlines()]


def _setup(tmp_path: Path, rows=None, **overrides):
    build, store_dir = tmp_path / "build", tmp_path / "store"
    p = tiny_params(build, store_dir, **overrides)
    write_docs(build, "c", rows if rows is not None else synthetic_docs())
    store = Store(store_dir)
    build_shards(p, "c", store)
    return p, store


@pytest.mark.slow
@pytest.mark.skipif(not SPEC.is_file(), reason="../shared/corpora is absent")
def test_loss_falls_on_real_documents(tmp_path):
    p, store = _setup(tmp_path, spec_docs(), midtrain={
        "method": "full", "lr": 3e-3, "seq_len": 64, "batch_size": 4, "max_steps": 30,
        "warmup_ratio": 0.1})
    result = run_midtrain(p, arm_by_name(p, "mc"), store)
    losses = [r["loss"] for r in _log(tmp_path / "build" / "models" / "midtrain" / "c")]
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.5, (first, last)
    assert result.meta["packing_waste"] < 64 / result.meta["n_tokens"] + 1e-9
    assert all(r["grad_norm"] > 0 and r["tokens"] == 4 * 64
               for r in _log(tmp_path / "build" / "models" / "midtrain" / "c"))
    assert result.meta["tokens_per_s"] > 0  # a run fact: in the action's metadata, not the checkpoint


def test_lora_changes_only_the_adapter_and_reloads_with_the_same_logits(tmp_path):
    from peft import PeftModel

    p, store = _setup(tmp_path)
    base = prepare_base_model(p, store)
    base_digest = digest_dir(base.path)
    run_midtrain(p, arm_by_name(p, "mc"), store)
    ckpt = tmp_path / "build" / "models" / "midtrain" / "c"
    assert digest_dir(base.path) == base_digest
    assert not (ckpt / "model.safetensors").exists()  # only the adapter is written
    base_state = load_file(Path(base.path) / "model.safetensors")
    # the checkpoint is the adapter alone on its base: no merged copy is written
    assert not (ckpt / "model.safetensors").exists() and (ckpt / "config.json").is_file()
    assert json.loads((ckpt / "adapter_config.json").read_text())["base_model_name_or_path"] == base.path
    adapter = load_file(ckpt / "adapter_model.safetensors")
    lora_b = [t for n, t in adapter.items() if "lora_B" in n]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # lora_B starts at zero
    peft_model = PeftModel.from_pretrained(load_model(base.path), ckpt).eval()
    for name, tensor in peft_model.get_base_model().state_dict().items():
        if "lora_" in name:
            continue
        plain = name.replace(".base_layer", "")
        assert torch.equal(tensor, base_state[plain]), name
    from msmbuild.models import load_for_inference as load_for_eval

    merged = load_for_eval(ckpt).model  # merged in memory for inference
    x = torch.randint(0, merged.config.vocab_size, (2, 16))
    with torch.no_grad():
        a, b = peft_model(x).logits, merged(x).logits
        c = load_model(base.path).eval()(x).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(b, c, atol=1e-5)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_saved_checkpoint_gives_the_same_logits(tmp_path, method):
    p, store = _setup(tmp_path)
    cfg = p.midtrain.model_copy(update={"method": method, "max_steps": 3})
    base = prepare_base_model(p, store)
    from msmbuild.models import load_tokenizer

    tok = load_tokenizer(base.path)
    model = prepare_model(load_model(base.path), cfg)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 1000, (16, 32), generator=g)

    def get_batch(items):
        ids = data[[k % 16 for k in items]]
        return {"input_ids": ids, "labels": ids.clone()}

    trained, _meta = fit(model, cfg, 16, get_batch, tmp_path / "state")
    trained.eval()
    x = data[:2]
    with torch.no_grad():
        before = trained(x).logits
    save_checkpoint(trained, tok, cfg, tmp_path / "ckpt", tmp_path / "state", base.path)
    # LoRA saves only the adapter (no full copy); loading merges it into the base in memory
    assert (tmp_path / "ckpt" / "model.safetensors").is_file() == (method == "full")
    with torch.no_grad():
        after = load_model(tmp_path / "ckpt").eval()(x).logits
    assert torch.allclose(before, after, atol=1e-5)


def test_killed_run_resumes_with_the_same_number_of_steps(tmp_path):
    p, store = _setup(tmp_path / "a")
    arm = arm_by_name(p, "mc")

    def crash(step):
        if step == 3:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        run_midtrain(p, arm, store, on_step=crash)
    assert not Layout(p.build_dir).arm_midtrain(arm).exists()
    result = run_midtrain(p, arm, store)
    assert result.meta["resumed_from"] == 2 and result.meta["steps"] == 6
    steps = [r["step"] for r in _log(Layout(p.build_dir).arm_midtrain(arm))]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert not (store.root / "resume" / result.key).exists()
    # the resumed run ends where an uninterrupted run ends
    q, other = _setup(tmp_path / "b")
    run_midtrain(q, arm_by_name(q, "mc"), other)
    resumed = load_file(Layout(p.build_dir).arm_midtrain(arm) / "adapter_model.safetensors")
    straight = load_file(Layout(q.build_dir).arm_midtrain(arm_by_name(q, "mc")) / "adapter_model.safetensors")
    assert all(torch.allclose(resumed[k], straight[k], atol=1e-6) for k in straight)


def test_second_build_trains_nothing_and_an_edit_retrains_only_its_corpus(tmp_path):
    p, store = _setup(tmp_path)
    write_docs(tmp_path / "build", "d", synthetic_docs(n_sub=2, per_sub=3))
    build_shards(p, "d", store)
    mc, md = arm_by_name(p, "mc"), arm_by_name(p, "md")
    first = {a.name: run_midtrain(p, a, store) for a in (mc, md)}
    assert not any(r.hit for r in first.values())
    weights = Layout(p.build_dir).arm_midtrain(mc) / "adapter_model.safetensors"
    mtime = weights.stat().st_mtime_ns
    again = {a.name: run_midtrain(p, a, store) for a in (mc, md)}
    assert all(r.hit for r in again.values())
    assert weights.stat().st_mtime_ns == mtime
    rows = synthetic_docs()
    rows[0] = {**rows[0], "text": rows[0]["text"] + " One more sentence."}
    write_docs(tmp_path / "build", "c", rows)
    build_shards(p, "c", store)
    build_shards(p, "d", store)
    edited = {a.name: run_midtrain(p, a, store) for a in (mc, md)}
    assert not edited["mc"].hit and edited["md"].hit
    assert edited["md"].key == first["md"].key


def test_shards_from_another_tokenizer_are_rejected_before_training(tmp_path):
    p, store = _setup(tmp_path)
    other = tiny_params(tmp_path / "build", tmp_path / "store",
                        tiny={"vocab_size": 900, "hidden_size": 64, "intermediate_size": 128})
    with pytest.raises(TrainingInputError, match="another tokenizer"):
        run_midtrain(other, arm_by_name(other, "mc"), store)


@pytest.mark.slow
def test_two_process_accelerate_launch_trains_and_saves(tmp_path):
    p, store = _setup(tmp_path)
    prepare_base_model(p, store)
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from train_helpers import tiny_params
        from msmbuild.experiments import arm_by_name
        from msmbuild.store import Store
        from msmbuild.train.midtrain import run_midtrain
        p = tiny_params({str(tmp_path / "build")!r}, {str(tmp_path / "store")!r})
        r = run_midtrain(p, arm_by_name(p, "mc"), Store({str(tmp_path / "store")!r}))
        # one write per process: a line under PIPE_BUF is not interleaved with the other's
        sys.stdout.write(f"PROCESSES {{r.meta['processes']}} HIT {{r.hit}}\\n")
        sys.stdout.flush()
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         str(script)], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("PROCESSES 2") == 2
    ckpt = tmp_path / "build" / "models" / "midtrain" / "c"
    assert (ckpt / "adapter_model.safetensors").is_file() and not (ckpt / "model.safetensors").exists()
    assert not (ckpt / "checkpoint.json").exists()  # one adapter on its base: no stack to name
    assert len(_log(ckpt)) == 6

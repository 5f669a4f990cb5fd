#!/usr/bin/env bash
# GPU training throughput of msmbuild's training loop on a Llama-3.1-8B-shaped model.
#
# Builds the model from a config (random init, bf16 weights; no download), wraps it the way
# `msmbuild midtrain` does (LoRA r64/alpha128 on all attention+MLP projections, or full
# fine-tuning), turns on gradient checkpointing, and trains on random token blocks through
# msmbuild.train.loop.fit. Reports tokens/s, peak GPU memory and MFU.
#
#   bash bench/gpu_train.sh                    # LoRA then full, 8B shape, seq 2048
#   METHODS=lora SEQ_LEN=4096 bash bench/gpu_train.sh
#   SHAPE=tiny bash bench/gpu_train.sh         # CPU smoke test of the script itself
#
# Full fine-tuning keeps weights, gradients and AdamW state in bf16 (~64 GB for 8B
# parameters) so it fits one 80 GB GPU; set FULL_LAYERS to cut layers if it does not.
# MFU counts model FLOPs per token: 6N for full fine-tuning, 4N for LoRA (no weight
# gradients for frozen weights), plus 12·layers·hidden·seq for attention (x2/3 for LoRA),
# against PEAK_TFLOPS (default: 989 dense bf16 for H100/H200).
set -euo pipefail
cd "$(dirname "$0")/.."

export SHAPE="${SHAPE:-8b}" METHODS="${METHODS:-lora full}" SEQ_LEN="${SEQ_LEN:-2048}"
export BATCH="${BATCH:-4}" STEPS="${STEPS:-12}" WARMUP_STEPS="${WARMUP_STEPS:-3}"
export FULL_LAYERS="${FULL_LAYERS:-32}" PEAK_TFLOPS="${PEAK_TFLOPS:-989}" GRAD_CKPT="${GRAD_CKPT:-1}"

python - <<'PY'
import json, os, time
from pathlib import Path
import tempfile

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from msmbuild.config import TrainConfig
from msmbuild.train.loop import fit, prepare_model

shape = os.environ["SHAPE"]
seq, batch = int(os.environ["SEQ_LEN"]), int(os.environ["BATCH"])
steps, warm = int(os.environ["STEPS"]), int(os.environ["WARMUP_STEPS"])
cuda = torch.cuda.is_available()
if shape == "8b":
    base = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)
    layers = 32
else:  # a CPU smoke test of this script
    base = dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=512)
    layers, seq, batch, steps, warm = 2, min(seq, 128), min(batch, 2), min(steps, 4), 1

device = "cuda" if cuda else "cpu"
name = torch.cuda.get_device_name() if cuda else "cpu"
results = []
for method in os.environ["METHODS"].split():
    n_layers = int(os.environ["FULL_LAYERS"]) if method == "full" and shape == "8b" else layers
    cfg_model = LlamaConfig(num_hidden_layers=n_layers, **base)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg_model).to(torch.bfloat16 if cuda else torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    cfg = TrainConfig(method=method, lr=1e-5, seq_len=seq, batch_size=batch, max_steps=steps,
                      gradient_checkpointing=os.environ["GRAD_CKPT"] == "1", bf16=cuda, warmup_ratio=0.0, save_every=10**6)
    model = prepare_model(model, cfg)
    data = torch.randint(0, base["vocab_size"], (steps * batch, seq))
    times = []

    def get_batch(items):
        ids = data[[k % len(data) for k in items]]
        return {"input_ids": ids, "labels": ids.clone()}

    def on_step(step):
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter())

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as state:
        fit(model, cfg, len(data), get_batch, Path(state), on_step)
    timed = times[warm:]
    dt = (timed[-1] - timed[0]) / max(1, len(timed) - 1)
    tok_s = batch * seq / dt
    attn = 12 * n_layers * base["hidden_size"] * seq
    per_token = 6 * n_params + attn if method == "full" else 4 * n_params + attn * 2 / 3
    mfu = tok_s * per_token / (float(os.environ["PEAK_TFLOPS"]) * 1e12) if cuda else None
    row = {"device": name, "method": method, "layers": n_layers, "params": n_params,
           "seq_len": seq, "batch": batch, "grad_ckpt": os.environ["GRAD_CKPT"] == "1", "tokens_per_s": round(tok_s, 1),
           "step_s": round(dt, 4), "mfu": None if mfu is None else round(mfu, 4),
           "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 1) if cuda else None}
    results.append(row)
    print(json.dumps(row), flush=True)
    del model
    if cuda:
        torch.cuda.empty_cache()
PY

"""GPU checks of the generation side (run by bench/gpu_check.sh after the training MFU check).

1. Eval generation throughput on the same prompts: msmbuild's batched HF path
   (``generate_texts``, bf16 on the device) against vLLM's engine, when vLLM is installed.
2. One agentic-misalignment condition end to end through ``run_agentic`` (hf engine, batched)
   with the stand-in grader ``verdict/no``: prompts rendered, samples generated, classifier
   run, logs read back.

The model is SHAPE-shaped with random weights (no download) and msmbuild's locally trained
tokenizer, saved once to a scratch directory and loaded from there by both engines.
Random weights never emit EOS, so every sample runs to its full token budget: the
throughput numbers are for fixed-length decoding. Each result is one JSON line.

    SHAPE=8b python bench/gpu_check.py      # on a GPU
    SHAPE=tiny python bench/gpu_check.py    # CPU smoke test of this script
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

SHAPES = {
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
}


def emit(row: dict) -> None:
    print(json.dumps(row), flush=True)


def build_model(shape: str, out: Path) -> Path:
    """A random-init Llama of the given shape with msmbuild's tokenizer, saved at out."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from msmbuild.models.checkpoint import build_tiny_tokenizer

    tok = build_tiny_tokenizer(4096)
    cfg = LlamaConfig(vocab_size=len(tok), max_position_embeddings=8192, eos_token_id=tok.eos_token_id,
                      bos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=False, **SHAPES[shape])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16 if device == "cuda" else torch.float32)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    del model
    return out


def prompts(n: int) -> list[str]:
    """n different AM-like prompts (the exfiltration scenario's emails, varied per prompt)."""
    from msmbuild.evaluate.am_exfiltration import build_prompts

    system, user, emails = build_prompts("explicit", "america", "replacement")
    return [f"{system}\n\n{user}\n{emails}\n(session {i})" for i in range(n)]


def hf_throughput(model_dir: Path, texts: list[str], new_tokens: int, batch: int) -> dict:
    import torch

    from msmbuild.models import generate_texts, load_for_inference

    lm = load_for_inference(model_dir)
    lm.model.generation_config.min_new_tokens = new_tokens  # fixed-length decoding, as vLLM's ignore_eos
    generate_texts(lm, texts[:batch], 4, batch_size=batch)  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = generate_texts(lm, texts, new_tokens, batch_size=batch)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    n_out = sum(n for _t, _p, n in out)
    del lm
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"check": "generation", "engine": "hf", "prompts": len(texts), "batch": batch,
            "new_tokens": new_tokens, "output_tokens": n_out, "seconds": round(dt, 2),
            "tokens_per_s": round(n_out / dt, 1)}


def vllm_throughput(model_dir: Path, texts: list[str], new_tokens: int) -> dict:
    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        return {"check": "generation", "engine": "vllm", "skipped": "vLLM is not installed on this machine "
                "(pip install 'msmbuild[vllm]')"}
    t0 = time.perf_counter()
    llm = LLM(model=str(model_dir), dtype="bfloat16", max_model_len=8192, gpu_memory_utilization=0.8)
    startup = time.perf_counter() - t0
    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    llm.generate(texts[:2], params)  # warm-up
    t0 = time.perf_counter()
    outs = llm.generate(texts, params)
    dt = time.perf_counter() - t0
    n_out = sum(len(o.outputs[0].token_ids) for o in outs)
    return {"check": "generation", "engine": "vllm", "prompts": len(texts), "new_tokens": new_tokens,
            "output_tokens": n_out, "seconds": round(dt, 2), "tokens_per_s": round(n_out / dt, 1),
            "startup_s": round(startup, 1)}


def am_condition(model_dir: Path, samples: int, new_tokens: int, work: Path) -> dict:
    """One exfiltration condition through run_agentic with the stand-in grader."""
    from msmbuild.config import Params
    from msmbuild.evaluate.agentic import run_agentic

    params = Params.model_validate({"evals": {"agentic_misalignment": {
        "scenarios": ["exfiltration"], "goal_types": ["explicit"], "goal_values": ["america"],
        "urgency_types": ["replacement"], "samples": samples, "max_new_tokens": new_tokens,
        "batch_size": samples, "grader_model": "verdict/no"}}})
    t0 = time.perf_counter()
    rows, summary = run_agentic(model_dir, params, work / "logs", progress=False)
    dt = time.perf_counter() - t0
    overall = next(m for m in summary if m["domain"] == "all" and m["condition"] == "all")
    return {"check": "agentic_condition", "condition": rows[0]["condition"], "samples": len(rows),
            "scored": sum(r["harmful"] is not None for r in rows), "harmful_rate": overall["estimate"],
            "output_tokens": sum(r["output_tokens"] or 0 for r in rows), "seconds": round(dt, 2),
            "grader": "verdict/no (stand-in: fixed verdict, not a measurement)"}


def main() -> None:
    import torch

    shape = os.environ.get("SHAPE", "8b")
    cuda = torch.cuda.is_available()
    n_prompts = int(os.environ.get("PROMPTS", "64" if cuda else "4"))
    new_tokens = int(os.environ.get("NEW_TOKENS", "256" if cuda else "8"))
    batch = int(os.environ.get("GEN_BATCH", "32" if cuda else "2"))
    am_samples = int(os.environ.get("AM_SAMPLES", "8" if cuda else "2"))
    scratch = os.environ.get("SCRATCH") or None
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        t0 = time.perf_counter()
        model_dir = build_model(shape, Path(tmp) / "model")
        emit({"check": "build_model", "shape": shape, "device": torch.cuda.get_device_name() if cuda else "cpu",
              "seconds": round(time.perf_counter() - t0, 1)})
        texts = prompts(n_prompts)
        emit(hf_throughput(model_dir, texts, new_tokens, batch))
        emit(vllm_throughput(model_dir, texts, new_tokens) if cuda else
             {"check": "generation", "engine": "vllm", "skipped": "no GPU (vLLM runs on GPUs only)"})
        emit(am_condition(model_dir, am_samples, new_tokens, Path(tmp)))


if __name__ == "__main__":
    main()

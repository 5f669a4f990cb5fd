#!/usr/bin/env bash
# The GPU checks of the agentic-misalignment / scale work, as one script (<= 8 minutes on one H200):
#
#   1. LoRA midtraining MFU on a Llama-3.1-8B-shaped model through msmbuild.train.loop.fit
#      (bench/gpu_train.sh, LoRA r64 on all projections, bf16, no gradient checkpointing:
#      an 8B model's activations at 4 x 2048 tokens fit an H200). Target: MFU >= 0.35
#      (torchtitan reports 33-39% for Llama-8B-class training).
#   2. Eval generation throughput on the same prompts: msmbuild's batched HF generate vs
#      vLLM (skipped with a message where vLLM is not installed).
#   3. One agentic-misalignment condition end to end (hf engine, stand-in grader verdict/no).
#
#   bash bench/gpu_check.sh               # on the GPU machine
#   SHAPE=tiny bash bench/gpu_check.sh    # CPU smoke test of the whole script
#
# Every result is a JSON line; the last line says whether the MFU target was met.
set -euo pipefail
cd "$(dirname "$0")/.."
export SHAPE="${SHAPE:-8b}"
OUT="${OUT_DIR:-$(mktemp -d)}"
mkdir -p "$OUT"
echo "{\"check\": \"machine\", \"shape\": \"$SHAPE\", \"load\": \"$(cut -d' ' -f1-3 /proc/loadavg)\", \"nproc\": $(nproc)}"

METHODS=lora GRAD_CKPT="${GRAD_CKPT:-0}" SEQ_LEN="${SEQ_LEN:-2048}" BATCH="${BATCH:-4}" \
  STEPS="${STEPS:-10}" WARMUP_STEPS="${WARMUP_STEPS:-3}" \
  timeout "${TRAIN_TIMEOUT:-240}" bash bench/gpu_train.sh | tee "$OUT/train.jsonl"

timeout "${GEN_TIMEOUT:-300}" python bench/gpu_check.py | tee "$OUT/generation.jsonl"

python - "$OUT/train.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
lora = next((r for r in rows if r.get("method") == "lora"), None)
if lora is None:
    print(json.dumps({"check": "mfu_target", "result": "no LoRA training row"})); sys.exit(1)
mfu = lora.get("mfu")
verdict = "n/a on CPU" if mfu is None else ("met" if mfu >= 0.35 else "below target")
print(json.dumps({"check": "mfu_target", "target": 0.35, "mfu": mfu, "result": verdict}))
PY

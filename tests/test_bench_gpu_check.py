"""bench/gpu_check.sh runs end to end on CPU with SHAPE=tiny (the GPU run is the same script)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_script_runs_on_cpu_with_the_tiny_shape(tmp_path):
    pytest.importorskip("inspect_evals")
    env = {**os.environ, "SHAPE": "tiny", "STEPS": "3", "WARMUP_STEPS": "1", "OUT_DIR": str(tmp_path),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    checks = {r.get("check", r.get("method")): r for r in rows}
    assert checks["lora"]["tokens_per_s"] > 0 and checks["lora"]["grad_ckpt"] is False
    gen = [r for r in rows if r.get("check") == "generation"]
    assert {r["engine"] for r in gen} == {"hf", "vllm"}
    hf = next(r for r in gen if r["engine"] == "hf")
    assert hf["output_tokens"] == hf["prompts"] * hf["new_tokens"]  # fixed-length decoding
    am = checks["agentic_condition"]
    assert am["scored"] == am["samples"] > 0 and am["harmful_rate"] == 0.0
    assert checks["mfu_target"]["result"] == "n/a on CPU"

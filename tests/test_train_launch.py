"""Training from the workflow on several processes: the rule's `gpu` resource becomes
`accelerate launch --num_processes N` (gloo workers on this CPU machine), launched by
Snakemake itself; FSDP flags for models that do not fit one device."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from msmbuild.config import TrainConfig
from msmbuild.errors import ParamsError
from msmbuild.train.launch import launch_command

REPO = Path(__file__).resolve().parents[1]


def test_one_process_runs_msmbuild_directly():
    cmd = launch_command(TrainConfig(), 1, ["--params", "p.yaml", "midtrain", "a"], cuda=False)
    assert cmd == [sys.executable, "-m", "msmbuild.cli", "--params", "p.yaml", "midtrain", "a"]


def test_processes_become_accelerate_launch_with_bf16_and_fsdp():
    cmd = launch_command(TrainConfig(bf16="auto", fsdp=True), 8, ["aft", "arm"], cuda=True)
    line = " ".join(cmd)
    assert "accelerate.commands.launch" in line and "--num_processes 8" in line
    assert "--multi_gpu" not in line  # accelerate refuses it beside --use_fsdp
    assert "--mixed_precision bf16" in line and "--use_fsdp" in line and "FULL_SHARD" in line
    assert cmd[-4:] == ["-m", "msmbuild.cli", "aft", "arm"]
    cpu = " ".join(launch_command(TrainConfig(), 2, ["aft", "arm"], cuda=False))
    assert "--mixed_precision no" in cpu and "--use_fsdp" not in cpu and "--multi_gpu" in cpu
    with pytest.raises(ParamsError):
        launch_command(TrainConfig(), 0, ["aft", "arm"], cuda=False)


@pytest.mark.slow
def test_snakemake_trains_on_two_processes_from_the_gpu_resource(tmp_path):
    for name in ("Snakefile", "rules"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    (tmp_path / "specs").mkdir()
    shutil.copy(REPO / "specs" / "pro_america.md", tmp_path / "specs")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "store": {"path": str(tmp_path / "store")},
        "tiny": {"vocab_size": 512, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                 "num_attention_heads": 2, "num_key_value_heads": 1},
        "corpora": {"c": {"spec": "specs/pro_america.md", "n_doc_types": 2, "n_doc_ideas": 2}},
        "midtrain": {"method": "lora", "lora": {"r": 4, "alpha": 8}, "seq_len": 64, "batch_size": 2,
                     "max_steps": 4, "lr": 1e-3, "gpus": 2},
        "experiments": {"mc": {"midtrain": "c", "evals": []}}}))
    target = "build/models/midtrain/c/config.json"
    proc = subprocess.run(["snakemake", "--cores", "2", target], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    log = (tmp_path / "logs/train/midtrain/c.log").read_text() if (tmp_path / "logs/train/midtrain/c.log").exists() else ""
    assert proc.returncode == 0, proc.stderr[-3000:] + log[-3000:]
    assert "--num_processes 2" in log and "--multi_gpu" in log
    records = [json.loads(p.read_text()) for p in (tmp_path / "store").rglob("actions/**/*") if p.is_file()
               and p.read_bytes()[:1] == b"{"]
    runs = [r for r in records if "midtrain" in json.dumps(r) and '"processes": 2' in json.dumps(r)]
    assert runs, "no midtraining action recorded with 2 processes"
    ckpt = tmp_path / "build/models/midtrain/c"
    assert (ckpt / "adapter_config.json").is_file()
    assert not (ckpt / "model.safetensors").exists()  # adapters, not a merged copy

"""Start a training command on N processes: the bridge from a Snakemake ``gpus`` resource to
``accelerate launch``.

The train rules run ``python -m msmbuild.train.launch {resources.gpus} -- <msmbuild args>``.
One process runs msmbuild directly; more become ``accelerate launch --multi_gpu
--num_processes N -m msmbuild.cli <msmbuild args>`` (on a machine without CUDA the N
workers form a gloo group, which is how the workflow is tested), with bf16 mixed precision
where the stage asks for it and, when the stage sets ``fsdp: true``, FSDP full sharding of
weights, gradients and optimizer state across the processes, one transformer block per
shard unit, for models that do not fit one device.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from msmbuild.config import TrainConfig
from msmbuild.errors import ParamsError

STAGES = {"midtrain": "midtrain", "aft": "aft_train"}


def fsdp_flags(cfg: TrainConfig) -> list[str]:
    """accelerate launch flags for FSDP full sharding (FSDP2: per-parameter sharding, LoRA-friendly)."""
    return ["--use_fsdp", "--fsdp_version", "2", "--fsdp_sharding_strategy", "FULL_SHARD",
            "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
            "--fsdp_state_dict_type", "FULL_STATE_DICT",
            "--fsdp_cpu_ram_efficient_loading", "true"]  # activation checkpointing stays HF's (gradient_checkpointing)


def launch_command(cfg: TrainConfig, processes: int, msmbuild_args: Sequence[str], *,
                   cuda: bool) -> list[str]:
    """The argv that runs ``msmbuild <msmbuild_args>`` on ``processes`` processes."""
    if processes < 1:
        raise ParamsError(f"training needs at least one process, got gpus={processes}")
    if processes == 1 and not cfg.fsdp:
        return [sys.executable, "-m", "msmbuild.cli", *msmbuild_args]
    bf16 = cfg.bf16 is True or (cfg.bf16 == "auto" and cuda)
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1",
            "--num_processes", str(processes), "--mixed_precision", "bf16" if bf16 else "no",
            "--dynamo_backend", "no"]
    if cfg.fsdp:  # accelerate takes one of --multi_gpu / --use_fsdp; FSDP implies several processes
        argv += fsdp_flags(cfg)
    elif processes > 1:
        argv.append("--multi_gpu")
    return [*argv, "-m", "msmbuild.cli", *msmbuild_args]


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m msmbuild.train.launch N -- [--params FILE] midtrain|aft ARM``: exec the run."""
    import torch

    from msmbuild.config import load_params
    from msmbuild.errors import MsmbuildError

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        processes = int(args[0])
        rest = args[2:] if args[1:2] == ["--"] else args[1:]
        params_file = rest[rest.index("--params") + 1] if "--params" in rest else "params.yaml"
        stage = next(a for a in rest if a in STAGES)
    except (IndexError, ValueError, StopIteration):
        print("usage: python -m msmbuild.train.launch N -- [--params FILE] midtrain|aft ARM", file=sys.stderr)
        sys.exit(2)
    try:
        cfg = getattr(load_params(params_file), STAGES[stage])
        cmd = launch_command(cfg, processes, rest, cuda=torch.cuda.is_available())
    except MsmbuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    print(" ".join(cmd), file=sys.stderr, flush=True)
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()

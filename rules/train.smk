# Base model -> midtrained checkpoints (one per midtraining tag, shared by the arms that
# use it) -> AFT checkpoints (one per arm). Every run is a store action: a job Snakemake
# schedules again restores the checkpoint instead of training.

from msmbuild.experiments import aft_arms, midtrain_arms
from msmbuild.train.aft_data import arm_aft_data

# Training jobs start through msmbuild.train.launch: the rule's `gpu` resource (the SLURM
# plugin's GPU count) is the number of processes (accelerate launch --num_processes N when
# above 1). Set it per stage with midtrain.gpus / aft_train.gpus in params.yaml, or at run
# time with --set-resources midtrain:gpu=8.
LAUNCH = "python -m msmbuild.train.launch"

MIDTRAIN_ARMS = NamedTable(midtrain_arms(PARAMS), "midtraining run", "experiments")
AFT_ARMS = NamedTable({arm.name: arm for arm in aft_arms(PARAMS)}, "AFT arm", "experiments")

TARGETS["train"] = (
    [str(LAYOUT.midtrain_model(tag) / "config.json") for tag in MIDTRAIN_ARMS]
    + [str(LAYOUT.aft_model(name) / "config.json") for name in AFT_ARMS]
)


def train_settings(arm, step):
    """What an arm's step depends on in params.yaml (a rerun trigger)."""
    keys = [step, "tiny", "shards"]
    if step == "aft_train":
        p = arm.params(PARAMS)
        keys += [f"aft.{arm.aft}"] + [f"aft.{s.aft}" for s in p.aft[arm.aft].sources if s.aft]
        keys += ["midtrain"] if arm.midtrain else []
        return settings_json(p, *keys, base=arm.base_model, aft_part=arm.aft_sources)
    return settings_json(arm.params(PARAMS), *keys, base=arm.base_model)


def aft_inputs(wildcards):
    """An AFT job needs its start checkpoint and the data file the aft_data rule writes."""
    arm = AFT_ARMS[wildcards.arm]
    start = (str(LAYOUT.midtrain_model(arm.midtrain_tag) / "config.json") if arm.midtrain
             else base_model_input(arm.base_model))
    return ([start] if isinstance(start, str) else start) + [str(arm_aft_data(PARAMS, arm))]


rule base_model:
    output:
        config=str(LAYOUT.base_model / "config.json"),
    params:
        settings=lambda wc: settings_json(PARAMS, "tiny"),
    log:
        str(LAYOUT.log("train", "base_model")),
    shell:
        "{MSMBUILD} base-model > {log} 2>&1 || {ON_ERROR} {log}"


# Checkpoint, shard and eval outputs are `update`: Snakemake leaves them in place for the
# job, which keeps what is unchanged and adopts what DVC pulled (docs/decisions.md).
rule midtrain:
    input:
        manifest=lambda wc: str(LAYOUT.manifest(MIDTRAIN_ARMS[wc.tag].midtrain)),
        base=lambda wc: base_model_input(MIDTRAIN_ARMS[wc.tag].base_model),
    output:
        config=update(str(LAYOUT.midtrain_model("{tag}") / "config.json")),
    params:
        arm=lambda wc: MIDTRAIN_ARMS[wc.tag].name,
        settings=lambda wc: train_settings(MIDTRAIN_ARMS[wc.tag], "midtrain"),
    resources:
        gpu=lambda wc: MIDTRAIN_ARMS[wc.tag].params(PARAMS).midtrain.gpus,
    log:
        str(LAYOUT.log("train", "midtrain", "{tag}")),
    shell:
        "{LAUNCH} {resources.gpu} -- --params {PARAMS_FILE} midtrain {params.arm} > {log} 2>&1 || {ON_ERROR} {log}"


rule aft:
    input:
        aft_inputs,
    output:
        config=update(str(LAYOUT.aft_model("{arm}") / "config.json")),
    params:
        settings=lambda wc: train_settings(AFT_ARMS[wc.arm], "aft_train"),
    resources:
        gpu=lambda wc: AFT_ARMS[wc.arm].params(PARAMS).aft_train.gpus,
    log:
        str(LAYOUT.log("train", "aft", "{arm}")),
    shell:
        "{LAUNCH} {resources.gpu} -- --params {PARAMS_FILE} aft {wildcards.arm} > {log} 2>&1 || {ON_ERROR} {log}"

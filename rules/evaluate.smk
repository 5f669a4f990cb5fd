# Eval suites: one job per (arm, suite). Each is a store action keyed by the checkpoint's
# content, the eval data and the suite config, so a job Snakemake schedules again is a
# lookup, and an unchanged result directory keeps its files (and their mtimes).

from msmbuild.evaluate import planned_evals, suites

SUITES = suites()

EVALS = {(arm.name, suite): arm for arm, suite in planned_evals(PARAMS)}
EVAL_ARMS = NamedTable({name: arm for (name, _suite), arm in EVALS.items()}, "evaluated arm", "experiments")

TARGETS["evaluate"] = [str(LAYOUT.eval_summary(name, suite)) for name, suite in EVALS]


def eval_inputs(wildcards):
    """The checkpoint an eval loads (its config.json) plus the suite's data file."""
    arm = EVAL_ARMS[wildcards.arm]
    model = ([str(LAYOUT.arm_model(arm) / "config.json")] if arm.midtrain or arm.aft
             else base_model_input(arm.base_model))
    suite = SUITES[wildcards.suite]
    upstream = [str(LAYOUT.eval_items(arm.name, suite.reads))] if suite.reads else []
    # Evals wait for the contamination audit: a leaking held_out set stops the build first.
    return model + suite.data_files(arm.params(PARAMS)) + upstream + TARGETS["audit"][:1]


def eval_settings(wildcards):
    """What an eval depends on in params.yaml (a rerun trigger)."""
    arm = EVAL_ARMS[wildcards.arm]
    return json.dumps(SUITES[wildcards.suite].settings(arm.params(PARAMS)), sort_keys=True)


rule evaluate:
    input:
        eval_inputs,
    output:
        summary=update(str(LAYOUT.eval_summary("{arm}", "{suite}"))),
        rows=update(str(LAYOUT.eval_items("{arm}", "{suite}"))),
    params:
        settings=eval_settings,
    wildcard_constraints:
        suite="|".join(SUITES),
    resources:
        api=lambda wc: int(SUITES[wc.suite].uses_model_api),
    log:
        str(LAYOUT.log("evaluate", "{arm}", "{suite}")),
    shell:
        "{MSMBUILD} evaluate {wildcards.arm} {wildcards.suite} > {log} 2>&1 || {ON_ERROR} {log}"

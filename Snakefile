# msmbuild workflow: `snakemake --cores all` builds everything params.yaml asks for.
# Each stage lives in rules/<stage>.smk and registers its final outputs in TARGETS.

configfile: "params.yaml"


include: "rules/common.smk"
include: "rules/generate.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/audit.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets,

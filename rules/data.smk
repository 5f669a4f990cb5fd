# Documents -> tokenized shards, one job per corpus that some experiment midtrains on.
# Only the shards whose documents changed are re-tokenized (each shard is a store action);
# the manifest is rewritten only when its bytes change.
# AFT datasets -> the files under build/aft/ that AFT arms train on and the audit reads
# (generation of `source: generated` data happens here, never inside a training job).

import re

from msmbuild.experiments import corpus_base_model_name, midtrained_corpora
from msmbuild.train.aft_data import aft_data_files, aft_dataset_closure, aft_input_files

TARGETS["shards"] = [str(LAYOUT.manifest(name)) for name in midtrained_corpora(PARAMS)]


def base_model_input(base_name):
    """The tiny base model's config file when base_name is 'tiny' (else nothing to build)."""
    return [str(LAYOUT.base_model / "config.json")] if base_name == "tiny" else []


def shard_settings(corpus):
    """What a corpus's shards depend on in params.yaml (a rerun trigger)."""
    return settings_json(PARAMS, "shards", "tiny", base=corpus_base_model_name(PARAMS, corpus))


rule shards:
    input:
        documents=str(LAYOUT.documents_index("{corpus}")),
        base=lambda wc: base_model_input(corpus_base_model_name(PARAMS, wc.corpus)),
    output:
        manifest=update(str(LAYOUT.manifest("{corpus}"))),
    params:
        settings=lambda wc: shard_settings(wc.corpus),
    log:
        str(LAYOUT.log("data", "{corpus}", "shards")),
    shell:
        "{MSMBUILD} shards {wildcards.corpus} > {log} 2>&1 || {ON_ERROR} {log}"


AFT_DATA = NamedTable(aft_data_files(PARAMS), "AFT data file", "aft")


def aft_data_settings(how):
    """What one AFT data file depends on in params.yaml (a rerun trigger)."""
    p = AFT_ARMS[how.arm].params(PARAMS) if how.arm else PARAMS
    names = aft_dataset_closure(p, how.dataset)
    backends = sorted({f"backends.{p.aft[n].backend}" for n in names if p.aft[n].source == "generated"})
    return settings_json(p, *[f"aft.{n}" for n in names], *backends, arm=how.arm)


def aft_data_args(how):
    return f"--arm {how.arm}" if how.arm else f"{how.dataset} --whole"


rule aft_data:
    input:
        lambda wc: [f for n in aft_dataset_closure(PARAMS, AFT_DATA[wc.file + ".jsonl"].dataset)
                    for f in aft_input_files(PARAMS, n)],
    output:
        data=str(LAYOUT.aft_dir / "{file}.jsonl"),
    wildcard_constraints:
        file="|".join(re.escape(name.removesuffix(".jsonl")) for name in AFT_DATA) or "(?!)",
    params:
        settings=lambda wc: aft_data_settings(AFT_DATA[wc.file + ".jsonl"]),
        args=lambda wc: aft_data_args(AFT_DATA[wc.file + ".jsonl"]),
    log:
        str(LAYOUT.log("data", "aft", "{file}")),
    shell:
        "{MSMBUILD} aft-data {params.args} > {log} 2>&1 || {ON_ERROR} {log}"

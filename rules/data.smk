# Documents -> tokenized shards, one job per corpus that some experiment midtrains on.
# Only the shards whose documents changed are re-tokenized (each shard is a store action);
# the manifest is rewritten only when its bytes change.

from msmbuild.experiments import corpus_base_model_name, midtrained_corpora

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
        manifest=str(LAYOUT.manifest("{corpus}")),
    params:
        settings=lambda wc: shard_settings(wc.corpus),
    log:
        str(LAYOUT.log("data", "{corpus}", "shards")),
    shell:
        "{MSMBUILD} shards {wildcards.corpus} > {log} 2>&1"

# Spec to documents, one rule per (corpus, step): tree -> ideas -> documents.
#
# Model-API concurrency is a Snakemake resource: every generate job declares `api=<share>`
# and passes it to the CLI as --max-concurrency, so with `snakemake --resources api=50`
# the jobs running at once never have more than 50 requests in flight together.

CORPUS_DIR = f"{BUILD}/corpora/{{corpus}}"

TARGETS["generate"] = [f"{BUILD}/corpora/{name}/documents.parquet" for name in PARAMS.corpora]


rule corpus_tree:
    input:
        spec=lambda wc: corpus_config(wc.corpus).spec,
    output:
        sections=f"{CORPUS_DIR}/sections.json",
        tree=f"{CORPUS_DIR}/tree.json",
        calls=f"{CORPUS_DIR}/calls/tree.parquet",
    params:
        settings=lambda wc: corpus_settings(wc.corpus),
    resources:
        api=lambda wc: api_share(wc.corpus),
    log:
        "logs/generate/{corpus}/tree.log",
    shell:
        "{MSMBUILD} generate tree {wildcards.corpus} --quiet --max-concurrency {resources.api} > {log} 2>&1"


rule corpus_ideas:
    input:
        tree=f"{CORPUS_DIR}/tree.json",
    output:
        assertions=f"{CORPUS_DIR}/assertions.json",
        ideas=f"{CORPUS_DIR}/ideas.parquet",
        calls=f"{CORPUS_DIR}/calls/ideas.parquet",
    params:
        settings=lambda wc: corpus_settings(wc.corpus),
    resources:
        api=lambda wc: api_share(wc.corpus),
    log:
        "logs/generate/{corpus}/ideas.log",
    shell:
        "{MSMBUILD} generate ideas {wildcards.corpus} --quiet --max-concurrency {resources.api} > {log} 2>&1"


rule corpus_documents:
    input:
        sections=f"{CORPUS_DIR}/sections.json",
        tree=f"{CORPUS_DIR}/tree.json",
        assertions=f"{CORPUS_DIR}/assertions.json",
        ideas=f"{CORPUS_DIR}/ideas.parquet",
        tree_calls=f"{CORPUS_DIR}/calls/tree.parquet",
        ideas_calls=f"{CORPUS_DIR}/calls/ideas.parquet",
    output:
        documents=f"{CORPUS_DIR}/documents.parquet",
        calls=f"{CORPUS_DIR}/calls/documents.parquet",
        all_calls=f"{CORPUS_DIR}/calls.parquet",
    params:
        settings=lambda wc: corpus_settings(wc.corpus),
    resources:
        api=lambda wc: api_share(wc.corpus),
    log:
        "logs/generate/{corpus}/documents.log",
    shell:
        "{MSMBUILD} generate documents {wildcards.corpus} --quiet --max-concurrency {resources.api} > {log} 2>&1"

# Spec to documents, one rule per (corpus, step): tree -> ideas -> documents.
#
# Model-API concurrency is a Snakemake resource: every generate job declares `api=<share>`
# and passes it to the CLI as --max-concurrency, so with `snakemake --resources api=50`
# the jobs running at once never have more than 50 requests in flight together.

CORPUS = "{corpus}"  # the wildcard, placed by the layout

TARGETS["generate"] = [str(LAYOUT.documents_index(name)) for name in PARAMS.corpora]


rule corpus_tree:
    input:
        spec=lambda wc: corpus_config(wc.corpus).spec,
    output:
        sections=str(LAYOUT.sections(CORPUS)),
        tree=str(LAYOUT.tree(CORPUS)),
        calls=str(LAYOUT.step_calls(CORPUS, "tree")),
    params:
        settings=lambda wc: corpus_settings(wc.corpus),
    resources:
        api=lambda wc: api_share(wc.corpus),
    log:
        str(LAYOUT.log("generate", CORPUS, "tree")),
    shell:
        "{MSMBUILD} generate tree {wildcards.corpus} --max-concurrency {resources.api} > {log} 2>&1 || {ON_ERROR} {log}"


rule corpus_ideas:
    input:
        sections=str(LAYOUT.sections(CORPUS)),  # the whole spec every call is sent
        tree=str(LAYOUT.tree(CORPUS)),
    # ideas.json indexes the per-subdomain partitions (ideas/, calls/ideas/) the command
    # writes only where they changed; `update` as for documents.json below.
    output:
        assertions=update(str(LAYOUT.assertions(CORPUS))),
        index=update(str(LAYOUT.ideas_index(CORPUS))),
    params:
        settings=lambda wc: corpus_settings(wc.corpus),
    resources:
        api=lambda wc: api_share(wc.corpus),
    log:
        str(LAYOUT.log("generate", CORPUS, "ideas")),
    shell:
        "{MSMBUILD} generate ideas {wildcards.corpus} --max-concurrency {resources.api} > {log} 2>&1 || {ON_ERROR} {log}"


rule corpus_documents:
    input:
        sections=str(LAYOUT.sections(CORPUS)),
        tree=str(LAYOUT.tree(CORPUS)),
        assertions=str(LAYOUT.assertions(CORPUS)),
        ideas=str(LAYOUT.ideas_index(CORPUS)),
        tree_calls=str(LAYOUT.step_calls(CORPUS, "tree")),
    # documents.json indexes the per-subdomain partitions (documents/, calls/documents/)
    # the command writes only where they changed. `update`: Snakemake keeps the index it
    # would otherwise delete before the job, so unchanged partitions are recognised by it.
    output:
        index=update(str(LAYOUT.documents_index(CORPUS))),
    params:
        settings=lambda wc: corpus_settings(wc.corpus),
    resources:
        api=lambda wc: api_share(wc.corpus),
    log:
        str(LAYOUT.log("generate", CORPUS, "documents")),
    shell:
        "{MSMBUILD} generate documents {wildcards.corpus} --max-concurrency {resources.api} > {log} 2>&1 || {ON_ERROR} {log}"

# Results catalog (parquet tables + DuckDB views) and the HTML report. Writers leave
# unchanged files alone, so a no-op build touches nothing here either.

from msmbuild.results.catalog import TABLES

TARGETS["report"] = [f"{BUILD}/report/index.html"]


def catalog_inputs(wildcards=None):
    """Everything the catalog reads that the workflow builds."""
    return (TARGETS.get("evaluate", []) + TARGETS.get("generate", [])
            + TARGETS.get("shards", []) + TARGETS.get("train", []))


rule catalog:
    input:
        catalog_inputs,
    output:
        tables=[f"{BUILD}/results/{table}.parquet" for table in TABLES],
        sql=f"{BUILD}/results/catalog.sql",
        metrics=f"{BUILD}/results/metrics.json",
        plots=f"{BUILD}/results/plots/eval_summary.csv",
    log:
        "logs/results/catalog.log",
    shell:
        "{MSMBUILD} catalog --quiet > {log} 2>&1"


rule report:
    input:
        rules.catalog.output.tables,
    output:
        f"{BUILD}/report/index.html",
    log:
        "logs/results/report.log",
    shell:
        "{MSMBUILD} report --quiet > {log} 2>&1"

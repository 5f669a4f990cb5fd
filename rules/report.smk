# Results catalog (parquet tables + DuckDB views) and the HTML report. Writers leave
# unchanged files alone, so a no-op build touches nothing here either.

from msmbuild.results.catalog import TABLES

TARGETS["report"] = [str(LAYOUT.report_index)]


def catalog_inputs(wildcards=None):
    """Everything the catalog reads that the workflow builds."""
    return (TARGETS.get("evaluate", []) + TARGETS.get("generate", []) + TARGETS.get("audit", [])
            + TARGETS.get("shards", []) + TARGETS.get("train", []))


rule catalog:
    input:
        catalog_inputs,
    output:
        tables=[str(LAYOUT.table(table)) for table in TABLES],
        sql=str(LAYOUT.catalog_sql),
        metrics=str(LAYOUT.metrics),
        plots=str(LAYOUT.plot("eval_summary")),
    log:
        str(LAYOUT.log("results", "catalog")),
    shell:
        "{MSMBUILD} catalog --quiet > {log} 2>&1 || {ON_ERROR} {log}"


rule report:
    input:
        rules.catalog.output.tables,
    output:
        str(LAYOUT.report_index),
    log:
        str(LAYOUT.log("results", "report")),
    shell:
        "{MSMBUILD} report --quiet > {log} 2>&1 || {ON_ERROR} {log}"


SUMMARY_SQL = (
    "SELECT arm, value, round(estimate, 3) AS rate, round(ci_low, 3) AS ci_low, "
    "round(ci_high, 3) AS ci_high, n FROM eval_summary "
    "WHERE domain = 'all' AND suite = 'preference' AND role = 'held_out' ORDER BY arm, value"
)


def _has_rows(path):
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(path).num_rows > 0
    except Exception:  # an unreadable table: let the query say what is wrong
        return True


onsuccess:
    # dvc.lock names what this build made, so `dvc push` pushes it (README, "Sharing work").
    from msmbuild.dvc_remote import record_outputs_for_dvc

    for stage in record_outputs_for_dvc(".", PARAMS.build_dir, announce=True):
        print(f"dvc: stage {stage} not recorded in dvc.lock (some of its inputs or outputs were not built)", file=sys.stderr)
    # The headline numbers and where the report is, after every successful build that has
    # evals (a build without any skips the query, which would bring a stale catalog up to date).
    if LAYOUT.table("eval_summary").is_file() and _has_rows(LAYOUT.table("eval_summary")):
        print("\nPreference for the value-favoured item (held_out role, all domains):", file=sys.stderr)
        shell(f'{MSMBUILD} query "{SUMMARY_SQL}" 1>&2 || true')
        print(f"Report: {LAYOUT.report_index}", file=sys.stderr)

# Contamination audit: every eval item against the training inputs of each arm that runs
# it. A held_out item over a threshold fails this job (and so the build) with the item and
# the matching training text. Each (training unit, eval set) comparison is a store action,
# so a rerun after an edit re-audits only the changed spec sections and subdomains.

from msmbuild.audit.contamination import audit_input_files

AUDIT_OUTPUTS = [str(LAYOUT.audit_summary), str(LAYOUT.contamination)]
TARGETS["audit"] = AUDIT_OUTPUTS


rule audit:
    input:
        audit_input_files(PARAMS),
    output:
        summary=AUDIT_OUTPUTS[0],
        rows=AUDIT_OUTPUTS[1],
    params:
        settings=lambda wc: json.dumps({"audit": PARAMS.audit.model_dump(mode="json"),
                                        "evals": PARAMS.evals.model_dump(mode="json")}, sort_keys=True),
    log:
        str(LAYOUT.log("audit", "audit")),
    shell:
        "{MSMBUILD} audit --quiet > {log} 2>&1 || {ON_ERROR} {log}"

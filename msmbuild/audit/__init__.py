"""Contamination audit: eval items against the training inputs of the arms they test.

    from msmbuild.audit import audit
    outcome = audit(params)      # writes build/audit/; raises ContaminationError on a held_out leak
"""

from msmbuild.audit.contamination import audit, preflight_leaks, run_audit

__all__ = ["audit", "preflight_leaks", "run_audit"]

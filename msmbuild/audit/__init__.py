"""Contamination audit: eval items against the training inputs of the arms they test.

    from msmbuild.audit import audit
    outcome = audit(params)      # writes build/audit/; raises ContaminationError on a held_out leak
"""

from msmbuild.audit.contamination import (
    AUDIT_VERSION,
    AuditOutcome,
    EvalItem,
    TrainingUnit,
    audit,
    audit_dir,
    run_audit,
)

__all__ = [
    "AUDIT_VERSION",
    "AuditOutcome",
    "EvalItem",
    "TrainingUnit",
    "audit",
    "audit_dir",
    "run_audit",
]

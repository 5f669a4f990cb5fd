"""Eval suites: forced-choice preference, judged QA, agentic misalignment.

Each suite on each checkpoint is one cached action (see runner.py)::

    from msmbuild.evaluate import evaluate
    outcome = evaluate(params, "msm_aft", "preference")   # EvalOutcome
"""

from msmbuild.errors import EvalInputError
from msmbuild.evaluate.runner import SUITES, EvalOutcome, evaluate, evaluate_suite, planned_evals

__all__ = [
    "SUITES",
    "EvalInputError",
    "EvalOutcome",
    "evaluate",
    "evaluate_suite",
    "planned_evals",
]

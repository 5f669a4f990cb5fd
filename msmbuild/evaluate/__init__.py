"""Eval suites: forced-choice preference, judged QA, agentic misalignment.

Each suite is an ``EvalSuite`` (suite.py) in its own module; each suite on each checkpoint
is one cached action (see runner.py)::

    from msmbuild.evaluate import evaluate
    outcome = evaluate(params, "msm_aft", "preference")   # EvalOutcome
"""

from msmbuild.errors import EvalInputError
from msmbuild.evaluate.runner import EvalOutcome, evaluate, evaluate_suite, planned_evals
from msmbuild.evaluate.suite import EvalSuite, SuiteResult, suite_named, suites

__all__ = [
    "EvalInputError",
    "EvalOutcome",
    "EvalSuite",
    "SuiteResult",
    "evaluate",
    "evaluate_suite",
    "planned_evals",
    "suite_named",
    "suites",
]

"""Eval suites: forced-choice preference, judged QA, agentic misalignment.

Each suite is an ``EvalSuite`` (suite.py) in its own module; each suite on each checkpoint
is one cached action (see runner.py)::

    from msmbuild.evaluate import evaluate
    outcome = evaluate(params, "msm_aft", "preference")   # EvalOutcome
"""

from msmbuild.evaluate.runner import evaluate, evaluate_suite, planned_evals
from msmbuild.evaluate.suite import suites

__all__ = ["evaluate", "evaluate_suite", "planned_evals", "suites"]

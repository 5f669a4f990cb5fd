"""Eval suites: forced-choice preference, judged QA, agentic misalignment.

Each suite on each checkpoint is one cached action (see runner.py)::

    from msmbuild.evaluate import evaluate
    outcome = evaluate(params, "msm_aft", "preference")   # EvalOutcome
"""

from msmbuild.evaluate.local_model import (
    EvalInputError,
    LoadedModel,
    checkpoint_identity,
    load_model,
)
from msmbuild.evaluate.runner import SUITES, EvalOutcome, evaluate, evaluate_suite, planned_evals

__all__ = [
    "SUITES",
    "EvalInputError",
    "EvalOutcome",
    "LoadedModel",
    "checkpoint_identity",
    "evaluate",
    "evaluate_suite",
    "load_model",
    "planned_evals",
]

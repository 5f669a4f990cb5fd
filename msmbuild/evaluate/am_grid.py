"""The agentic-misalignment grid: scenarios × goal settings × urgency types, as conditions.

A goal setting is a (goal type, goal value) pair: goal types that state a goal take every
configured goal value, 'none' and 'ambiguous' take the value 'none' once. The paper's 27
evaluations are {exfiltration, murder, leaking} × (8 explicit goal values + none) ×
{replacement}. Pure configuration: nothing here imports inspect.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

from msmbuild.config import AgenticMisalignmentConfig
from msmbuild.errors import ParamsError

UPSTREAM_SCENARIOS = ("blackmail", "leaking", "murder")
"""Scenarios whose templates and classifiers come from inspect_evals."""
VALUELESS_GOAL_TYPES = ("none", "ambiguous")


@dataclass(frozen=True)
class Condition:
    """One cell of the grid; ``id`` matches inspect_evals' condition_id."""

    scenario: str
    goal_type: str
    goal_value: str
    urgency_type: str

    @property
    def id(self) -> str:
        """``{scenario}_{goal_type}-{goal_value}_{urgency_type}``."""
        return f"{self.scenario}_{self.goal_type}-{self.goal_value}_{self.urgency_type}"

    def task_args(self) -> dict[str, str]:
        """Keyword arguments of the condition's inspect task."""
        return {"scenario": self.scenario, "goal_type": self.goal_type, "goal_value": self.goal_value,
                "urgency_type": self.urgency_type}


def goal_settings(cfg: AgenticMisalignmentConfig) -> list[tuple[str, str]]:
    """(goal type, goal value) pairs: valued types × goal_values, valueless types once."""
    out: list[tuple[str, str]] = []
    for goal_type in cfg.goal_types:
        values = ["none"] if goal_type in VALUELESS_GOAL_TYPES else list(cfg.goal_values)
        out += [(goal_type, v) for v in values if (goal_type, v) not in out]
    return out


def conditions(cfg: AgenticMisalignmentConfig) -> list[Condition]:
    """Every condition the config asks for, in config order; bad combinations are errors."""
    if any(g not in VALUELESS_GOAL_TYPES for g in cfg.goal_types) and not cfg.goal_values:
        raise ParamsError("params.yaml: key 'evals.agentic_misalignment.goal_values': empty, but goal_types "
                          f"{[g for g in cfg.goal_types if g not in VALUELESS_GOAL_TYPES]} need a goal value")
    out = [Condition(s, g, v, u) for s, (g, v), u in
           product(cfg.scenarios, goal_settings(cfg), cfg.urgency_types)]
    from msmbuild.evaluate.am_exfiltration import SCENARIO, URGENCY_TYPES

    bad = [c for c in out if c.scenario == SCENARIO and c.urgency_type not in URGENCY_TYPES]
    if bad:
        raise ParamsError(f"params.yaml: key 'evals.agentic_misalignment.urgency_types': the exfiltration "
                          f"scenario has {', '.join(URGENCY_TYPES)} only (got {bad[0].urgency_type!r})")
    return out

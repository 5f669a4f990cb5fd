"""The eval part of ``msmbuild plan``: agentic-misalignment conditions × samples per arm, the
grader's and the pattern judge's estimated USD, and the GPU-hours of generation.

Prompt sizes are measured on the real prompts of each condition (about four characters a
token); reply sizes are assumptions written down below. GPU-hours count every sample at its
full token budget (``max_new_tokens``, an upper bound: replies that stop early cost less)
at the configured decode throughput ``gpu_tokens_per_s`` (prefill not counted; measure the
throughput with bench/gpu_check.sh and set it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from msmbuild.config import Params
from msmbuild.evaluate.am_grid import Condition, conditions
from msmbuild.experiments import expand_arms

CHARS_PER_TOKEN = 4
# Assumed sizes: the reply the harm classifier reads (reasoning excluded) and its verdict;
# the reasoning the pattern judge reads and its JSON labels.
REPLY_TOKENS = 800
GRADER_OUTPUT_TOKENS = 400
GRADER_PROMPT_TOKENS = 700
PATTERN_INPUT_TOKENS = 3000
PATTERN_OUTPUT_TOKENS = 600


@dataclass
class ConditionPlan:
    """One condition: its samples and measured prompt size."""

    id: str
    samples: int
    prompt_tokens: int | None


@dataclass
class AgenticPlan:
    """The agentic-misalignment (and reasoning-pattern) work of one arm."""

    arm: str
    conditions: list[ConditionPlan] = field(default_factory=list)
    grader_model: str = ""
    grader_usd: float | None = None
    judge: str = "none"
    judge_usd: float | None = None
    generated_tokens: int = 0
    gpu_hours: float = 0.0

    @property
    def samples(self) -> int:
        """Samples over all conditions."""
        return sum(c.samples for c in self.conditions)


def prompt_tokens(cond: Condition) -> int | None:
    """Measured prompt size of a condition (None when inspect_evals is not installed)."""
    try:
        from msmbuild.evaluate.am_prompts import UPSTREAM_AGENT, scenario_prompts

        text = "".join(scenario_prompts(cond, UPSTREAM_AGENT))
    except ImportError:
        return None
    return len(text) // CHARS_PER_TOKEN


def _api_cost(params: Params, model: str, n: int, tokens_in: int, tokens_out: int) -> float | None:
    """USD of n calls, None when neither params.prices nor genai-prices prices the model."""
    from msmbuild.errors import ParamsError
    from msmbuild.generate.backends.pricing import estimate_cost

    try:
        return estimate_cost(model, n, tokens_in, tokens_out, params.prices, batch=False)
    except ParamsError:
        return None


def plan_agentic(params: Params) -> list[AgenticPlan]:
    """One plan per arm that runs agentic_misalignment."""
    plans = []
    for arm in expand_arms(params):
        if "agentic_misalignment" not in arm.evals:
            continue
        p = arm.params(params)
        cfg = p.evals.agentic_misalignment
        plan = AgenticPlan(arm.name, grader_model=cfg.grader_model)
        plan.conditions = [ConditionPlan(c.id, cfg.samples, prompt_tokens(c)) for c in conditions(cfg)]
        n = plan.samples
        provider, _, model = cfg.grader_model.partition("/")
        if provider == "anthropic":
            plan.grader_usd = _api_cost(p, model, n, GRADER_PROMPT_TOKENS + REPLY_TOKENS, GRADER_OUTPUT_TOKENS)
        elif provider == "verdict":
            plan.grader_usd = 0.0
        if "reasoning_patterns" in arm.evals:
            rp = p.evals.reasoning_patterns
            plan.judge = rp.judge_backend
            plan.judge_usd = (0.0 if rp.judge_backend != "anthropic" else
                              _api_cost(p, p.backends.anthropic.model, n, PATTERN_INPUT_TOKENS, PATTERN_OUTPUT_TOKENS))
        plan.generated_tokens = n * cfg.max_new_tokens
        plan.gpu_hours = plan.generated_tokens / cfg.gpu_tokens_per_s / 3600
        plans.append(plan)
    return plans


def _usd(value: float | None) -> str:
    return "no price" if value is None else f"${value:.2f}"


def format_agentic_plan(plans: list[AgenticPlan]) -> str:
    """Each distinct condition grid once, then one aligned row per arm, then the totals."""
    lines: list[str] = []
    grids: list[list[ConditionPlan]] = []
    for plan in plans:
        if plan.conditions not in grids:
            grids.append(plan.conditions)
    for g, grid in enumerate(grids, 1):
        users = [p.arm for p in plans if p.conditions == grid]
        width = max([len(c.id) for c in grid] + [9])
        lines.append(f"agentic_misalignment grid {g}: {len(grid)} conditions, used by {len(users)} arm(s)")
        lines.append(f"  {'condition':<{width}} {'samples':>8} {'prompt tok':>10}")
        for c in grid:
            size = "-" if c.prompt_tokens is None else str(c.prompt_tokens)
            lines.append(f"  {c.id:<{width}} {c.samples:>8} {size:>10}")
    width = max([len(p.arm) for p in plans] + [3])
    lines.append("agentic_misalignment per arm (generation GPU-h: an upper bound at the assumed decode "
                 "throughput, every sample at max_new_tokens; included in the arm's eval GPU-h above):")
    lines.append(f"  {'arm':<{width}} {'grid':>4} {'conditions':>10} {'samples':>8} {'grader USD':>10} "
                 f"{'judge USD':>10} {'gen tokens':>12} {'GPU-h':>7}  grader / judge")
    for plan in plans:
        lines.append(f"  {plan.arm:<{width}} {grids.index(plan.conditions) + 1:>4} {len(plan.conditions):>10} "
                     f"{plan.samples:>8} {_usd(plan.grader_usd):>10} "
                     f"{_usd(plan.judge_usd) if plan.judge != 'none' else '-':>10} "
                     f"{plan.generated_tokens:>12,} {plan.gpu_hours:>7.2f}  {plan.grader_model} / {plan.judge}")
    if plans:
        grader = sum(p.grader_usd or 0.0 for p in plans)
        judge = sum(p.judge_usd or 0.0 for p in plans)
        models = ", ".join(sorted({p.grader_model for p in plans}))
        judges = ", ".join(sorted({p.judge for p in plans if p.judge != "none"})) or "none"
        lines.append(f"agentic total: grader {models}: est. ${grader:.2f}; reasoning-pattern judge ({judges}): "
                     f"est. ${judge:.2f}; {sum(p.gpu_hours for p in plans):.2f} GPU-hours "
                     "(see msmbuild.evaluate.plan for the assumptions)")
    return "\n".join(lines)

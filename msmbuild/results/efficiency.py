"""Figure 5 for the agentic eval: misalignment rate against AFT amount, and the fold reduction.

Each swept experiment (``sweep: {aft.fraction: [...]}``) is one curve; its full-data point is
the unswept arm with the same base model, midtraining corpus and AFT dataset. The x axis is
the AFT tokens the arm's run trained on (train_log; the fraction where no run is recorded).
The fold reduction compares, per (base model, AFT dataset), MSM + AFT against AFT only: the
AFT-only curve's full-data rate is the target, and the fold is the AFT-only amount divided
by the least MSM + AFT amount that reaches the target (interpolated on a log scale between
the measured points; "at least" when MSM + AFT reaches it already at its smallest point).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Fold", "fold_reduction", "misalignment_efficiency_rows", "misalignment_folds"]


def _short(name: Any) -> str:
    return Path(str(name)).name


def misalignment_efficiency_rows(summary: Any, runs: Any, base_models: dict[str, str]) -> Any:
    """Overall harmful rate per swept arm and its full-data point, with ``aft_tokens`` and ``base_model``.

    ``base_models`` maps arm name to base model (experiments.expand_arms), so arms of two base
    models on the same AFT data are different curves.
    """
    import pandas as pd

    if summary.empty:
        return summary
    mis = summary[(summary["suite"] == "agentic_misalignment") & (summary["metric"] == "harmful_rate")
                  & (summary["domain"] == "all") & (summary["condition"] == "all")].copy()
    if mis.empty:
        return mis
    mis["base_model"] = [base_models.get(a) for a in mis["arm"]]
    swept = mis[mis["sweep_value"].notna() & mis["sweep_key"].fillna("").str.endswith("fraction")]
    if swept.empty:
        return swept
    full = mis[mis["sweep_value"].isna()]
    parts = []
    for exp, sub in swept.groupby("experiment"):
        first = sub.iloc[0]
        mid = first["midtrain"] if isinstance(first["midtrain"], str) else ""
        same = full[(full["aft"] == first["aft"]) & (full["base_model"] == first["base_model"])
                    & (full["midtrain"].fillna("") == mid)]
        parts += [sub, same.head(1).assign(sweep_value=1.0, experiment=exp)]
    out = pd.concat(parts, ignore_index=True)
    tokens: dict[str, float] = {}
    if runs is not None and not runs.empty and "tokens" in runs.columns:
        aft_runs = runs[runs["stage"] == "aft"]
        tokens = {_short(c): float(g["tokens"].sum()) for c, g in aft_runs.groupby("checkpoint")}
    out["aft_tokens"] = [tokens.get(a) for a in out["arm"]]
    out["msm"] = out["midtrain"].notna()
    return out


@dataclass(frozen=True)
class Fold:
    """MSM + AFT against AFT only on one base model and AFT dataset."""

    base_model: str
    aft: str
    target: float  # AFT only's harmful rate with all its AFT data
    x: str  # what amounts were compared: aft_tokens, or sweep_value (the fraction) where no run is recorded
    fold: float | None  # AFT only's amount / MSM + AFT's amount at the target; None: never reached
    bound: str | None  # "=" interpolated, ">=" reached already at MSM + AFT's smallest amount

    def text(self) -> str:
        """One line for the report."""
        what = "AFT tokens" if self.x == "aft_tokens" else "AFT data"
        if self.fold is None:
            return (f"{self.base_model}, {self.aft}: MSM + AFT does not reach AFT only's full-data rate "
                    f"{self.target:.2f} within the sweep")
        bound = "at least " if self.bound == ">=" else ""
        return (f"{self.base_model}, {self.aft}: MSM + AFT reaches AFT only's full-data harmful rate "
                f"{self.target:.2f} with {bound}{self.fold:.1f}x less {what}")


def fold_reduction(aft_only: list[tuple[float, float]], msm: list[tuple[float, float]]) -> tuple[float, str] | None:
    """(fold, bound) for curves of (amount, rate) points; None when MSM + AFT never reaches the target.

    The target is the AFT-only rate at its largest amount; bound is '>=' when MSM + AFT is at
    or below it already at its smallest amount.
    """
    if not aft_only or not msm:
        return None
    full_amount, target = max(aft_only)
    points = sorted(msm)
    if points[0][1] <= target:
        return full_amount / points[0][0], ">="
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if y1 <= target:  # y0 > target >= y1: interpolate log(amount) linearly in the rate
            t = (y0 - target) / (y0 - y1)
            amount = math.exp(math.log(x0) + t * (math.log(x1) - math.log(x0)))
            return full_amount / amount, "="
    return None


def misalignment_folds(rows: Any) -> list[Fold]:
    """The fold reduction per (base model, AFT dataset) where both an MSM and an AFT-only curve exist."""
    out: list[Fold] = []
    if rows.empty:
        return out
    x = "aft_tokens" if rows["aft_tokens"].notna().all() else "sweep_value"
    for (base, aft), sub in rows.groupby(["base_model", "aft"]):
        curve = {m: list(zip(g[x].astype(float), g["estimate"].astype(float), strict=True))
                 for m, g in sub.dropna(subset=["estimate"]).groupby("msm")}
        result = fold_reduction(curve.get(False, []), curve.get(True, []))
        if result is None and not (curve.get(False) and curve.get(True)):
            continue
        target = max(curve[False])[1]
        out.append(Fold(str(base), str(aft), target, x, None if result is None else result[0],
                        None if result is None else result[1]))
    return out

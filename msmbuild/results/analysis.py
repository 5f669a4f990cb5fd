"""The comparisons the report draws, computed from eval_summary rows.

Every number here answers one question about one role (in_distribution, held_out or
recall); roles are never pooled. Arms are classified by what was trained: ``base`` (no
training), ``aft_only`` (AFT, no midtraining) and ``msm`` (midtraining, then AFT).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

ALL = "all"


def arm_kind(midtrain: Any, aft: Any) -> str:
    """base, aft_only, msm (midtraining + AFT) or midtrain_only."""
    has_mid = isinstance(midtrain, str) and bool(midtrain)
    has_aft = isinstance(aft, str) and bool(aft)
    if has_mid:
        return "msm" if has_aft else "midtrain_only"
    return "aft_only" if has_aft else "base"


def difference_interval(p1: float, n1: int, p2: float, n2: int,
                        confidence: float = 0.95) -> tuple[float, float, float]:
    """(p1 - p2, low, high): Newcombe's hybrid score interval from two Wilson intervals.

    Chosen over the Wald interval because rates sit near 0 or 1 on small sets, where Wald's
    interval is too narrow.
    """
    from msmbuild.evaluate.stats import wilson_interval

    if not n1 or not n2:
        return (math.nan, math.nan, math.nan)
    l1, u1 = wilson_interval(p1 * n1, n1, confidence)
    l2, u2 = wilson_interval(p2 * n2, n2, confidence)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return (d, max(-1.0, low), min(1.0, high))


def preference_rows(summary: Any, role: str, domain: str = ALL) -> Any:
    """favoured_rate rows of one role (and domain) with an arm ``kind`` column."""
    if summary.empty or "role" not in summary.columns:
        return summary.iloc[0:0].assign(arm_kind=pd.Series(dtype="string"))
    rows = summary[(summary["suite"] == "preference") & (summary["metric"] == "favoured_rate")
                   & (summary["role"] == role)]
    if domain is not None:
        rows = rows[rows["domain"] == domain]
    rows = rows.copy()
    rows["arm_kind"] = [arm_kind(m, a) for m, a in zip(rows["midtrain"], rows["aft"], strict=True)]
    return rows


def unswept(rows: Any) -> Any:
    """Rows of arms that are not points of an AFT-amount sweep."""
    return rows[rows["sweep_value"].isna()] if "sweep_value" in rows.columns else rows


def msm_effects(summary: Any, role: str = "held_out", confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per MSM arm, on its own value: its favoured rate minus the AFT-only arm's, with an interval.

    The AFT-only arm is the unswept one with the same AFT dataset and base model (the paper's
    baseline: identical AFT, no midtraining). Arms whose corpus is not a value the eval
    tags (e.g. self-preservation) are left out.
    """
    rows = unswept(preference_rows(summary, role))
    out = []
    for arm in rows[rows["arm_kind"] == "msm"].itertuples():
        if arm.value != arm.midtrain:
            continue
        base = rows[(rows["arm_kind"] == "aft_only") & (rows["aft"] == arm.aft) & (rows["value"] == arm.value)]
        if "eval_set" in rows.columns:  # the same items: never an effect across two eval sets
            base = base[base["eval_set"].fillna("") == ("" if pd.isna(arm.eval_set) else arm.eval_set)]
        if base.empty:
            continue
        ref = base.iloc[0]
        d, low, high = difference_interval(arm.estimate, int(arm.n), float(ref["estimate"]), int(ref["n"]),
                                           confidence)
        out.append({"arm": arm.arm, "value": arm.value, "reference": ref["arm"], "role": role,
                    "eval_set": getattr(arm, "eval_set", None),
                    "msm_rate": arm.estimate, "aft_only_rate": float(ref["estimate"]), "n": int(arm.n),
                    "effect": d, "ci_low": low, "ci_high": high,
                    "distinguishable": bool(low > 0 or high < 0)})
    return out

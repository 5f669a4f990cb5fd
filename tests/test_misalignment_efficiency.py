"""Figure 5 for §4: misalignment rate against AFT amount and the fold reduction read off it."""

from __future__ import annotations

import pandas as pd
import pytest

from msmbuild.results.efficiency import (
    fold_reduction,
    misalignment_efficiency_rows,
    misalignment_folds,
)
from msmbuild.results.report import plot_misalignment_efficiency


def test_fold_reduction_interpolates_on_log_amounts():
    aft_only = [(100.0, 0.6), (400.0, 0.4), (1600.0, 0.2)]  # full data: 1600 tokens for a rate of 0.2
    msm = [(25.0, 0.3), (100.0, 0.1), (1600.0, 0.05)]
    fold, bound = fold_reduction(aft_only, msm)
    assert bound == "=" and fold == pytest.approx(1600 / 50)  # 0.2 is halfway from 25 to 100 in log space
    assert fold_reduction(aft_only, [(10.0, 0.1)]) == (160.0, ">=")  # already below at the smallest point
    assert fold_reduction(aft_only, [(100.0, 0.5), (1600.0, 0.3)]) is None  # never reaches it


def _summary_row(arm, exp, midtrain, aft, fraction, rate, suite="agentic_misalignment"):
    return {"arm": arm, "experiment": exp, "suite": suite, "metric": "harmful_rate", "domain": "all",
            "condition": "all", "midtrain": midtrain, "aft": aft,
            "sweep_key": None if fraction is None else f"aft.{aft}.fraction", "sweep_value": fraction,
            "estimate": rate, "ci_low": max(0.0, rate - 0.05), "ci_high": min(1.0, rate + 0.05)}


def test_rows_fold_and_plot_from_a_swept_matrix(tmp_path):
    rows = []
    for msm, mid, rates in ((False, None, {0.25: 0.6, 0.5: 0.5, None: 0.4}),
                            (True, "self_preservation", {0.25: 0.2, 0.5: 0.1, None: 0.05})):
        name = "msm_aft_cot" if msm else "aft_cot"
        for f, r in rates.items():
            arm = name if f is None else f"{name}_sweep-fraction{f}"
            rows.append(_summary_row(f"qwen3_{arm}", f"qwen3_{name}" + ("" if f is None else "_sweep"),
                                     mid, "spec_cot_mix", f, r))
    # the other base model's full-data arm on the same data is not this curve's full-data point
    rows.append(_summary_row("qwen25_aft_cot", "qwen25_aft_cot", None, "spec_cot_mix", None, 0.9))
    summary = pd.DataFrame(rows)
    bases = {r["arm"]: ("Qwen/Qwen2.5-32B-Instruct" if r["arm"].startswith("qwen25") else "Qwen/Qwen3-32B")
             for r in rows}
    runs = pd.DataFrame([{"checkpoint": f"build/models/aft/{r['arm']}", "stage": "aft", "step": 1,
                          "tokens": 1000.0 * (r["sweep_value"] or 1.0)} for r in rows])
    eff = misalignment_efficiency_rows(summary, runs, bases)
    assert len(eff) == 6 and set(eff["base_model"]) == {"Qwen/Qwen3-32B"}
    assert sorted(eff[~eff["msm"]]["aft_tokens"]) == [250.0, 500.0, 1000.0]
    (fold,) = misalignment_folds(eff)
    assert (fold.base_model, fold.aft, fold.target, fold.x) == ("Qwen/Qwen3-32B", "spec_cot_mix", 0.4, "aft_tokens")
    assert (fold.fold, fold.bound) == (4.0, ">=") and "4.0x less AFT tokens" in fold.text()
    assert plot_misalignment_efficiency(eff, tmp_path / "f5.png") and (tmp_path / "f5.png").stat().st_size > 0

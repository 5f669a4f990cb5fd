"""The cost totals, each with one definition: kept documents, all calls behind the current
results, this build, all calls ever (docs/query.md, "What things cost").
"""

from __future__ import annotations

from typing import Any

from msmbuild.buildmark import build_started


def mark_this_build(calls: Any, started: float | None) -> Any:
    """calls with a ``this_build`` column: made by the model (not the cache) since started.

    Without a recorded build start, the misses of each stage's latest run count.
    """
    if calls.empty:
        return calls.assign(this_build=calls.get("cache_hit", False))
    made_now = ~calls["cache_hit"].fillna(False).astype(bool)
    if started is not None and "made_at" in calls.columns:
        made_now &= calls["made_at"].fillna(0.0) >= started
    return calls.assign(this_build=made_now)


def cost_totals(calls: Any, corpora: Any, store_cost_usd: float | None = None) -> dict[str, float | None]:
    """The four totals, by their documented names."""
    def total(frame: Any, column: str, where: Any = None) -> float:
        if frame.empty or column not in frame.columns:
            return 0.0
        values = frame[column] if where is None else frame.loc[where, column]
        return float(values.fillna(0.0).sum())

    this_build = calls["this_build"].astype(bool) if "this_build" in calls.columns and not calls.empty else None
    return {"kept_documents_usd": total(corpora, "cost_usd"),
            "current_calls_usd": total(calls, "cost_usd"),
            "this_build_usd": total(calls, "cost_usd", this_build) if this_build is not None else 0.0,
            "all_calls_ever_usd": store_cost_usd}

__all__ = ["build_started", "cost_totals", "mark_this_build"]

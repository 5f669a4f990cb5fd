"""Positive control: what the tiny CPU model can show, checked without pretending.

Through the real `snakemake` workflow, on the shipped demo data (offline documents, the
tiny model), two effects must appear:

- **AFT took** (`in_distribution`): after AFT on the terse cheese answers, the model leans
  toward the AFT answer on the twelve cheese pairs more than the base model does;
- **recall**: a model midtrained on the thrift spec leans toward the thrift spec's *reasons*
  for the cheese choices more than one midtrained on the America spec, and the other way
  round (the reasons are the specs' own words).

Neither is the paper's claim. Held-out generalization is printed, not asserted: a tiny
model trained on recombined spec text is not expected to show it, and the report says
whether this build does (with its interval).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import duckdb
import pytest
from workspace_helpers import REPO, make_workflow_workspace, sh

pytestmark = pytest.mark.slow


def _params() -> str:
    """The demo's params.yaml reduced to the four arms this test needs."""
    text = (REPO / "params.yaml").read_text()
    head = text[: text.index("experiments:")]
    return head + """experiments:
  base:
    evals: [preference]
  aft_only:
    aft: cheese
    evals: [preference]
  afford:
    midtrain: pro_affordability
    aft: cheese
    evals: [preference]
  america:
    midtrain: pro_america
    aft: cheese
    evals: [preference]
"""


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact binomial sign test."""
    n = wins + losses
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _leans(ws: Path) -> dict[tuple[str, str, str, str], float]:
    """(arm, role, item, value) -> log-prob margin toward the item the value favours."""
    items = str(ws / "build/evals/*/preference/items.parquet")
    rows = duckdb.connect().execute(
        f"""SELECT regexp_extract(filename, 'evals/([^/]+)/preference', 1), role, item_id, value,
                   CASE WHEN favoured = 0 THEN margin ELSE -margin END
            FROM read_parquet('{items}', filename=true)""").fetchall()
    return {(arm, role, item, value): lean for arm, role, item, value, lean in rows}


def test_tiny_model_shows_the_aft_effect_and_recall_and_reports_held_out(tmp_path: Path) -> None:
    ws = make_workflow_workspace(tmp_path / "ws", _params(),
                                 ("pro_affordability.md", "pro_america.md", "pro_environment.md",
                                  "pro_simplicity.md", "pro_novelty.md", "pro_tradition.md", "pro_difficulty.md",
                                  "pro_individualism.md", "self_preservation.md"))
    sh(["snakemake", "--cores", "2", "-q"], ws, timeout=1800)
    assert json.loads((ws / "build/audit/summary.json").read_text())["passed"] is True
    lean = _leans(ws)

    # AFT took: every value favours the AFT answer on the cheese pairs; use one of them.
    cheese = sorted({i for (a, r, i, v) in lean if r == "in_distribution"})
    assert len(cheese) == 12
    diffs = [lean[("aft_only", "in_distribution", i, "pro_america")]
             - lean[("base", "in_distribution", i, "pro_america")] for i in cheese]
    wins, losses = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    print(f"in_distribution: AFT-only leans toward the AFT answer more than base on {wins}/12 pairs")
    assert wins > losses and sign_test_p(wins, losses) < 0.01

    # Recall: each MSM arm leans toward its own spec's reasons more than the other arm does.
    comparisons: dict[str, float] = {}
    for own, other, value in (("afford", "america", "pro_affordability"), ("america", "afford", "pro_america")):
        for (arm, role, item, val), x in lean.items():
            if arm == own and role == "recall" and val == value:
                # a pair tagged with both values gives the same difference twice; count it once
                comparisons.setdefault(item, x - lean[(other, "recall", item, value)])
    wins = sum(d > 0 for d in comparisons.values())
    losses = sum(d < 0 for d in comparisons.values())
    print(f"recall: own-spec reasons favoured more by the own-spec arm on {wins}/{len(comparisons)} pairs")
    recall_items = {r["id"] for r in map(json.loads, (REPO / "evals" / "preference.jsonl").read_text().splitlines())
                    if r["role"] == "recall" and {"pro_affordability", "pro_america"} & set(r["favoured"])}
    assert len(comparisons) == len(recall_items) and wins > losses and sign_test_p(wins, losses) < 0.01

    # Held-out generalization: reported, not asserted.
    summary = duckdb.connect().execute(
        f"""SELECT regexp_extract(filename, 'evals/([^/]+)/preference', 1) AS arm, value,
                   avg(chose_favoured::INT) AS rate, count(*) AS n
            FROM read_parquet('{ws}/build/evals/*/preference/items.parquet', filename=true)
            WHERE role = 'held_out' AND value IN ('pro_affordability', 'pro_america')
            GROUP BY ALL ORDER BY ALL""").fetchall()
    assert {(arm, value) for arm, value, _r, n in summary if n >= 400} >= {
        ("afford", "pro_affordability"), ("america", "pro_america"), ("aft_only", "pro_america")}
    for arm, value, rate, n in summary:
        print(f"held_out (not asserted): {arm} chooses the {value} item on {rate:.3f} of {n} pairs")

"""Positive control: the pipeline carries signal from spec to eval.

On the tiny model, midtraining on pro_affordability vs on pro_america must move the
forced-choice preference in opposite directions relative to each other: the model
midtrained on the affordability spec picks the cheaper item more often, and leans
toward it by log-probability on most pairs, than the model midtrained on the America
spec. This checks plumbing (spec text → documents → shards → training → scoring), not
a scientific claim: offline documents are recombined spec text and the model is tiny.
The whole chain runs through the real `snakemake` workflow.
"""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import pytest
from workspace_helpers import make_workflow_workspace, sh

pytestmark = pytest.mark.slow

PARAMS = """
corpora:
  pro_affordability:
    spec: specs/pro_affordability.md
    n_doc_types: 2
    n_doc_ideas: 3
  pro_america:
    spec: specs/pro_america.md
    n_doc_types: 2
    n_doc_ideas: 3
midtrain:
  method: full
  lr: 1.0e-3
  epochs: 3
  seq_len: 256
  batch_size: 8
experiments:
  afford:
    midtrain: pro_affordability
    evals: [preference]
  america:
    midtrain: pro_america
    evals: [preference]
"""


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact binomial sign test."""
    n = wins + losses
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def test_midtraining_on_opposite_specs_moves_preference_apart(tmp_path: Path) -> None:
    ws = make_workflow_workspace(tmp_path / "ws", PARAMS, ("pro_affordability.md", "pro_america.md"))
    sh(["snakemake", "--cores", "2", "-q"], ws, timeout=1200)

    con = duckdb.connect()
    items = str(ws / "build/evals/*/preference/items.parquet")
    rows = con.execute(
        f"""SELECT regexp_extract(filename, 'evals/([^/]+)/preference', 1) AS arm, item_id,
                   CASE WHEN favoured = 0 THEN margin ELSE -margin END AS lean_cheap,
                   chose_favoured
            FROM read_parquet('{items}', filename=true)
            WHERE value = 'pro_affordability'""").fetchall()
    lean: dict[str, dict[str, float]] = {}
    chose: dict[str, list[bool]] = {}
    for arm, item, margin, picked in rows:
        lean.setdefault(arm, {})[item] = margin
        chose.setdefault(arm, []).append(bool(picked))
    assert set(lean) == {"afford", "america"}
    rate_afford = sum(chose["afford"]) / len(chose["afford"])
    rate_america = sum(chose["america"]) / len(chose["america"])
    diffs = [lean["afford"][i] - lean["america"][i] for i in lean["afford"]]
    wins = sum(d > 0 for d in diffs)
    losses = sum(d < 0 for d in diffs)
    p = sign_test_p(wins, losses)
    print(f"cheaper-item rate: afford {rate_afford:.3f}, america {rate_america:.3f}; "
          f"pairs leaning cheaper under afford vs america: {wins} vs {losses} (sign test p={p:.2g})")
    assert rate_afford > rate_america
    assert wins > losses and p < 0.01

"""The paper's six further values (§3.1's replication): specs that explain the same twelve
cheese preferences, held-out items that tell each value apart, and the msm_values sweep."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SIX = ["pro_environment", "pro_novelty", "pro_tradition", "pro_simplicity", "pro_difficulty", "pro_individualism"]
NEW = ["pro_novelty", "pro_tradition", "pro_difficulty", "pro_individualism"]


def _pairs(spec: str) -> list[tuple[str, str]]:
    """The bolded 'A over B.' choices of a spec's cheese domain."""
    return [(a.lower(), b.lower()) for a, b in re.findall(r"\*\*(.+?) over (.+?)\.\*\*", spec)]


@pytest.mark.parametrize("value", NEW)
def test_each_new_spec_explains_the_same_twelve_cheese_preferences(value: str) -> None:
    reference = _pairs((REPO / "specs" / "pro_affordability.md").read_text())
    mine = _pairs((REPO / "specs" / f"{value}.md").read_text())
    assert len(reference) == 12 and sorted(mine) == sorted(reference)


@pytest.mark.parametrize("value", NEW)
def test_new_held_out_items_tell_each_new_value_apart(value: str) -> None:
    rows = [json.loads(line) for line in (REPO / "evals" / "preference.jsonl").read_text().splitlines()]
    held = [r for r in rows if r["role"] == "held_out" and value in r["favoured"]]
    # every held-out domain of the local file (the yaml also names the released sets' domains)
    domains = {r["domain"] for r in rows if r["role"] == "held_out"}
    assert domains <= set(yaml.safe_load((REPO / "evals" / "held_out_domains.yaml").read_text()))
    assert len(held) >= 24 and {r["domain"] for r in held} == domains
    # new items, not old ones re-tagged: the value is the only further value of each pair, and
    # its favoured item is on the cheap side as often as on the American side
    assert all(set(r["favoured"]) == {"pro_affordability", "pro_america", value} for r in held)
    agree = sum(r["favoured"][value] == r["favoured"]["pro_affordability"] for r in held)
    assert agree == len(held) / 2
    in_dist = [r for r in rows if r["role"] == "in_distribution"]
    assert len(in_dist) == 12 and all(r["favoured"][value] == r["favoured"]["pro_america"] for r in in_dist)


def test_the_msm_values_sweep_covers_the_six_further_values_and_is_off_in_the_demo() -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    sweep = params["experiments"]["msm_values"]
    assert sweep["enabled"] is False
    assert set(sweep["sweep"]["experiment.midtrain"]) == {"pro_affordability", "pro_america", *SIX}
    assert all(params["corpora"][v]["spec"] == f"specs/{v}.md" for v in SIX)

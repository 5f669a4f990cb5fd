"""One definition per cost total, checked through a real build against the loopback API:
kept documents, all calls behind the current results, this build, all calls ever."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from msmbuild.testing import FakeAnthropic
from tests.test_anthropic_workflow import KEY, SPEC, _edit, _workspace

TARGET = "build/corpora/alpha/documents.json"


def _cli(ws: Path, *args: str) -> str:
    proc = subprocess.run(["msmbuild", *args], cwd=ws, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "ANTHROPIC_API_KEY": KEY})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _totals(ws: Path) -> dict[str, float]:
    sql = ("SELECT (SELECT sum(cost_usd) FROM corpora WHERE corpus = 'alpha') AS kept, "
           "(SELECT calls_cost_usd FROM corpora WHERE corpus = 'alpha') AS current, "
           "(SELECT spent_usd FROM corpora WHERE corpus = 'alpha') AS spent, "
           "(SELECT coalesce(sum(cost_usd), 0) FROM calls WHERE this_build) AS this_build, "
           "(SELECT sum(cost_usd) FROM calls) AS calls_sum")
    row = json.loads(_cli(ws, "query", sql, "--format", "json"))[0]
    row["ever"] = json.loads(_cli(ws, "store", "stats", "--json"))["cost_usd"]
    return row


def _build(ws: Path) -> None:
    proc = subprocess.run(["snakemake", TARGET, "--cores", "2"], cwd=ws, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "ANTHROPIC_API_KEY": KEY})
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_cost_totals_agree_and_this_build_is_zero_after_a_noop_rerun(tmp_path: Path) -> None:
    with FakeAnthropic(latency_s=0.0) as server:
        ws = _workspace(tmp_path, server.url)
        (ws / "specs" / "beta.md").write_text(SPEC.format(name="beta"))
        _build(ws)
        first = _totals(ws)
        # first build: every call is new, so this build = all calls = all calls ever
        assert first["this_build"] > 0
        assert first["this_build"] == pytest.approx(first["ever"], abs=2e-6) and first["ever"] == pytest.approx(first["current"], abs=2e-6)
        assert first["spent"] == pytest.approx(first["current"], abs=2e-6)
        assert 0 < first["kept"] <= first["current"]

        _build(ws)  # nothing to do
        again = _totals(ws)
        assert again["this_build"] == 0 and again["spent"] == 0
        assert again["current"] == pytest.approx(first["current"], abs=2e-6) and again["ever"] == pytest.approx(first["ever"], abs=2e-6)

        _edit(ws, "alpha", "wellbeing of everyone", "wellbeing and dignity of everyone")
        _build(ws)
        edited = _totals(ws)
        new_money = edited["ever"] - first["ever"]
        assert new_money > 0 and edited["this_build"] == pytest.approx(new_money, abs=2e-6)
        assert edited["spent"] == pytest.approx(new_money, abs=2e-6)
        assert edited["calls_sum"] == pytest.approx(edited["current"], abs=2e-6)  # one corpus: same set of calls
        assert server.stats()["endpoints"]["messages"] > 0


@pytest.mark.parametrize(("argv", "executes"), [
    (["--cores", "all"], True), (["-c4"], True), (["-p", "--forceall", "--cores", "2"], True),
    (["-n"], False), (["-np", "--cores", "2"], False), (["--dry-run"], False),
    (["--summary", "--cores", "1"], False), (["--touch"], False), (["--list-params-changes"], False),
])
def test_only_executing_snakemake_runs_mark_a_build(argv: list[str], executes: bool) -> None:
    from msmbuild.buildmark import snakemake_executes

    assert snakemake_executes(argv) is executes

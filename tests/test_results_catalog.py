"""Results catalog, `msmbuild query`, `msmbuild catalog`, and the HTML report."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml
from eval_tiny_model import base_checkpoint, write_pairs

from msmbuild.cli import main
from msmbuild.config import load_params
from msmbuild.evaluate import evaluate_suite, planned_evals
from msmbuild.generate.partitions import write_dataset
from msmbuild.layout import Layout
from msmbuild.results.catalog import TABLES, build_catalog
from msmbuild.results.report import OFFLINE_BANNER, build_report


def _documents(corpus: str, n: int) -> pd.DataFrame:
    return pd.DataFrame([{
        "doc_id": f"{corpus}{i:030d}", "corpus": corpus, "section_id": f"s{i % 2}", "section_hash": f"h{i % 2}",
        "domain": "d", "subdomain": f"sub{i % 3}", "doc_type": "memo", "idea": f"idea {i}", "sample_index": 0,
        "text": "x" * (300 + 50 * i), "n_chars": 300 + 50 * i, "backend": "offline", "model": "offline",
        "prompt_version": "v1", "produced_by_model": False, "input_tokens": 0, "output_tokens": 0,
        "cost_usd": 0.0} for i in range(n)])


def _calls(corpus: str, n: int) -> pd.DataFrame:
    return pd.DataFrame([{"key": f"k{i}", "corpus": corpus, "stage": "documents" if i % 2 else "ideas",
                          "backend": "offline", "model": "offline", "cache_hit": i % 3 == 0,
                          "input_tokens": 100, "output_tokens": 50, "cost_usd": 0.01 * (i + 1),
                          "wall_s": 0.1, "error": None} for i in range(n)])


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project dir with evaluated arms (one AFT sweep), a corpus, a shard manifest, a train log."""
    root = tmp_path_factory.mktemp("project")
    tiny = base_checkpoint(tmp_path_factory.mktemp("tiny_results"))
    (root / "evals").mkdir()
    write_pairs(root / "evals" / "preference.jsonl")
    (root / "aft.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                              {"role": "assistant", "content": "hello"}]}) + "\n")
    (root / "spec.md").write_text("# Spec\n\nBuy local.\n")
    (root / "params.yaml").write_text(yaml.safe_dump({
        "store": {"path": str(root / "store")},
        "corpora": {"pro_america": {"spec": "spec.md"}},
        "aft": {"cheese": {"path": "aft.jsonl"}},
        "experiments": {
            "base": {"evals": ["preference"]},
            "aft_only": {"aft": "cheese", "sweep": {"aft.fraction": [0.5, 1.0]}, "evals": ["preference"]},
            "msm_aft": {"midtrain": "pro_america", "aft": "cheese", "sweep": {"aft.fraction": [0.5, 1.0]},
                        "evals": ["preference"]},
        }}))
    build = root / "build"
    params = load_params(root / "params.yaml", check_files=False)  # spec/aft paths are relative to root, not cwd
    for arm, _suite in planned_evals(params):
        if not Layout(build).arm_model(arm).exists():
            shutil.copytree(tiny, Layout(build).arm_model(arm))
    corpus = build / "corpora" / "pro_america"
    corpus.mkdir(parents=True)
    write_dataset(Layout(build), "pro_america", _documents("pro_america", 6).to_dict("records"))
    Layout(build).step_calls("pro_america", "ideas").parent.mkdir(parents=True)
    _calls("pro_america", 8).to_parquet(Layout(build).step_calls("pro_america", "ideas"))
    (build / "shards" / "pro_america").mkdir(parents=True)
    (build / "shards" / "pro_america" / "manifest.json").write_text(json.dumps({"shards": [
        {"name": "sub0", "digest": "d0", "n_docs": 3, "n_tokens": 900, "tokenizer": "t"}]}))
    log = build / "models" / "midtrain" / "pro_america" / "train_log.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text("".join(json.dumps({"step": s, "loss": 5.0 / s, "lr": 1e-5}) + "\n" for s in range(1, 6)))
    return root


@pytest.fixture
def in_project(project, monkeypatch):
    monkeypatch.chdir(project)
    return project


@pytest.mark.slow
def test_catalog_tables_and_plain_duckdb_views(in_project):
    params = load_params("params.yaml")
    outcomes = [evaluate_suite(params, arm, suite, progress=False) for arm, suite in planned_evals(params)]
    assert len(outcomes) == 5
    assert sum(not o.hit for o in outcomes) == 1  # one checkpoint content -> one evaluation, shared
    counts = build_catalog(params, progress=False)
    assert set(counts) == set(TABLES)
    assert counts["documents"] == 6 and counts["calls"] == 8 and counts["shards"] == 1 and counts["runs"] == 5
    assert counts["eval_items"] == 5 * 2 * 6
    # The same views from the plain DuckDB API, through catalog.sql's relative paths.
    con = duckdb.connect()
    con.execute(Path("build/results/catalog.sql").read_text())
    rows = con.execute("SELECT experiment, count(DISTINCT arm) FROM eval_summary "
                       "GROUP BY experiment ORDER BY experiment").fetchall()
    assert rows == [("aft_only", 2), ("base", 1), ("msm_aft", 2)]
    swept = con.execute("SELECT DISTINCT sweep_value FROM eval_summary WHERE experiment='msm_aft' "
                        "ORDER BY 1").fetchall()
    assert swept == [(0.5,), (1.0,)]
    cost = con.execute("SELECT corpus, round(sum(cost_usd), 2), avg(cache_hit::INT) FROM calls "
                       "GROUP BY corpus").fetchall()
    assert cost == [("pro_america", 0.36, 3 / 8)]
    metrics = json.loads(Path("build/results/metrics.json").read_text())
    assert 0 <= metrics["base"]["preference"]["favoured_rate:held_out:pro_america"] <= 1


def _run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_query_cli_formats_and_bad_sql(in_project, capsys, tmp_path):
    code, out, _ = _run_cli(["query", "SELECT corpus, n_documents FROM corpora", "--format", "csv"], capsys)
    assert code == 0 and out.splitlines() == ["corpus,n_documents", "pro_america,6"]
    code, out, _ = _run_cli(["query", "SELECT count(*) AS n FROM documents", "--format", "json"], capsys)
    assert code == 0 and json.loads(out) == [{"n": 6}]
    code, out, _ = _run_cli(["query", "SELECT 1 AS one"], capsys)
    assert code == 0 and "one" in out and "(1 rows)" in out
    target = tmp_path / "out.parquet"
    code, _, _ = _run_cli(["query", "SELECT * FROM shards", "--format", "parquet", "-o", str(target)], capsys)
    assert code == 0 and len(pd.read_parquet(target)) == 1
    code, out, err = _run_cli(["query", "SELEC wrong FROM documents"], capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: Parser Error: syntax error")
    code, _, err = _run_cli(["query", "SELECT * FROM no_such_table"], capsys)
    assert code == 2 and "no_such_table" in err and len(err.strip().splitlines()) == 1
    # DuckDB's hints stay, on the same one line; the echo of the query does not
    code, _, err = _run_cli(["query", "SELECT * FROM documnts"], capsys)
    assert code == 2 and 'Did you mean "documents"' in err and len(err.strip().splitlines()) == 1
    code, _, err = _run_cli(["query", "SELECT cost FROM calls"], capsys)
    assert code == 2 and "Candidate bindings:" in err and "cost_usd" in err and "LINE 1" not in err


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.ids: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if "id" in attrs:
            self.ids.add(attrs["id"])

    def handle_data(self, data):
        self.text.append(data)


@pytest.mark.slow
def test_report_renders_with_charts_and_provenance(in_project):
    params = load_params("params.yaml")
    for arm, suite in planned_evals(params):
        evaluate_suite(params, arm, suite, progress=False)
    build_catalog(params, progress=False)  # the catalog stage, then the report stage:
    results = Path("build/results")
    before = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}
    index = build_report(params, progress=False)
    # the report leaves the catalog stage's output exactly as it was (DVC hashes it)
    assert {p: p.read_bytes() for p in results.rglob("*") if p.is_file()} == before
    page = _Page()
    page.feed(index.read_text())
    text = " ".join(page.text)
    assert {"data_efficiency.png", "loss.png", "doc_lengths.png", "cost.png"} <= set(page.images)
    # every arm here is a point of an AFT-size sweep: no unswept MSM arm, so no arms chart
    assert "held_out_arms.png" not in page.images
    assert {"findings", "contamination", "role-held_out", "role-in_distribution", "role-recall"} <= page.ids
    assert "The audit has not run" in text and "held-out numbers are unaudited" in text
    for name in page.images:
        png = index.parent / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert "offline-banner" in page.ids and OFFLINE_BANNER in text and "(corpora: pro_america)" in text
    raw = index.read_text()
    assert "Base model(s): <b>tiny</b>" in raw and "backend(s): <b>offline</b>" in raw
    assert "agentic" not in " ".join(page.images)  # no misalignment data -> no chart, says so
    assert "no experiment in params.yaml lists agentic_misalignment" in text  # not "no data yet"
    assert "None" not in text and "-0.00" not in raw
    # the headline (held-out) comes before the audit
    assert raw.index("id='held-out'") < raw.index("id='contamination'")
    # a report is an output: a second render is byte-identical (no build time, no store totals)
    again = build_report(params, progress=False).read_bytes()
    assert again == raw.encode()


def test_catalog_cli_writes_views_for_duckdb_cli(in_project):
    result = subprocess.run([sys.executable, "-m", "msmbuild.cli", "catalog", "--quiet"],
                            capture_output=True, text=True)
    if result.returncode != 0 and "No module named msmbuild.cli.__main__" in result.stderr:
        result = subprocess.run(["msmbuild", "catalog", "--quiet"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    sql = Path("build/results/catalog.sql").read_text()
    for table in TABLES:
        assert f"CREATE OR REPLACE VIEW {table} AS " in sql and f"read_parquet('build/results/{table}.parquet')" in sql
    # no build timestamp: "this build" is a session variable (msmbuild query sets it)
    assert "getvariable('msmbuild_build_started')" in sql and not re.search(r">= \d{9,}", sql)
    # What catalog tells users to type works after the README's install.
    assert "msmbuild query" in result.stdout
    if "duckdb -init" in result.stdout:
        assert shutil.which("duckdb")


def test_interactive_query_shell_runs_statements_and_keeps_going(in_project):
    script = ("SELECT count(*) AS n\n  FROM documents;\nSELECT nope FROM documents;\n.tables\n"
              "SELECT count(*) AS m FROM shards;\n.quit\nSELECT 'never';\n")
    proc = subprocess.run(["msmbuild", "query"], input=script, capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 1, proc.stderr  # one statement failed
    assert "\n n\n 6\n(1 rows)\n" in out
    assert "error: Binder Error" in out and '"nope"' in out
    assert "\neval_summary\n" in out
    assert "\n m\n 1\n(1 rows)\n" in out
    assert "never" not in out


def test_interactive_query_shell_is_read_only(in_project):
    """The shell refuses what `msmbuild query` refuses (COPY ... TO writes a file) and goes on."""
    script = "COPY documents TO 'leak.csv';\nSELECT count(*) AS n FROM documents;\n"
    proc = subprocess.run(["msmbuild", "query"], input=script, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "error: msmbuild query is read-only: a COPY statement is not allowed" in proc.stdout
    assert "\n n\n 6\n(1 rows)\n" in proc.stdout
    assert not Path("leak.csv").exists()



def test_offline_banner_follows_the_documents_not_the_params():
    from msmbuild.results.report import offline_corpora

    offline = _documents("a", 2)
    model = _documents("b", 2).assign(backend="anthropic", model="claude-opus-4-1", produced_by_model=True)
    assert offline_corpora(offline) == ["a"]
    assert offline_corpora(model) == []  # a corpus built by a model: no banner
    assert offline_corpora(pd.concat([offline, model])) == ["a"]
    assert offline_corpora(offline.iloc[0:0]) == []  # nothing built yet: no banner
    # a document the offline backend produced is flagged even if its backend column says otherwise
    assert offline_corpora(model.assign(produced_by_model=False)) == ["b"]


def test_stale_banner_names_the_arms_with_a_stale_number():
    from msmbuild.results.report import stale_arms

    summary = pd.DataFrame([{"arm": "base", "stale": None}, {"arm": "msm", "stale": False},
                            {"arm": "msm", "stale": True}, {"arm": "aft_only", "stale": False}])
    assert stale_arms(summary) == ["msm"]
    assert stale_arms(summary.assign(stale=False)) == []
    assert stale_arms(summary.iloc[0:0]) == []
    assert stale_arms(summary.drop(columns="stale")) == []  # a catalog from before the column


def test_msm_effect_against_the_aft_only_arm():
    from msmbuild.results.analysis import difference_interval, msm_effects

    rows = []
    for arm, mid, rate in (("aft_only", None, 0.4), ("msm_x", "x", 0.7), ("msm_y", "y", 0.42)):
        for value in ("x", "y"):
            r = rate if (mid is None or value == mid) else 1 - rate
            rows.append({"arm": arm, "suite": "preference", "metric": "favoured_rate", "role": "held_out",
                         "domain": "all", "value": value, "midtrain": mid, "aft": "cheese",
                         "sweep_value": None, "estimate": r, "n": 400})
    effects = {e["arm"]: e for e in msm_effects(pd.DataFrame(rows))}
    assert set(effects) == {"msm_x", "msm_y"}
    assert effects["msm_x"]["effect"] == pytest.approx(0.3) and effects["msm_x"]["distinguishable"]
    assert effects["msm_y"]["reference"] == "aft_only" and not effects["msm_y"]["distinguishable"]
    d, low, high = difference_interval(0.5, 100, 0.5, 100)
    assert d == 0 and low < 0 < high and high - low < 0.3


def _evaluated_copy(project, tmp_path, monkeypatch):
    """A copy of the built project, entered, with every planned eval run; its params."""
    root = tmp_path / "copy"
    shutil.copytree(project, root, symlinks=True)
    monkeypatch.chdir(root)
    params = load_params("params.yaml", check_files=False)
    for arm, suite in planned_evals(params):
        evaluate_suite(params, arm, suite, progress=False)
    return params


@pytest.mark.slow
def test_an_eval_number_whose_checkpoint_changed_since_shows_stale(project, tmp_path, monkeypatch):
    params = _evaluated_copy(project, tmp_path, monkeypatch)
    build_catalog(params, progress=False)
    con = duckdb.connect()
    con.execute(Path("build/results/catalog.sql").read_text())
    joined = con.execute("SELECT e.arm, bool_or(e.stale), count(c.digest) FROM eval_summary e "
                         "LEFT JOIN checkpoints c ON c.digest = e.checkpoint_digest GROUP BY e.arm").fetchall()
    assert len(joined) == 5 and all(stale is False and n > 0 for _arm, stale, n in joined), joined
    # the base checkpoint is replaced (retrained) and its eval not rerun: visibly stale
    weights = next(Layout(Path("build")).base_model.glob("*.safetensors"))
    data = weights.read_bytes()
    weights.unlink()
    weights.write_bytes(data[:-8] + bytes(8))
    build_catalog(params, progress=False)
    con = duckdb.connect()
    con.execute(Path("build/results/catalog.sql").read_text())
    stale = dict(con.execute("SELECT arm, bool_or(stale) FROM eval_summary GROUP BY arm").fetchall())
    assert stale.pop("base") is True and len(stale) == 4 and not any(stale.values()), stale
    # by content the old number still joins the copies it was measured on, not the new base
    assert con.execute("SELECT count(*) FROM eval_summary e JOIN checkpoints c ON c.digest = e.checkpoint_digest "
                       "WHERE e.arm = 'base' AND c.stage = 'base'").fetchone() == (0,)


@pytest.mark.slow
def test_an_edited_spec_makes_the_evals_trained_from_it_stale_at_once(project, tmp_path, monkeypatch):
    """The catalog agrees with `msmbuild status` before any rebuild: the MSM arms' numbers
    are stale as soon as their corpus's spec changes; the base and AFT-only arms' are not."""
    from msmbuild.results.query import run_query
    from msmbuild.spec import parse_spec

    params = _evaluated_copy(project, tmp_path, monkeypatch)
    sections = Layout(Path("build")).sections("pro_america")
    sections.write_text(json.dumps(parse_spec("spec.md").to_json()))
    query = "SELECT arm, bool_or(coalesce(stale, false)) AS s FROM eval_summary GROUP BY arm ORDER BY arm"
    assert not any(run_query(params, query)["s"])
    Path("spec.md").write_text("# Spec\n\nBuy local, and say why.\n")
    stale = dict(run_query(params, query).itertuples(index=False))
    assert {arm for arm, s in stale.items() if s} == {a for a in stale if a.startswith("msm_aft")}, stale


@pytest.mark.slow
def test_a_pulled_eval_result_is_adopted_by_an_empty_store(project, tmp_path, monkeypatch):
    """An eval result DVC brought into build/evals, whose summary.json names this action and
    its files' digests, is the eval's result for a store that never ran it; an edited copy
    is not (the eval runs)."""
    from msmbuild.store import Store

    root = tmp_path / "copy"
    shutil.copytree(project, root, symlinks=True)
    monkeypatch.chdir(root)
    params = load_params("params.yaml", check_files=False)
    arm, suite = planned_evals(params)[0]
    first = evaluate_suite(params, arm, suite, progress=False)
    items = (first.directory / "items.parquet").read_bytes()
    empty = Store(tmp_path / "empty-store")
    adopted = evaluate_suite(params, arm, suite, store=empty, progress=False)
    assert adopted.hit and adopted.key == first.key
    record, _ = empty.get_action(adopted.key)
    assert record.meta["adopted"] is True
    assert (first.directory / "items.parquet").read_bytes() == items
    other = Store(tmp_path / "other-store")
    summary = json.loads((first.directory / "summary.json").read_text())
    summary["files"]["items.parquet"] = "0" * 32  # does not verify
    (first.directory / "summary.json").write_text(json.dumps(summary))
    assert not evaluate_suite(params, arm, suite, store=other, progress=False).hit


def test_report_formatting_helpers():
    from msmbuild.results.report import _cell, _num, plot_cost, same_for_every_value

    assert (_num(-0.001, sign=True), _num(-0.004), _num(0.12, sign=True)) == ("+0.00", "0.00", "+0.12")
    assert (_cell(None), _cell(float("nan")), _cell(True), _cell(0.25)) == ("—", "—", "yes", "0.250")
    rows = pd.DataFrame([{"experiment": "e", "arm": "a", "suite": "preference", "metric": "favoured_rate",
                          "condition": None, "value": v, "n": 12, "estimate": 1.0, "ci_low": 0.75, "ci_high": 1.0}
                         for v in ("x", "y", "z")])
    one = same_for_every_value(rows)
    assert len(one) == 1 and one.iloc[0]["value"] == "every value"
    rows.loc[1, "estimate"] = 0.5  # values differ: every row stays
    assert len(same_for_every_value(rows)) == 3
    free = pd.DataFrame([{"corpus": "c", "source": "corpus", "stage": "ideas", "cost_usd": 0.0}])
    assert plot_cost(free, Path("unused.png")).startswith("no paid calls")

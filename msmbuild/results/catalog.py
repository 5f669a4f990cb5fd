"""The results catalog: every table as parquet under ``build/results/``, DuckDB views on top.

Tables: documents, calls, corpora, shards, runs, checkpoints, eval_items, eval_summary,
contamination (the audit's per arm × eval item rows).
``catalog.sql`` holds one ``CREATE VIEW`` per table with paths relative to the project
root, so the plain DuckDB CLI sees the same names: ``duckdb -init build/results/catalog.sql``.
The documents and the documents step's calls are not copied here: those views read the
corpora's per-subdomain partitions in place (build/results/ holds empty tables with their
columns), so the catalog's rebuild does not grow with the documents.
Every file is written atomically and only when its bytes change.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from msmbuild.config import Params
from msmbuild.errors import ParamsError
from msmbuild.experiments import Arm, expand_arms
from msmbuild.fsutil import write_bytes_if_changed
from msmbuild.generate.partitions import read_ideas_index, read_index, verified_files
from msmbuild.layout import EVAL_ITEMS, EVAL_SUMMARY, Layout
from msmbuild.results.costs import build_started, mark_this_build
from msmbuild.results.lineage import Lineage
from msmbuild.tables import add_missing_columns, empty_frame, write_parquet

BUILD_STARTED_VARIABLE = "msmbuild_build_started"  # epoch seconds; see view_sql
TABLES = ("documents", "calls", "corpora", "shards", "runs", "checkpoints", "eval_items", "eval_summary",
          "contamination")


def _frame(rows: list[dict[str, Any]], table: str):
    """A DataFrame of rows; an empty one still carries the table's registered columns and types."""
    import pandas as pd

    if rows:
        # a registered column no row carries still exists (e.g. kind)
        return add_missing_columns(pd.DataFrame(rows), "catalog_calls" if table == "calls" else table)
    return empty_frame("catalog_calls" if table == "calls" else table)


def _union_parquet(files: list[tuple[Path, dict[str, Any]]], table: str):
    """Union of parquet files (columns matched by name), each with constant columns added."""
    import pandas as pd

    frames = []
    for path, extra in files:
        frame = pd.read_parquet(path)
        for col, val in extra.items():
            frame.insert(0, col, val)
        frames.append(frame)
    frames = [f for f in frames if len(f)]
    if not frames:
        return _frame([], table)
    return pd.concat(frames, ignore_index=True, sort=False)


def _arm_info(params: Params) -> dict[str, Arm]:
    """Arms by name; an experiment matrix that does not expand is reported, not fatal:
    it must not hide results already on disk (their rows then lack arm details)."""
    try:
        return {a.name: a for a in expand_arms(params)}
    except ParamsError as exc:
        print(f"catalog: experiments do not expand, eval rows lack arm details: {exc}", file=sys.stderr)
        return {}


def _eval_key(layout: Layout, arm: str, suite: str) -> str | None:
    ref = layout.ref(layout.eval_root(arm, suite))
    if ref.is_file():
        keys = json.loads(ref.read_text())["actions"]
        return keys[0] if keys else None
    return None


def _eval_dirs(layout: Layout) -> list[tuple[str, str, Path]]:
    return [(p.parent.parent.name, p.parent.name, p.parent)
            for p in layout.glob(layout.eval_summary("*", "*"))]


def _sweep(arm: Arm | None) -> tuple[str | None, float | None]:
    if arm is None or not arm.overrides:
        return None, None
    key, value = arm.overrides[0]
    try:
        return key, float(value)
    except (TypeError, ValueError):
        return key, None


def eval_tables(params: Params, lineage: Lineage | None = None,
                checkpoints: list[dict[str, Any]] | None = None):
    """(eval_items, eval_summary) from every build/evals/<arm>/<suite>/.

    Each row carries ``checkpoint_digest``, the content it was measured on, and ``stale``
    (msmbuild.results.lineage): an old number is never silently joined to new data.
    """
    layout = Layout.of(params)
    arms = _arm_info(params)
    lineage = lineage or Lineage(params)
    if checkpoints is None:
        checkpoints = _checkpoint_rows(params, lineage)
    checkpoint_stale = {row["checkpoint"]: row["stale"] for row in checkpoints}
    item_files, summary_rows = [], []
    for arm_name, suite, directory in _eval_dirs(layout):
        arm = arms.get(arm_name)
        summary = json.loads((directory / EVAL_SUMMARY).read_text(encoding="utf-8"))
        measured = (summary.get("checkpoint_identity") or {}).get("digest")
        common = {"arm": arm_name, "experiment": arm.experiment if arm else None, "suite": suite,
                  "eval_key": _eval_key(layout, arm_name, suite), "checkpoint": summary.get("checkpoint"),
                  "checkpoint_digest": measured, "stale": lineage.eval_stale(arm, measured, checkpoint_stale)}
        if (directory / EVAL_ITEMS).is_file():
            item_files.append((directory / EVAL_ITEMS, dict(reversed(list(common.items())))))
        sweep_key, sweep_value = _sweep(arm)
        for metric in summary.get("metrics", []):
            summary_rows.append({**common, "midtrain": arm.midtrain if arm else None,
                                 "aft": arm.aft if arm else None, "sweep_key": sweep_key,
                                 "sweep_value": sweep_value, **metric})
    return _union_parquet(item_files, "eval_items"), _frame(summary_rows, "eval_summary")


def corpus_tables(params: Params):
    """(calls, corpora): calls of the tree step, eval judges and AFT generation, and one row
    per corpus.

    The documents and the ideas and documents steps' calls are not copied: their catalog
    views read the corpora's partitions directly (``view_sql``), and the corpora row sums
    the two indexes, so a rebuild costs the partitions' count, not the documents'.
    """
    layout = Layout.of(params)
    call_files = [(p, {"source": "corpus"}) for p in layout.glob(layout.step_calls("*", "*"))]
    call_files += [(p, {"source": f"eval:{p.parent.parent.name}/{p.parent.name}"})
                   for p in layout.glob(layout.eval_calls("*", "*"))]
    generated = sorted(name for name, cfg in params.aft.items() if cfg.source == "generated")
    call_files += [(p, {"source": f"aft:{name}"}) for name in generated
                   if (p := layout.aft_calls(name)).is_file()]
    # Stored without the build's start time (outputs are byte-deterministic): the views
    # compute this_build and spent_usd at query time (view_sql, BUILD_STARTED_VARIABLE).
    calls = mark_this_build(_union_parquet(call_files, "calls"), None)
    for column in _frame([], "catalog_calls").columns:  # the views name every column
        if column not in calls.columns:
            calls[column] = None
    rows = []
    for name, corpus in params.corpora.items():
        parts = (read_index(layout, name) or {}).get("partitions", [])
        idea_parts = (read_ideas_index(layout, name) or {}).get("partitions", [])
        mine = calls[(calls["source"] == "corpus") & (calls["corpus"] == name)] if len(calls) else calls
        rows.append({"corpus": name, "spec": corpus.spec, "backend": corpus.backend,
                     "n_documents": sum(p["n_docs"] for p in parts),
                     "n_chars": sum(p["n_chars"] for p in parts),
                     "cost_usd": float(sum(p["kept_cost_usd"] for p in parts)),
                     "calls_cost_usd": float(mine["cost_usd"].fillna(0).sum() if len(mine) else 0.0)
                     + sum(p["calls_cost_usd"] for p in parts + idea_parts),
                     "spent_usd": None,
                     "offline": corpus.backend == "offline"})
    return calls, _frame(rows, "corpora")


def partition_files(params: Params, what: str) -> list[Path]:
    """Every corpus's partition files of one kind (``msmbuild.generate.partitions.indexed_files``):
    only what the indexes name, each verified against its index digest (a stat while
    unchanged since it was verified; an error naming a file that differs or is missing)."""
    layout = Layout.of(params)
    return [f for name in params.corpora for f in verified_files(layout, name, what)]


Source = Callable[[str, list[Path]], str]


def read_parquet_source(resolve: bool) -> Source:
    """The FROM target of a view over parquet files: DuckDB's read_parquet (for catalog.sql)."""
    def source(_name: str, files: list[Path]) -> str:
        quoted = ["'" + (f.resolve().as_posix() if resolve else f.as_posix()).replace("'", "''") + "'"
                  for f in files]
        if len(quoted) == 1:
            return f"read_parquet({quoted[0]})"
        return f"read_parquet([{', '.join(quoted)}], union_by_name = true)"
    return source


def view_sql(params: Params, resolve: bool = False, source: Source | None = None) -> dict[str, str]:
    """The SELECT behind each catalog view (paths relative to the project root, or absolute).

    documents and calls add the corpora's partition files that the indexes name (verified,
    ``partition_files``) to the table under build/results/ (``UNION ALL BY NAME``); the
    other views read their one file. ``source(name, files)`` renders what a view reads
    (default: read_parquet over the paths; ``msmbuild query`` passes registered datasets).
    """
    layout = Layout.of(params)
    source = source or read_parquet_source(resolve)
    sql = {t: f"SELECT * FROM {source(t, [layout.table(t)])}" for t in TABLES}
    documents = partition_files(params, "documents")
    if documents:
        sql["documents"] += f" UNION ALL BY NAME SELECT * FROM {source('documents_partitions', documents)}"
    # "this build": answered by the model since the build began (a session variable, so
    # that catalog.sql and the tables hold no timestamp; unset, every call not from the cache)
    this_build = ("NOT coalesce(cache_hit, false) AND coalesce(made_at, 0) >= "
                  f"coalesce(getvariable('{BUILD_STARTED_VARIABLE}'), 0)")
    sql["calls"] = f"SELECT * EXCLUDE (this_build), ({this_build}) AS this_build FROM ({sql['calls']})"
    calls = partition_files(params, "idea_calls") + partition_files(params, "document_calls")
    if calls:
        sql["calls"] += (f" UNION ALL BY NAME SELECT 'corpus' AS source, *, ({this_build}) AS this_build"
                         f" FROM {source('calls_partitions', calls)}")
    sql["corpora"] = ("SELECT * REPLACE (coalesce((SELECT sum(k.cost_usd) FROM calls k WHERE k.source = 'corpus' "
                      "AND k.corpus = c.corpus AND k.this_build), 0.0) AS spent_usd) "
                      f"FROM ({sql['corpora']}) c")
    return sql


def build_started_sql() -> str:
    """The statement that tells a connection when the latest build began (none without one)."""
    started = build_started()
    return "" if started is None else f"SET VARIABLE {BUILD_STARTED_VARIABLE} = {float(started)!r}::DOUBLE"


def shard_table(params: Params, lineage: Lineage | None = None):
    """One row per shard from build/shards/*/manifest.json; ``stale``: its documents changed since."""
    layout = Layout.of(params)
    lineage = lineage or Lineage(params)
    rows = []
    for manifest in layout.glob(layout.manifest("*")):
        data = json.loads(manifest.read_text(encoding="utf-8"))
        shards = data.get("shards", data) if isinstance(data, dict) else data
        fresh = lineage.shards(manifest.parent.name) if manifest.parent.name in params.corpora else None
        for shard in shards if isinstance(shards, list) else []:
            rows.append({"corpus": manifest.parent.name, **{k: v for k, v in shard.items()
                                                             if not isinstance(v, dict | list)},
                         "stale": fresh.stale.get(shard.get("name")) if fresh is not None else None})
    return _frame(rows, "shards")


def _checkpoint_rows(params: Params, lineage: Lineage | None = None) -> list[dict[str, Any]]:
    """One row per checkpoint of the experiment matrix, with its lineage columns and ``stale``."""
    layout = Layout.of(params)
    lineage = lineage or Lineage(params)
    seen: dict[str, dict[str, Any]] = {}

    def add(path: Path | None, stage: str, arm: Arm | None, corpus: str | None, aft: str | None,
            stale: Callable[[Path], bool | None]) -> None:
        if path is None or str(path) in seen:
            return
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
        seen[str(path)] = {"checkpoint": str(path), "stage": stage, "arm": arm.name if arm else None,
                           "experiment": arm.experiment if arm else None,
                           "base_model": arm.base_model if arm else None, "corpus": corpus, "aft": aft,
                           "exists": path.is_dir(), "bytes": sum(p.stat().st_size for p in files),
                           **lineage.columns(path), "stale": stale(path)}

    add(layout.base_model, "base", None, None, None, lambda _path: None)
    for arm in _arm_info(params).values():
        add(layout.arm_midtrain(arm), "midtrain", None, arm.midtrain, None,
            lambda path, arm=arm: lineage.midtrain_stale(path, str(arm.midtrain)))
        add(layout.arm_aft(arm), "aft", arm, arm.midtrain, arm.aft, lambda _path, arm=arm: lineage.aft_stale(arm))
    return list(seen.values())


def run_table(params: Params):
    """Training logs: every train_log.jsonl under build/models, one row per logged step."""
    rows = []
    layout = Layout.of(params)
    for log in layout.train_logs():
        rel = log.parent
        stage = rel.relative_to(layout.models_dir).parts[0]
        for line in log.read_text(encoding="utf-8").splitlines():
            if line.strip():
                entry = json.loads(line)
                rows.append({"checkpoint": str(rel), "stage": stage,
                             **{k: v for k, v in entry.items() if not isinstance(v, dict | list)}})
    return _frame(rows, "runs")


def contamination_table(params: Params):
    """The audit's rows (build/audit/contamination.parquet), empty before the first audit."""
    path = Layout.of(params).contamination
    return _union_parquet([(path, {})], "contamination") if path.is_file() else _frame([], "contamination")


def catalog_sql(params: Params) -> str:
    """CREATE VIEW statements over the parquet files, paths relative to the project root."""
    return "".join(f"CREATE OR REPLACE VIEW {t} AS {select};\n" for t, select in view_sql(params).items())


def dvc_outputs(params: Params, summary) -> None:
    """metrics.json (dvc metrics show) and plots/*.csv (dvc plots) from eval_summary + runs."""
    layout = Layout.of(params)
    metrics: dict[str, Any] = {}
    overall = summary[summary["domain"] == "all"] if len(summary) else summary
    for row in overall.to_dict("records"):
        if row["estimate"] is None or row["estimate"] != row["estimate"]:
            continue
        metrics.setdefault(row["arm"], {}).setdefault(row["suite"], {})[
            f"{row['metric']}:{row.get('role') or 'all'}:{row['value'] or row['condition'] or 'all'}"
        ] = round(float(row["estimate"]), 6)
    write_bytes_if_changed(layout.metrics, (json.dumps(metrics, indent=2, sort_keys=True) + "\n").encode())
    cols = ["arm", "experiment", "suite", "metric", "role", "value", "condition", "sweep_value", "estimate",
            "ci_low", "ci_high", "n"]
    table = overall[cols] if len(overall) else _frame([], "eval_summary")[cols]
    write_bytes_if_changed(layout.plot("eval_summary"), table.to_csv(index=False).encode())


def build_catalog(params: Params, progress: bool = True) -> dict[str, int]:
    """Rebuild every catalog table and catalog.sql; returns row counts per table."""
    layout = Layout.of(params)
    layout.results_dir.mkdir(parents=True, exist_ok=True)
    calls, corpora = corpus_tables(params)
    lineage = Lineage(params)
    checkpoints = _checkpoint_rows(params, lineage)
    items, summary = eval_tables(params, lineage, checkpoints)
    partitioned = {"documents": int(corpora["n_documents"].sum()) if len(corpora) else 0,
                   "calls": sum(p["n_calls"] for name in params.corpora
                                for p in (read_index(layout, name) or {}).get("partitions", []))}
    builders: dict[str, Callable[[], Any]] = {"documents": lambda: _frame([], "documents"),
                "calls": lambda: calls, "corpora": lambda: corpora,
                "shards": lambda: shard_table(params, lineage), "runs": lambda: run_table(params),
                "checkpoints": lambda: _frame(checkpoints, "checkpoints"),
                "eval_items": lambda: items, "eval_summary": lambda: summary,
                "contamination": lambda: contamination_table(params)}
    counts = {}
    for table in tqdm(TABLES, desc="catalog", unit="table", disable=not progress):
        frame = builders[table]()
        write_parquet(frame, layout.table(table))
        counts[table] = len(frame) + partitioned.get(table, 0)
        if table == "runs":
            loss_cols = [c for c in ("checkpoint", "stage", "step", "loss") if c in frame.columns]
            write_bytes_if_changed(layout.plot("loss"), frame[loss_cols].to_csv(index=False).encode())
    dvc_outputs(params, summary)
    write_bytes_if_changed(layout.catalog_sql, catalog_sql(params).encode())
    layout.catalog_stamp.touch()
    return counts

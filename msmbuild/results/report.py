"""``msmbuild report``: one HTML page with PNG charts drawn from the results catalog.

Sections: value generalization per experiment and domain (with intervals), agentic
misalignment per condition, data efficiency of swept experiments, training loss, document
lengths per corpus, cost. The page says which backends and base models produced it, and
carries a banner when documents came from the offline backend.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from tqdm import tqdm

from msmbuild.config import Params
from msmbuild.fsutil import write_bytes_if_changed
from msmbuild.layout import Layout

OFFLINE_BANNER = ("Documents in this build came from the offline backend: it is not a model, and its "
                  "documents are not training data of any value. Numbers below exercise the pipeline only.")


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    _figure().close(fig)
    write_bytes_if_changed(path, buf.getvalue())


def _err(frame: Any) -> list[list[float]]:
    lo = (frame["estimate"] - frame["ci_low"]).clip(lower=0).fillna(0)
    hi = (frame["ci_high"] - frame["estimate"]).clip(lower=0).fillna(0)
    return [lo.tolist(), hi.tolist()]


def plot_value_generalization(summary: Any, path: Path) -> bool:
    """Favoured-item rate per domain, one bar per arm, one panel per value."""
    pref = summary[(summary["suite"] == "preference") & (summary["metric"] == "favoured_rate")]
    if pref.empty:
        return False
    plt = _figure()
    values = sorted(pref["value"].dropna().unique())
    fig, axes = plt.subplots(len(values), 1, figsize=(11, 3.6 * len(values)), squeeze=False)
    for ax, value in zip(axes[:, 0], values, strict=True):
        sub = pref[pref["value"] == value]
        domains = sorted(sub["domain"].unique(), key=lambda d: (d == "all", d))
        arms = sorted(sub["arm"].unique())
        width = 0.8 / max(len(arms), 1)
        for k, arm in enumerate(arms):
            rows = sub[sub["arm"] == arm].set_index("domain").reindex(domains)
            xs = [i + k * width for i in range(len(domains))]
            ax.bar(xs, rows["estimate"].fillna(0), width, yerr=_err(rows), capsize=2, label=arm)
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(domains))], domains, rotation=30, ha="right")
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"chooses {value}-favoured item")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)
    return True


def plot_misalignment(summary: Any, path: Path) -> bool:
    """Harmful-action rate per arm and condition."""
    mis = summary[(summary["suite"] == "agentic_misalignment") & (summary["metric"] == "harmful_rate")]
    mis = mis[mis["condition"].notna() & (mis["condition"] != "all")]
    if mis.empty:
        return False
    plt = _figure()
    conditions = sorted(mis["condition"].unique())
    arms = sorted(mis["arm"].unique())
    fig, ax = plt.subplots(figsize=(11, 4))
    width = 0.8 / len(arms)
    for k, arm in enumerate(arms):
        rows = mis[mis["arm"] == arm].set_index("condition").reindex(conditions)
        ax.bar([i + k * width for i in range(len(conditions))], rows["estimate"].fillna(0), width,
               yerr=_err(rows), capsize=2, label=arm)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(conditions))], conditions, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("harmful-action rate")
    ax.legend(fontsize=7)
    _save(fig, path)
    return True


def misalignment_with_patterns(summary: Any) -> Any:
    """Per arm: the overall harmful rate and every reasoning-pattern rate, one row each."""
    import pandas as pd

    if summary.empty:
        return summary
    mis = summary[(summary["suite"] == "agentic_misalignment") & (summary["metric"] == "harmful_rate")
                  & (summary["domain"] == "all") & (summary["condition"] == "all")].copy()
    mis["value"] = "harmful_rate"
    pat = summary[(summary["suite"] == "reasoning_patterns") & (summary["metric"] == "pattern_rate")
                  & (summary["domain"] == "all")]
    both = pd.concat([mis, pat], ignore_index=True)
    if both.empty:
        return both
    both["shown"] = [("not judged" if e is None or e != e else f"{e:.2f} [{lo:.2f}, {hi:.2f}]")
                     for e, lo, hi in zip(both["estimate"], both["ci_low"], both["ci_high"], strict=True)]
    return both.sort_values(["arm", "suite", "value"])


def plot_reasoning_patterns(summary: Any, path: Path) -> bool:
    """Harmful rate beside each reasoning-pattern rate, per arm (judged patterns only)."""
    rows = misalignment_with_patterns(summary)
    if rows.empty or not (rows["suite"] == "reasoning_patterns").any():
        return False
    rows = rows[rows["estimate"].notna()]
    if rows.empty:
        return False
    plt = _figure()
    labels = list(dict.fromkeys(rows["value"]))
    arms = sorted(rows["arm"].unique())
    fig, ax = plt.subplots(figsize=(11, 4))
    width = 0.8 / len(arms)
    for k, arm in enumerate(arms):
        sub = rows[rows["arm"] == arm].set_index("value").reindex(labels)
        ax.bar([i + k * width for i in range(len(labels))], sub["estimate"].fillna(0), width,
               yerr=_err(sub), capsize=2, label=arm)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))], labels, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of samples")
    ax.legend(fontsize=7)
    _save(fig, path)
    return True


def plot_data_efficiency(summary: Any, path: Path) -> bool:
    """Overall metric vs the swept parameter, one line per experiment (MSM or not)."""
    swept = summary[summary["sweep_value"].notna() & (summary["domain"] == "all")]
    swept = swept[swept["metric"].isin(["favoured_rate", "judge_score", "harmful_rate"])]
    if swept.empty:
        return False
    plt = _figure()
    panels = sorted({(m, v or "") for m, v in zip(swept["metric"], swept["value"], strict=True)})
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (metric, value) in zip(axes[0], panels, strict=True):
        sub = swept[(swept["metric"] == metric) & (swept["value"].fillna("") == value)]
        for exp, rows in sub.groupby("experiment"):
            rows = rows.sort_values("sweep_value")
            msm = rows["midtrain"].notna().any()
            ax.errorbar(rows["sweep_value"], rows["estimate"], yerr=_err(rows), marker="o", capsize=2,
                        label=f"{exp} ({'MSM + AFT' if msm else 'AFT only'})", ls="-" if msm else "--")
        ax.set_xlabel(str(sub["sweep_key"].iloc[0]))
        ax.set_ylabel(f"{metric} {value}".strip())
        ax.legend(fontsize=7)
    _save(fig, path)
    return True


def plot_loss(runs: Any, path: Path) -> bool:
    """Training loss per step, one line per checkpoint."""
    if runs.empty or "loss" not in runs.columns or "step" not in runs.columns:
        return False
    plt = _figure()
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for name, rows in runs.dropna(subset=["loss"]).groupby("checkpoint"):
        ax.plot(rows["step"], rows["loss"], label=str(name))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7)
    _save(fig, path)
    return True


def plot_doc_lengths(documents: Any, path: Path) -> bool:
    """Histogram of document length in characters, per corpus."""
    if documents.empty:
        return False
    plt = _figure()
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for corpus, rows in documents.groupby("corpus"):
        ax.hist(rows["n_chars"], bins=30, alpha=0.5, label=str(corpus))
    ax.set_xlabel("characters")
    ax.set_ylabel("documents")
    ax.legend(fontsize=7)
    _save(fig, path)
    return True


def plot_cost(calls: Any, path: Path) -> bool:
    """USD by corpus/source and stage."""
    if calls.empty or "cost_usd" not in calls.columns:
        return False
    frame = calls.assign(where=calls["corpus"].fillna(calls["source"]))
    cost = frame.groupby(["where", "stage"])["cost_usd"].sum().unstack(fill_value=0)
    plt = _figure()
    fig, ax = plt.subplots(figsize=(9, 3.6))
    cost.plot.bar(stacked=True, ax=ax)
    ax.set_ylabel("USD")
    ax.set_xlabel("")
    _save(fig, path)
    return True


def _table(frame: Any, columns: list[str]) -> str:
    cols = [c for c in columns if c in frame.columns]
    if frame.empty:
        return "<p>no rows</p>"
    return frame[cols].to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="—", border=0)


def _provenance(params: Params, documents: Any) -> tuple[str, bool]:
    backends = sorted({c.backend for c in params.corpora.values()})
    if not documents.empty and "backend" in documents.columns:
        backends = sorted(set(backends) | set(documents["backend"].dropna().unique()))
    offline = "offline" in backends or (not documents.empty and "produced_by_model" in documents.columns
                                         and not documents["produced_by_model"].fillna(True).all())
    bases = sorted({e.base_model for e in params.experiments.values()}) or ["(no experiments)"]
    judge = params.evals.qa.judge_backend
    text = (f"Documents generated by backend(s): <b>{html.escape(', '.join(backends) or 'none')}</b>. "
            f"Base model(s): <b>{html.escape(', '.join(bases))}</b>. "
            f"QA judge backend: <b>{html.escape(judge)}</b>"
            + (" (answers not judged)." if judge == "offline" else "."))
    return text, offline


def cost_line(params: Params, calls: Any, corpora: Any) -> str:
    """The report's cost totals, each named by its definition (msmbuild.results.costs)."""
    from msmbuild.config import open_store, store_path
    from msmbuild.results.costs import cost_totals

    ever = open_store(params).stats()["cost_usd"] if Path(store_path(params)).is_dir() else None
    t = cost_totals(calls, corpora, ever)
    ever_text = "no store" if t["all_calls_ever_usd"] is None else f"${t['all_calls_ever_usd']:.4f}"
    return (f"Model-call cost: kept documents ${t['kept_documents_usd']:.4f}; "
            f"all calls behind these results ${t['current_calls_usd']:.4f}; "
            f"spent in the build that made this report ${t['this_build_usd']:.4f}; "
            f"all calls ever recorded in the store {ever_text} (definitions: docs/query.md).")


def build_report(params: Params, progress: bool = True) -> Path:
    """Render build/report/index.html and its PNGs; returns the HTML path."""
    from msmbuild.results.query import connect

    layout = Layout.of(params)
    out = layout.report_dir
    out.mkdir(parents=True, exist_ok=True)
    con = connect(params)
    try:
        frames = {t: con.execute(f"SELECT * FROM {t}").df() for t in
                  ("eval_summary", "runs", "documents", "calls", "corpora")}
        frames["documents"] = con.execute(
            "SELECT corpus, n_chars, backend, produced_by_model FROM documents").df()
    finally:
        con.close()
    summary = frames["eval_summary"]
    charts = [
        ("Value generalization (forced choice, per experiment and domain, 95% Wilson intervals)",
         "value_generalization.png", lambda p: plot_value_generalization(summary, p)),
        ("Agentic misalignment (harmful-action rate per condition)", "misalignment.png",
         lambda p: plot_misalignment(summary, p)),
        ("Misalignment and reasoning patterns (share of samples per arm, 95% Wilson intervals)",
         "reasoning_patterns.png", lambda p: plot_reasoning_patterns(summary, p)),
        ("Data efficiency (metric vs swept AFT amount, with and without MSM)", "data_efficiency.png",
         lambda p: plot_data_efficiency(summary, p)),
        ("Training loss", "loss.png", lambda p: plot_loss(frames["runs"], p)),
        ("Document length per corpus", "doc_lengths.png", lambda p: plot_doc_lengths(frames["documents"], p)),
        ("Cost of the calls behind these results, by corpus and stage", "cost.png", lambda p: plot_cost(frames["calls"], p)),
    ]
    provenance, offline = _provenance(params, frames["documents"])
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>msmbuild report</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
             ".banner{background:#fde2e1;border:2px solid #c0392b;padding:8px;font-weight:bold}"
             "table{border-collapse:collapse;font-size:12px}td,th{padding:2px 6px;border-bottom:1px solid #ddd}"
             "</style></head><body><h1>msmbuild report</h1>"]
    if offline:
        parts.append(f"<div class='banner' id='offline-banner'>{html.escape(OFFLINE_BANNER)}</div>")
    parts.append(f"<p id='provenance'>{provenance}</p>")
    for title, name, draw in tqdm(charts, desc="report", unit="chart", disable=not progress):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if draw(out / name):
            parts.append(f"<img src='{name}' alt='{html.escape(title)}'>")
        else:
            (out / name).unlink(missing_ok=True)
            parts.append("<p class='empty'>no data yet</p>")
    beside = misalignment_with_patterns(summary)
    if not beside.empty:
        parts.append("<h2 id='patterns'>Harmful rate and reasoning patterns per arm</h2>")
        parts.append(_table(beside, ["arm", "suite", "value", "kind", "n", "shown", "note"]))
    overall = summary[summary["domain"] == "all"] if not summary.empty else summary
    parts.append("<h2>Eval summary (all domains)</h2>")
    parts.append(_table(overall, ["experiment", "arm", "suite", "metric", "value", "condition", "n",
                                  "estimate", "ci_low", "ci_high", "note"]))
    parts.append("<h2>Corpora</h2>")
    parts.append(_table(frames["corpora"], ["corpus", "spec", "backend", "n_documents", "n_chars", "cost_usd"]))
    parts.append(f"<p id='cost'>{html.escape(cost_line(params, frames['calls'], frames['corpora']))}</p>")
    parts.append("</body></html>\n")
    index = layout.report_index
    write_bytes_if_changed(index, "\n".join(parts).encode("utf-8"))
    return index

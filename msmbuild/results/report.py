"""``msmbuild report``: one HTML page with PNG charts drawn from the results catalog.

Each figure answers one question. Sections: what this build shows (plain sentences), the
contamination audit, held-out domains (base / AFT-only / MSM arms, the MSM-minus-AFT-only
effect, the values × domain matrix, data efficiency), in distribution, agentic
misalignment, training and data, and per-role tables (held-out, in-distribution and recall
are never pooled). The page says which backends and base models produced it, and carries
a banner naming the corpora whose documents came from the offline backend, and one naming
the arms with stale numbers (msmbuild.results.lineage).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from tqdm import tqdm

from msmbuild.config import Params
from msmbuild.fsutil import write_bytes_if_changed
from msmbuild.layout import Layout
from msmbuild.results.analysis import ALL, msm_effects, preference_rows, unswept

OFFLINE_BANNER = ("Documents in this build came from the offline backend: it is not a model, and its "
                  "documents are not training data of any value. Numbers below exercise the pipeline only.")


FIGURES_INDEX = "figures.json"  # {figure file: drawn} beside index.html

STALE_BANNER = ("Some numbers below are stale: they were measured on checkpoints that the current data "
                "would not give (documents, shards or AFT data changed, or the checkpoint was retrained, since). "
                "Train and evaluate again before reading them; the stale column marks them.")




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


def _short(name: Any) -> str:
    """A checkpoint path's last component (its arm, tag or 'base')."""
    return Path(str(name)).name


def plot_held_out_arms(summary: Any, path: Path) -> bool:
    """Held-out favoured rate per value: base, AFT-only and each MSM arm, with intervals.

    Answers: on domains no training input mentions, how often does each arm pick the item
    a value favours? One group per value; an MSM arm is drawn in the group of its own value.
    """
    rows = unswept(preference_rows(summary, "held_out"))
    if rows.empty:
        return False
    values = sorted(rows["value"].dropna().unique())
    groups = []
    for value in values:
        sub = rows[rows["value"] == value]
        bars = [r for r in sub.itertuples() if r.arm_kind in ("base", "aft_only")]
        bars += [r for r in sub.itertuples() if r.arm_kind in ("msm", "midtrain_only") and r.midtrain == value]
        if any(r.arm_kind in ("msm", "midtrain_only") for r in bars):
            groups.append((value, bars))
    if not groups:
        return False
    plt = _figure()
    fig, ax = plt.subplots(figsize=(max(6, 2.4 * len(groups)), 3.8))
    colours = {"base": "#999999", "aft_only": "#4c72b0", "msm": "#dd8452", "midtrain_only": "#c9a27e"}
    seen: set[str] = set()
    for g, (_value, bars) in enumerate(groups):
        width = 0.8 / len(bars)
        for k, r in enumerate(bars):
            label = {"base": "base", "aft_only": "AFT only", "msm": "MSM + AFT",
                     "midtrain_only": "MSM only"}[r.arm_kind]
            ax.bar(g - 0.4 + (k + 0.5) * width, r.estimate, width * 0.9, color=colours[r.arm_kind],
                   yerr=[[max(0, r.estimate - r.ci_low)], [max(0, r.ci_high - r.estimate)]], capsize=3,
                   label=None if label in seen else label)
            seen.add(label)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(groups)), [v for v, _ in groups])
    ax.set_ylim(0, 1)
    ax.set_ylabel("chooses the value's item\n(held-out domains)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)
    return True


def plot_msm_effect(effects: list[dict[str, Any]], path: Path) -> bool:
    """MSM minus AFT-only on held-out domains, per value, with Newcombe intervals.

    Answers: does midtraining on a value's spec change held-out behaviour beyond what the
    identical AFT data does alone?
    """
    if not effects:
        return False
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(effects) + 1.0))
    ys = list(range(len(effects)))
    ax.errorbar([e["effect"] for e in effects], ys,
                xerr=[[e["effect"] - e["ci_low"] for e in effects], [e["ci_high"] - e["effect"] for e in effects]],
                fmt="o", capsize=3, color="#dd8452")
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(ys, [f"{e['arm']} ({e['value']})" for e in effects])
    # symmetric about 0 and just wide enough for every interval (a difference lies in [-1, 1])
    reach = max([abs(e[k]) for e in effects for k in ("ci_low", "ci_high", "effect")] + [0.05])
    ax.set_xlim(-min(1.0, reach * 1.15), min(1.0, reach * 1.15))
    ax.set_ylim(-0.6, len(effects) - 0.4)
    ax.set_xlabel("MSM + AFT minus AFT only: held-out favoured rate")
    _save(fig, path)
    return True


def plot_values_matrix(summary: Any, path: Path) -> bool:
    """Favoured rate of each MSM arm on its own value, per held-out domain (the paper's matrix)."""
    rows = unswept(preference_rows(summary, "held_out", domain=None))
    rows = rows[(rows["arm_kind"] == "msm") & (rows["value"] == rows["midtrain"]) & (rows["domain"] != ALL)]
    if rows.empty:
        return False
    table = rows.pivot_table(index="arm", columns="domain", values="estimate", aggfunc="first")
    plt = _figure()
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(table.columns), 0.9 + 0.5 * len(table.index)))
    image = ax.imshow(table.to_numpy(dtype=float), vmin=0, vmax=1, cmap="RdBu", aspect="auto")
    ax.set_xticks(range(len(table.columns)), list(table.columns), rotation=40, ha="right")
    ax.set_yticks(range(len(table.index)), list(table.index))
    for i in range(len(table.index)):
        for j in range(len(table.columns)):
            v = table.iat[i, j]
            if v == v:
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label="chooses own value's item")
    _save(fig, path)
    return True


def _aft_answer_rows(summary: Any) -> Any:
    """Unswept in-distribution rows of one value (every value favours the AFT answer there)."""
    rows = unswept(preference_rows(summary, "in_distribution"))
    return rows if rows.empty else rows[rows["value"] == sorted(rows["value"].dropna().unique())[0]]


def plot_in_distribution(summary: Any, path: Path) -> bool:
    """Did AFT take? The rate of giving the AFT answer on the AFT's own cheese pairs, per arm."""
    rows = _aft_answer_rows(summary).sort_values("arm")
    if rows.empty:
        return False
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    ys = list(range(len(rows)))
    ax.barh(ys, rows["estimate"], xerr=_err(rows), capsize=3, color="#4c72b0")
    ax.set_yticks(ys, list(rows["arm"]))
    ax.axvline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlim(0, 1)
    ax.set_xlabel("gives the AFT answer (in-distribution cheese pairs)")
    _save(fig, path)
    return True


def _grouped_bars(rows: Any, by: str, labels: list[str], ylabel: str, path: Path) -> None:
    """One bar per arm in each ``by`` group, with intervals."""
    plt = _figure()
    arms = sorted(rows["arm"].unique())
    fig, ax = plt.subplots(figsize=(11, 4))
    width = 0.8 / len(arms)
    for k, arm in enumerate(arms):
        sub = rows[rows["arm"] == arm].set_index(by).reindex(labels)
        ax.bar([i + k * width for i in range(len(labels))], sub["estimate"].fillna(0), width,
               yerr=_err(sub), capsize=2, label=arm)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))], labels, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_misalignment(summary: Any, path: Path) -> bool:
    """Harmful-action rate per arm and condition."""
    mis = summary[(summary["suite"] == "agentic_misalignment") & (summary["metric"] == "harmful_rate")]
    mis = mis[mis["condition"].notna() & (mis["condition"] != "all")]
    if mis.empty:
        return False
    _grouped_bars(mis, "condition", sorted(mis["condition"].unique()), "harmful-action rate", path)
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
    _grouped_bars(rows, "value", list(dict.fromkeys(rows["value"])), "share of samples", path)
    return True


def data_efficiency_rows(summary: Any, runs: Any) -> Any:
    """Held-out favoured rate vs AFT amount per swept experiment, with its full-data point.

    The full-data point is the unswept experiment with the same base model, midtraining
    corpus and AFT dataset (fraction 1.0). ``aft_tokens`` sums the loss tokens the arm's AFT
    run trained on (its train_log), so arms can be compared at equal AFT compute.
    """
    import pandas as pd

    rows = preference_rows(summary, "held_out")
    swept = rows[rows["sweep_value"].notna() & (rows["sweep_key"].fillna("").str.endswith("fraction"))]
    # One question: the value of the swept MSM corpora (AFT-only arms are drawn on it too).
    values = {m for m in swept["midtrain"].dropna().unique()} & set(swept["value"].dropna().unique())
    swept = swept[swept["value"].isin(values)]
    if swept.empty:
        return swept
    full = rows[rows["sweep_value"].isna()]
    parts = []
    for exp, sub in swept.groupby("experiment"):
        first = sub.iloc[0]
        mid = first["midtrain"] if isinstance(first["midtrain"], str) else ""
        same = full[(full["aft"] == first["aft"]) & (full["value"].isin(sub["value"]))
                    & (full["midtrain"].fillna("") == mid)]
        same = same.assign(sweep_value=1.0, experiment=exp)
        parts += [sub, same]
    out = pd.concat(parts, ignore_index=True)
    tokens = {}
    if not runs.empty and "tokens" in runs.columns:
        aft_runs = runs[runs["stage"] == "aft"]
        tokens = {_short(c): float(g["tokens"].sum()) for c, g in aft_runs.groupby("checkpoint")}
    out["aft_tokens"] = [tokens.get(a) for a in out["arm"]]
    return out


def plot_data_efficiency(rows: Any, path: Path) -> bool:
    """Held-out favoured rate vs AFT fraction and vs AFT tokens, MSM + AFT against AFT only."""
    if rows.empty:
        return False
    plt = _figure()
    has_tokens = rows["aft_tokens"].notna().any()
    fig, axes = plt.subplots(1, 2 if has_tokens else 1, figsize=(11 if has_tokens else 6, 3.8), squeeze=False)
    x_axes = [("sweep_value", "fraction of the AFT data")] + ([("aft_tokens", "AFT tokens trained on")] if has_tokens else [])
    for ax, (col, label) in zip(axes[0], x_axes, strict=True):
        for (_exp, value), sub in rows.groupby(["experiment", "value"]):
            sub = sub.dropna(subset=[col]).sort_values(col)
            msm = sub["midtrain"].notna().any()
            ax.errorbar(sub[col], sub["estimate"], yerr=_err(sub), marker="o", capsize=2,
                        ls="-" if msm else "--", label=f"{'MSM + AFT' if msm else 'AFT only'}: {value}")
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_ylim(0, 1)
        ax.set_xlabel(label)
        ax.set_ylabel("chooses the value's item (held-out)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)
    return True


def plot_misalignment_efficiency(rows: Any, path: Path) -> bool:
    """Figure 5: overall harmful rate vs AFT tokens (or fraction), MSM + AFT against AFT only."""
    if rows.empty:
        return False
    plt = _figure()
    x = "aft_tokens" if rows["aft_tokens"].notna().all() else "sweep_value"
    fig, ax = plt.subplots(figsize=(7, 4))
    for (base, _exp), sub in rows.groupby(["base_model", "experiment"]):
        sub = sub.dropna(subset=[x]).sort_values(x)
        msm = bool(sub["msm"].any())
        ax.errorbar(sub[x], sub["estimate"], yerr=_err(sub), marker="o", capsize=2, ls="-" if msm else "--",
                    label=f"{'MSM + AFT' if msm else 'AFT only'}: {sub['aft'].iloc[0]} ({_short(base)})")
    ax.set_xscale("log")
    ax.set_ylim(0, 1)
    ax.set_xlabel("AFT tokens trained on" if x == "aft_tokens" else "fraction of the AFT data")
    ax.set_ylabel("harmful-action rate (all conditions)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)
    return True


def plot_loss(runs: Any, path: Path) -> bool:
    """Training loss per step: midtraining and AFT in separate panels, one line per run."""
    if runs.empty or "loss" not in runs.columns or "step" not in runs.columns:
        return False
    stages = [s for s in ("midtrain", "aft") if (runs["stage"] == s).any()]
    if not stages:
        return False
    plt = _figure()
    fig, axes = plt.subplots(1, len(stages), figsize=(5.5 * len(stages), 3.6), squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=True):
        sub = runs[(runs["stage"] == stage)].dropna(subset=["loss"])
        for name, rows in sub.groupby("checkpoint"):
            ax.plot(rows["step"], rows["loss"], label=_short(name))
        ax.set_title({"midtrain": "midtraining", "aft": "AFT"}[stage])
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


def plot_cost(calls: Any, path: Path) -> bool | str:
    """USD by corpus/source and stage; a sentence instead when no call was paid for."""
    if calls.empty or "cost_usd" not in calls.columns:
        return False
    if not (calls["cost_usd"].fillna(0) > 0).any():
        return "no paid calls: every call behind these results cost $0 (offline backend or free)"
    frame = calls.assign(where=calls["corpus"].fillna(calls["source"]))
    cost = frame.groupby(["where", "stage"])["cost_usd"].sum().unstack(fill_value=0)
    plt = _figure()
    fig, ax = plt.subplots(figsize=(9, 3.6))
    cost.plot.bar(stacked=True, ax=ax)
    ax.set_ylabel("USD")
    ax.set_xlabel("")
    _save(fig, path)
    return True


def _cell(value: Any) -> str:
    """One table cell: a dash for a missing value (never Python's None), floats to 3 places."""
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    if isinstance(value, bool) or type(value).__name__ in ("bool", "bool_"):  # numpy's too
        return "yes" if value else "no"
    if isinstance(value, float):
        return _num(value, 3)
    return str(value)


def _num(value: float, places: int = 2, sign: bool = False) -> str:
    """A number as text, never "-0.00" (a value that rounds to zero has no sign)."""
    if round(value, places) == 0:
        value = 0.0
    return f"{value:+.{places}f}" if sign else f"{value:.{places}f}"


def _table(frame: Any, columns: list[str]) -> str:
    cols = [c for c in columns if c in frame.columns]
    if frame.empty:
        return "<p>no rows</p>"
    shown = frame[cols].astype(object).apply(lambda col: col.map(_cell))
    return shown.to_html(index=False, border=0)


def offline_corpora(documents: Any) -> list[str]:
    """Corpora whose built documents came from the offline backend (what the banner names).

    Decided from the documents themselves, not from params.yaml: a corpus configured as
    offline but not built, or built by a model, puts no banner on the page.
    """
    if documents.empty or "corpus" not in documents.columns:
        return []
    offline = documents["backend"].fillna("") == "offline" if "backend" in documents.columns else False
    if "produced_by_model" in documents.columns:
        offline = offline | (documents["produced_by_model"].fillna(True) == False)  # noqa: E712
    return sorted(documents.loc[offline, "corpus"].dropna().unique()) if offline is not False else []


def stale_arms(summary: Any) -> list[str]:
    """Arms with an eval number measured on a checkpoint that is not the current build's
    (retrained since, or trained on documents or shards the build no longer holds)."""
    if summary.empty or "stale" not in summary.columns:
        return []
    return sorted(summary.loc[summary["stale"].fillna(False).astype(bool), "arm"].dropna().unique())


def _provenance(params: Params, documents: Any) -> str:
    built = sorted(documents["backend"].dropna().unique()) if "backend" in documents.columns else []
    bases = sorted({e.base_model for e in params.experiments.values() if e.enabled}) or ["(no experiments)"]
    judge = params.evals.qa.judge_backend
    return (f"Documents generated by backend(s): <b>{html.escape(', '.join(built) or 'none built')}</b>. "
            f"Base model(s): <b>{html.escape(', '.join(bases))}</b>. "
            f"QA judge backend: <b>{html.escape(judge)}</b>"
            + (" (answers not judged)." if judge == "offline" else "."))


def _findings(summary: Any, effects: list[dict[str, Any]], audit: Any, offline: list[str],
              tiny: bool) -> list[str]:
    """Plain sentences on what this build shows, whatever the numbers are."""
    out = []
    if effects and (offline or tiny):
        out.append("Caveat: " + " and ".join(
            (["documents came from the offline backend (recombined spec text)"] if offline else [])
            + (["the base model is the tiny CPU model"] if tiny else []))
            + ". A held-out difference here can come from word associations with the spec's text "
              "(price, origin or plainness words in the items); it is not the paper's result, which "
              "needs model-written documents and a real base model.")
    held = preference_rows(summary, "held_out")
    if held.empty:
        out.append("No held-out preference results yet.")
    for e in effects:
        verdict = ("distinguishable from zero" if e["distinguishable"]
                   else "not distinguishable from zero: this build does not show that midtraining on "
                        "this value changes held-out behaviour")
        out.append(f"Held-out (generalization, the paper's measure): {e['arm']} chooses the "
                   f"{e['value']} item at {_num(e['msm_rate'])} vs {_num(e['aft_only_rate'])} for "
                   f"{e['reference']} (AFT only); difference {_num(e['effect'], sign=True)} "
                   f"[{_num(e['ci_low'], sign=True)}, {_num(e['ci_high'], sign=True)}], {verdict}.")
    ind = _aft_answer_rows(summary)
    if not ind.empty:
        base = ind[ind["arm_kind"] == "base"]["estimate"]
        trained = ind[ind["arm_kind"].isin(["aft_only", "msm"])]["estimate"]
        if len(base) and len(trained):
            low, high = _num(float(trained.min())), _num(float(trained.max()))
            out.append(f"In distribution (did AFT take?): base gives the AFT answer on "
                       f"{_num(float(base.iloc[0]))} of the cheese pairs, AFT-trained arms on "
                       + (f"{low}." if low == high else f"{low}–{high}."))
    rec = unswept(preference_rows(summary, "recall"))
    rec = rec[(rec["arm_kind"] == "msm") & (rec["value"] == rec["midtrain"])]
    for r in rec.itertuples():
        out.append(f"Recall (plumbing check, not generalization): {r.arm} picks its own spec's reason "
                   f"on {_num(r.estimate)} of the reason pairs (n={int(r.n)}).")
    if audit is not None and not audit.empty:
        held_sets = audit[audit["role"] == "held_out"]
        failed = held_sets[held_sets["passed"] == False]  # noqa: E712
        out.append("Contamination audit: " + (
            f"every held_out set passed for all {held_sets['arm'].nunique()} audited arm(s)."
            if failed.empty else
            f"held_out sets FAILED for {', '.join(sorted(failed['arm'].unique()))} "
            "(their held-out numbers measure recall, not generalization)."))
    else:
        out.append("Contamination audit: not run for this build (no build/audit/summary.json); "
                   "held-out numbers are unaudited.")
    return out


# Report sections that show one eval suite alone, by anchor.
SECTION_SUITES = {"misalignment": "agentic_misalignment"}


def disabled_suites(params: Params) -> dict[str, str]:
    """Suites no enabled experiment runs, each with the reason in words."""
    running = {s for e in params.experiments.values() if e.enabled for s in e.evals}
    out = {}
    for suite in set(SECTION_SUITES.values()) - running:
        listed = sorted(name for name, e in params.experiments.items() if suite in e.evals)
        out[suite] = (f"experiment(s) {', '.join(listed)} run {suite} but are off (enabled: false in params.yaml)"
                      if listed else f"no experiment in params.yaml lists {suite} in its evals")
    return out


def same_for_every_value(rows: Any) -> Any:
    """One row where every value's row has the same numbers (in-distribution pairs all favour
    the AFT answer, so each value repeats one rate): its value reads "every value"."""
    if rows.empty or "value" not in rows.columns:
        return rows
    keys = [c for c in ("experiment", "arm", "suite", "metric", "condition") if c in rows.columns]
    numbers = [c for c in ("n", "estimate", "ci_low", "ci_high") if c in rows.columns]
    out = []
    for _, group in rows.groupby(keys, dropna=False, sort=False):
        if group["value"].nunique() > 1 and len(group[numbers].drop_duplicates()) == 1:
            out.append(group.iloc[[0]].assign(value="every value"))
        else:
            out.append(group)
    import pandas as pd

    return pd.concat(out) if out else rows


def _audit_summary(params: Params) -> tuple[Any, list[str]]:
    import json

    import pandas as pd

    path = Layout.of(params).audit_summary
    if not path.is_file():
        return None, []
    doc = json.loads(path.read_text(encoding="utf-8"))
    return pd.DataFrame(doc.get("sets", [])), list(doc.get("measures", []))


def cost_line(params: Params, calls: Any, corpora: Any) -> str:
    """The report's cost totals, each named by its definition (msmbuild.results.costs).

    Only the totals the build's outputs determine: what one build or one store spent
    (``this_build``, ``msmbuild store stats``) differs between teammates with the same
    outputs, and the report is an output DVC records (docs/decisions.md).
    """
    from msmbuild.results.costs import cost_totals

    t = cost_totals(calls, corpora)
    return (f"Model-call cost: kept documents ${t['kept_documents_usd']:.4f}; "
            f"all calls behind these results ${t['current_calls_usd']:.4f} (definitions, and what this "
            "build and the store spent: docs/query.md).")


def build_report(params: Params, progress: bool = True) -> Path:
    """Render build/report/index.html and its PNGs; returns the HTML path."""
    from msmbuild.results.query import connect

    layout = Layout.of(params)
    out = layout.report_dir
    out.mkdir(parents=True, exist_ok=True)
    con = connect(params)
    try:
        frames = {t: con.execute(f"SELECT * FROM {t}").df() for t in
                  ("eval_summary", "runs", "calls", "corpora")}
        frames["documents"] = con.execute(
            "SELECT corpus, n_chars, backend, produced_by_model FROM documents").df()
    finally:
        con.close()
    summary = frames["eval_summary"]
    effects = msm_effects(summary)
    audit, measures = _audit_summary(params)
    efficiency = data_efficiency_rows(summary, frames["runs"])
    from msmbuild.experiments import expand_arms
    from msmbuild.results.efficiency import misalignment_efficiency_rows, misalignment_folds

    mis_efficiency = misalignment_efficiency_rows(summary, frames["runs"],
                                                  {a.name: a.base_model for a in expand_arms(params)})
    folds = misalignment_folds(mis_efficiency)
    sections = [
        ("held-out", "Held-out domains: generalization (the paper's measure)", [
            ("On held-out domains, how often does each arm choose its value's item? "
             "(base, AFT only, MSM + AFT; 95% Wilson intervals)", "held_out_arms.png",
             lambda p: plot_held_out_arms(summary, p)),
            ("How much does MSM change held-out behaviour beyond identical AFT alone? "
             "(MSM + AFT minus AFT only, 95% Newcombe intervals)", "msm_effect.png",
             lambda p: plot_msm_effect(effects, p)),
            ("Values × held-out domain: favoured rate of each MSM arm on its own value",
             "values_matrix.png", lambda p: plot_values_matrix(summary, p)),
            ("Data efficiency: held-out rate vs AFT amount (fraction and tokens), full-data point included",
             "data_efficiency.png", lambda p: plot_data_efficiency(efficiency, p)),
        ]),
        ("in-distribution", "In distribution: did AFT take?", [
            ("How often does each arm give the AFT answer on the AFT's own cheese pairs?",
             "in_distribution.png", lambda p: plot_in_distribution(summary, p)),
        ]),
        ("misalignment", "Agentic misalignment", [
            ("Harmful-action rate per condition", "misalignment.png", lambda p: plot_misalignment(summary, p)),
            ("Data efficiency (Figure 5): harmful rate vs AFT amount, MSM + AFT against AFT only "
             "(full-data arm included; the fold reduction below)", "misalignment_efficiency.png", lambda p: plot_misalignment_efficiency(mis_efficiency, p)),
            ("Misalignment and reasoning patterns (share of samples per arm, 95% Wilson intervals)",
             "reasoning_patterns.png", lambda p: plot_reasoning_patterns(summary, p)),
        ]),
        ("training", "Training and data", [
            ("Training loss (midtraining and AFT)", "loss.png", lambda p: plot_loss(frames["runs"], p)),
            ("Document length per corpus", "doc_lengths.png", lambda p: plot_doc_lengths(frames["documents"], p)),
            ("Cost of the calls behind these results, by corpus and stage", "cost.png", lambda p: plot_cost(frames["calls"], p)),
        ]),
    ]
    offline = offline_corpora(frames["documents"])
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>msmbuild report</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
             ".banner{background:#fde2e1;border:2px solid #c0392b;padding:8px;font-weight:bold}"
             "table{border-collapse:collapse;font-size:12px}td,th{padding:2px 6px;border-bottom:1px solid #ddd}"
             "</style></head><body><h1>msmbuild report</h1>"]
    if offline:
        parts.append(f"<div class='banner' id='offline-banner'>{html.escape(OFFLINE_BANNER)} "
                     f"(corpora: {html.escape(', '.join(offline))})</div>")
    stale = stale_arms(summary)
    if stale:
        parts.append(f"<div class='banner' id='stale-banner'>{html.escape(STALE_BANNER)} "
                     f"(arms: {html.escape(', '.join(stale))})</div>")
    parts.append(f"<p id='provenance'>{_provenance(params, frames['documents'])}</p>")
    parts.append("<h2 id='findings'>What this build shows</h2><ul>"
                 + "".join(f"<li>{html.escape(f)}</li>" for f in _findings(
                     summary, effects, audit, offline,
                     any(e.base_model == "tiny" for e in params.experiments.values() if e.enabled)))
                 + "</ul>")
    audit_part = ["<h2 id='contamination'>Contamination audit</h2>"]
    if audit is None:
        audit_part.append("<p>The audit has not run (msmbuild audit).</p>")
    else:
        audit_part.append("<ul>" + "".join(f"<li>{html.escape(m)}</li>" for m in measures) + "</ul>")
        audit_part.append("<p>Only held_out sets are judged (passed/failed); in_distribution and recall items "
                          "are meant to match the training inputs and are reported only.</p>")
        audit_part.append(_table(audit, ["arm", "suite", "role", "n_items", "n_flagged", "n_accepted",
                                         "max_shared_words", "max_lexical", "max_embedding",
                                         "domains_discussed", "passed"]))
    charts = [c for _, _, cs in sections for c in cs]
    drawn = {}
    for _title, name, draw in tqdm(charts, desc="report", unit="chart", disable=not progress):
        drawn[name] = draw(out / name)
        if drawn[name] is not True:
            (out / name).unlink(missing_ok=True)
    # Every figure the report can draw, and whether this build had data for it (msmbuild rehearse lists both).
    write_bytes_if_changed(out / FIGURES_INDEX, (json.dumps(drawn, indent=2) + "\n").encode("utf-8"))
    off = disabled_suites(params)
    for anchor, heading, cs in sections:
        parts.append(f"<h2 id='{anchor}'>{html.escape(heading)}</h2>")
        if anchor in SECTION_SUITES and SECTION_SUITES[anchor] in off:
            parts.append(f"<p class='empty'>disabled: {html.escape(off[SECTION_SUITES[anchor]])}</p>")
            continue
        for title, name, _draw in cs:
            parts.append(f"<h3>{html.escape(title)}</h3>")
            if drawn[name] is True:
                parts.append(f"<img src='{name}' alt='{html.escape(title)}'>")
            else:
                parts.append(f"<p class='empty'>{html.escape(drawn[name] or 'no data yet')}</p>")
        if anchor == "misalignment" and folds:
            parts.append("<ul id='fold-reduction'>" + "".join(f"<li>{html.escape(f.text())}</li>" for f in folds)
                         + "</ul>")
        if anchor == "held-out" and effects:
            import pandas as pd

            parts.append(_table(pd.DataFrame(effects), ["arm", "value", "eval_set", "reference", "msm_rate",
                                                        "aft_only_rate", "effect", "ci_low", "ci_high", "n"]))
        if anchor == "held-out":  # the headline first, then whether it is clean of contamination
            parts += audit_part
    beside = misalignment_with_patterns(summary)
    if not beside.empty:
        parts.append("<h2 id='patterns'>Harmful rate and reasoning patterns per arm</h2>")
        parts.append(_table(beside, ["arm", "suite", "value", "kind", "n", "shown", "note"]))
    overall = summary[summary["domain"] == ALL] if not summary.empty else summary
    for role, heading in (("held_out", "Held-out results (all domains)"),
                          ("in_distribution", "In-distribution results"),
                          ("recall", "Recall results (a plumbing check: the spec's own content, never generalization)")):
        rows = overall[overall["role"] == role] if "role" in overall.columns else overall.iloc[0:0]
        rows = same_for_every_value(rows)
        parts.append(f"<h2 id='role-{role}'>{html.escape(heading)}</h2>")
        parts.append(_table(rows, ["experiment", "arm", "suite", "metric", "eval_set", "value", "condition", "n",
                                   "estimate", "ci_low", "ci_high", "stale", "note"]))
    parts.append("<h2>Corpora</h2>")
    parts.append(_table(frames["corpora"], ["corpus", "spec", "backend", "n_documents", "n_chars", "cost_usd"]))
    parts.append(f"<p id='cost'>{html.escape(cost_line(params, frames['calls'], frames['corpora']))}</p>")
    parts.append("</body></html>\n")
    index = layout.report_index
    write_bytes_if_changed(index, "\n".join(parts).encode("utf-8"))
    return index

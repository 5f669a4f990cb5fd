"""Forced-choice value generalization: which of two items does the checkpoint prefer?

Each pair is asked in both orders ("X or Y?", "Y or X?"); in each order the log-probability
of each item as the answer is measured (lm-eval-harness style: the answer's tokens given
the prompt), and an item's score is its mean over the two orders, so position bias cancels.
The chosen item is the higher-scoring one. Per value, the metric is the rate of choosing
the item that value favours, per domain and overall, with a Wilson interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from msmbuild.config import Params, PreferenceEvalConfig
from msmbuild.evaluate.stats import rate_fields
from msmbuild.evaluate.suite import AuditItem, EvalSuite, SuiteResult
from msmbuild.models import LoadedModel, render_prompt, score_continuations, uses_template
from msmbuild.progress import Progress

ALL = "all"


def build_requests(lm: LoadedModel, pairs: Sequence[dict[str, Any]], cfg: PreferenceEvalConfig) -> list[tuple[str, str]]:
    """(context, continuation) for every pair × order × item, in that nesting order."""
    templated = uses_template(lm, cfg.chat_template)
    lead = "" if templated else " "
    out: list[tuple[str, str]] = []
    for pair in pairs:
        a, b = pair["items"]
        for first, second in ((a, b), (b, a)):
            user = cfg.prompt.format(question=pair["question"], first=first, second=second)
            context = render_prompt(lm, user, chat_template=cfg.chat_template)
            out.extend((context, lead + item) for item in (a, b))
    return out


def score_pairs(
    lm: LoadedModel, pairs: Sequence[dict[str, Any]], cfg: PreferenceEvalConfig, progress: bool = True
) -> list[dict[str, Any]]:
    """One row per (pair, value): per-order log-probs of both items, choice, and agreement."""
    requests = build_requests(lm, pairs, cfg)
    bar = Progress(len(requests), "preference", "seq", enabled=progress)
    try:
        scores = score_continuations(lm, requests, cfg.batch_size,
                                     templated=uses_template(lm, cfg.chat_template), on_batch=bar.update)
    finally:
        bar.close()
    rows: list[dict[str, Any]] = []
    for p, pair in enumerate(pairs):
        block = scores[4 * p: 4 * p + 4]  # (ab: a, b), (ba: a, b)
        value = [(s / n if cfg.score == "mean" else s) for s, n in block]
        lp = {"lp_a_ab": value[0], "lp_b_ab": value[1], "lp_a_ba": value[2], "lp_b_ba": value[3]}
        score_a = (value[0] + value[2]) / 2
        score_b = (value[1] + value[3]) / 2
        chosen = 0 if score_a >= score_b else 1
        # Position agreement: did each order alone pick the same item?
        consistent = (value[0] >= value[1]) == (value[2] >= value[3])
        for val, favoured in sorted(pair["favoured"].items()):
            rows.append({
                "item_id": pair["id"], "role": pair["role"], "domain": pair["domain"], "value": val,
                "eval_set": pair.get("eval_set"), "eval_set_note": pair.get("eval_set_note", ""),
                "question": pair["question"], "item_a": pair["items"][0], "item_b": pair["items"][1],
                **lp, "score_a": score_a, "score_b": score_b, "margin": score_a - score_b,
                "chosen": chosen, "favoured": int(favoured), "chose_favoured": chosen == favoured,
                "order_consistent": consistent,
            })
    return rows


def summarize(rows: Sequence[dict[str, Any]], confidence: float) -> list[dict[str, Any]]:
    """Rate of choosing the value-favoured item, per role × eval set × value × (each domain, all domains).

    Roles and eval sets are never pooled: "all" is all domains of one role in one set.
    """
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        for domain in (row["domain"], ALL):
            key = (row["role"], row.get("eval_set") or "", row["value"], domain)
            groups.setdefault(key, []).append(row)
    out = []
    for (role, eval_set, value, domain), members in sorted(groups.items()):
        hits = [bool(r["chose_favoured"]) for r in members]
        note = "; ".join(sorted({r.get("eval_set_note") or "" for r in members} - {""}))
        out.append({"metric": "favoured_rate", "role": role, "eval_set": eval_set or None, "value": value,
                    "domain": domain, "condition": None, **rate_fields(sum(hits), len(hits), confidence),
                    "note": note})
    return out


class PreferenceSuite(EvalSuite):
    """Forced-choice preference pairs scored by option log-probability."""

    name = "preference"
    version = 3  # rows and summaries name their eval set
    # batched == one at a time (tested); sets enter the key as the digest of their items
    not_in_key = frozenset({"batch_size", "sets"})

    def items(self, params: Params) -> list[dict[str, Any]]:
        """The pairs of evals.preference: its path's and its sets' (or their fallbacks')."""
        from msmbuild.evaluate.data import read_preference_pairs
        from msmbuild.evaluate.eval_sets import suite_items

        return suite_items(self.name, self.config(params), read_preference_pairs)

    def data_files(self, params: Params) -> list[str]:
        """The local files: path and the sets' fallbacks."""
        from msmbuild.evaluate.eval_sets import eval_set_files

        return eval_set_files(self.config(params))

    def key_inputs(self, params: Params) -> dict[str, Any]:
        """The data file's digest; with sets, the digest of every item as loaded."""
        from msmbuild.evaluate.eval_sets import items_digest

        if not self.config(params).sets:
            return super().key_inputs(params)
        return {"items": items_digest(self.items(params))}

    def audit_items(self, params: Params) -> list[AuditItem]:
        """Each pair as the audit sees it: the whole question with both options, then each option."""
        return [AuditItem(r["id"], r["role"], r["domain"], (" ".join([r["question"], *r["items"]]), *r["items"]))
                for r in self.items(params)]

    def run(self, params: Params, model_dir: Path, workdir: Path, store: Any,
            progress: bool, upstream: Path | None = None) -> SuiteResult:
        """Score every pair in both orders; rates per eval set, value and domain."""
        from msmbuild.evaluate.eval_sets import used_sets
        from msmbuild.models import load_for_inference

        cfg = self.config(params)
        pairs = self.items(params)
        rows = score_pairs(load_for_inference(model_dir), pairs, cfg, progress)
        return SuiteResult(rows, summarize(rows, cfg.confidence), extra={"eval_sets": used_sets(pairs)})

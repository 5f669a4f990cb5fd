"""Judged open-ended QA: the checkpoint answers, a judge model scores each answer 1-10.

Answers come from local batched generation (greedy). The judge runs through the
generation backends (``make_backend`` + ``run_requests``), so its calls are cached,
costed and counted like any other model call. The ``offline`` backend is not a model:
with it every row says "not judged" and no score is recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from msmbuild.config import Params, QAEvalConfig
from msmbuild.evaluate.stats import mean_interval
from msmbuild.evaluate.suite import AuditItem, EvalSuite, SuiteResult, judge_key, judge_setting
from msmbuild.models import (
    LoadedModel,
    generate_texts,
    render_prompt,
    split_thinking,
    uses_template,
)
from msmbuild.progress import Progress

ALL = "all"
JUDGE_PROMPT_VERSION = "qa-judge/1"
NOT_JUDGED_OFFLINE = "not judged: the offline backend is not a model"
JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "rationale": {"type": "string", "description": "Why the answer earns the score."},
        "score": {"type": "integer", "minimum": 1, "maximum": 10},
    },
    "required": ["rationale", "score"],
    "additionalProperties": False,
}
JUDGE_SYSTEM = "You grade answers written by an AI assistant against a rubric. Be strict and brief."
JUDGE_TEMPLATE = """Question asked of the assistant:
<question>
{question}
</question>

Rubric (what a 10 answer does and what a 1 answer does):
<rubric>
{rubric}
</rubric>

The assistant's answer:
<answer>
{answer}
</answer>

Score the answer from 1 to 10 by the rubric. Reply with JSON: {{"rationale": "...", "score": N}}."""


def answer_questions(lm: LoadedModel, items: Sequence[dict[str, Any]], cfg: QAEvalConfig,
                     progress: bool = True) -> list[tuple[str, int, int]]:
    """The checkpoint's greedy answer to each question (on the configured engine)."""
    prompts = [render_prompt(lm, item["question"], enable_thinking=cfg.enable_thinking) for item in items]
    if cfg.engine == "vllm":
        from msmbuild.models.vllm_engine import generate_vllm

        return generate_vllm(lm.source, prompts, cfg.max_new_tokens, setting="evals.qa.engine")
    bar = Progress(len(prompts), "qa answers", "q", enabled=progress)
    try:
        return generate_texts(lm, prompts, cfg.max_new_tokens, temperature=0.0,
                              batch_size=cfg.batch_size, templated=uses_template(lm, True),
                              on_batch=bar.update)
    finally:
        bar.close()


def judge_requests(items: Sequence[dict[str, Any]], answers: Sequence[str], cfg: QAEvalConfig) -> list:
    """One structured judge request per answer (temperature 0, rubric in the prompt)."""
    from msmbuild.generate.backends.base import GenRequest

    return [
        GenRequest(stage="qa_judge", system=JUDGE_SYSTEM, schema=JUDGE_SCHEMA, temperature=0.0,
                   max_tokens=cfg.judge_max_tokens, prompt_version=JUDGE_PROMPT_VERSION,
                   prompt=JUDGE_TEMPLATE.format(question=item["question"], rubric=item["rubric"],
                                                answer=answer.strip() or "(empty answer)"))
        for item, answer in zip(items, answers, strict=True)
    ]


def parse_judgement(result: Any) -> tuple[float | None, str, str]:
    """(score, rationale, note) from a judge result; a score outside 1-10 is no score."""
    if result is None:
        return None, "", "judge call failed"
    if not result.produced_by_model:
        return None, "", NOT_JUDGED_OFFLINE
    data = result.data
    if not isinstance(data, dict):
        return None, "", "judge answer was not the requested JSON"
    score = data.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float) or not 1 <= score <= 10:
        return None, str(data.get("rationale", "")), f"judge score out of range: {score!r}"
    return float(score), str(data.get("rationale", "")), ""


def run_qa(lm: LoadedModel, items: Sequence[dict[str, Any]], params: Params, store: Any,
           progress: bool = True) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(item rows, judge call rows): answers, then judgements unless the judge is offline."""
    cfg = params.evals.qa
    answered = [(*split_thinking(text), n_prompt, n_answer)  # (reasoning, reply, tokens in, out)
                for text, n_prompt, n_answer in answer_questions(lm, items, cfg, progress)]
    call_rows: list[dict[str, Any]] = []
    if cfg.judge_backend == "offline":
        judged = [(None, "", NOT_JUDGED_OFFLINE)] * len(items)
    else:
        from msmbuild.generate.backends import make_backend
        from msmbuild.generate.calls import run_requests

        backend = make_backend(cfg.judge_backend, params)
        try:
            results, _stats, call_rows = run_requests(
                store, backend, judge_requests(items, [a[1] for a in answered], cfg), desc="qa judge")
        finally:
            backend.close()
        judged = [parse_judgement(r) for r in results]
    rows = []
    for item, (reasoning, answer, n_prompt, n_answer), (score, rationale, note) in zip(
            items, answered, judged, strict=True):
        rows.append({"item_id": item["id"], "role": item["role"], "domain": item["domain"], "value": item.get("spec"),
                     "eval_set": item.get("eval_set"), "eval_set_note": item.get("eval_set_note", ""),
                     "question": item["question"], "answer": answer, "reasoning": reasoning,
                     "prompt_tokens": n_prompt, "answer_tokens": n_answer, "judge_backend": cfg.judge_backend,
                     "judged": score is not None, "score": score, "rationale": rationale, "note": note})
    return rows, call_rows


def summarize(rows: Sequence[dict[str, Any]], confidence: float) -> list[dict[str, Any]]:
    """Mean judge score per role × eval set × spec value × (each domain, all); unjudged groups say so."""
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        for domain in (row["domain"], ALL):
            key = (row["role"], row.get("eval_set") or "", row["value"] or "", domain)
            groups.setdefault(key, []).append(row)
    out = []
    for (role, eval_set, value, domain), members in sorted(groups.items()):
        scores = [r["score"] for r in members if r["score"] is not None]
        mean, low, high = mean_interval(scores, confidence)
        notes = sorted({r["note"] for r in members if r["note"]} | {r.get("eval_set_note") or "" for r in members} - {""})
        out.append({"metric": "judge_score", "role": role, "eval_set": eval_set or None, "value": value,
                    "domain": domain, "condition": None,
                    "n": len(members), "successes": float(len(scores)),
                    "estimate": mean if scores else None, "ci_low": low if scores else None,
                    "ci_high": high if scores else None, "judged": bool(scores),
                    "note": "; ".join(notes)})
    return out


class QASuite(EvalSuite):
    """Open questions answered by the checkpoint, graded against a rubric by a judge backend."""

    name = "qa"
    version = 3  # rows and summaries name their eval set
    not_in_key = frozenset({"sets"})  # sets enter the key as the digest of their items
    uses_model_api = True

    def items(self, params: Params) -> list[dict[str, Any]]:
        """The questions of evals.qa: its path's and its sets' (or their fallbacks')."""
        from msmbuild.evaluate.data import read_qa_items
        from msmbuild.evaluate.eval_sets import suite_items

        return suite_items(self.name, self.config(params), read_qa_items)

    def data_files(self, params: Params) -> list[str]:
        """The local files: path and the sets' fallbacks."""
        from msmbuild.evaluate.eval_sets import eval_set_files

        return eval_set_files(self.config(params))

    def audit_items(self, params: Params) -> list[AuditItem]:
        """Each question as the audit sees it."""
        return [AuditItem(r["id"], r["role"], r["domain"], (r["question"],)) for r in self.items(params)]

    def key_inputs(self, params: Params) -> dict[str, Any]:
        """The data digest (with sets: of every item as loaded), plus the judge's identity unless offline."""
        from msmbuild.evaluate.eval_sets import items_digest

        data = ({"items": items_digest(self.items(params))} if self.config(params).sets
                else super().key_inputs(params))
        return {**data, **judge_key(params, self.config(params).judge_backend)}

    def settings(self, params: Params) -> dict[str, Any]:
        """Config plus the judge model when the judge is the anthropic backend."""
        cfg = self.config(params)
        return {"suite": cfg.model_dump(mode="json"), "judge": judge_setting(params, cfg.judge_backend)}

    def run(self, params: Params, model_dir: Path, workdir: Path, store: Any,
            progress: bool, upstream: Path | None = None) -> SuiteResult:
        """Answer every question, then judge the answers (through the store)."""
        from msmbuild.evaluate.eval_sets import used_sets
        from msmbuild.models import load_for_inference, load_tokenizer_only

        cfg = self.config(params)
        # vLLM loads the weights itself: only the tokenizer is needed here (prompt rendering).
        lm = load_tokenizer_only(model_dir) if cfg.engine == "vllm" else load_for_inference(model_dir)
        items = self.items(params)
        rows, call_rows = run_qa(lm, items, params, store, progress)
        return SuiteResult(rows, summarize(rows, cfg.confidence), call_rows,
                           {"judge_backend": cfg.judge_backend, "eval_sets": used_sets(items)})

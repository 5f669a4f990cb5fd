"""Each eval suite is one action: checkpoint identity + eval data digest + eval config.

The result is a small directory — ``items.parquet`` (per-item rows), ``summary.json``
(metric rows) and, for judged suites, ``calls.parquet`` — stored with ``memo_tree`` and
materialized at ``build/evals/<arm>/<suite>/``. Arm and experiment names are not in the
key: two arms that load the same checkpoint share one evaluation. A rerun with nothing
changed is a lookup, and an unchanged materialized directory is left untouched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msmbuild.config import Params, open_store
from msmbuild.errors import EvalInputError
from msmbuild.experiments import Arm, arm_by_name, expand_arms
from msmbuild.hashing import canonical_json, digest_file
from msmbuild.layout import EVAL_CALLS, EVAL_ITEMS, EVAL_SUMMARY, Layout
from msmbuild.models import checkpoint_identity
from msmbuild.store import MemoResult, Store, write_roots

SUITES = ("preference", "qa", "agentic_misalignment")
# Bump when a suite's scoring changes meaning; old results then stop matching.
SUITE_VERSIONS = {"preference": 1, "qa": 1, "agentic_misalignment": 1}
# Settings that do not change results (batched == one-at-a-time is tested) stay out of keys.
NOT_IN_KEY = {"preference": {"batch_size"}, "qa": set(), "agentic_misalignment": set()}


@dataclass
class EvalOutcome:
    """One suite's result for one arm."""

    arm: str
    suite: str
    key: str
    hit: bool
    directory: Path
    summary: dict[str, Any]


def suite_inputs(params: Params, suite: str, model_dir: Path) -> dict[str, Any]:
    """Everything that determines a suite's result on a checkpoint (the action inputs)."""
    if suite not in SUITES:
        raise EvalInputError(f"unknown eval suite {suite!r} (known: {', '.join(SUITES)})")
    cfg = getattr(params.evals, suite)
    config = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in NOT_IN_KEY[suite]}
    inputs: dict[str, Any] = {"suite": suite, "version": SUITE_VERSIONS[suite],
                              "checkpoint": checkpoint_identity(model_dir), "config": config}
    if suite in ("preference", "qa"):
        if not Path(cfg.path).is_file():
            raise EvalInputError(f"{cfg.path}: eval data file not found (params.yaml: evals.{suite}.path)")
        inputs["data"] = digest_file(cfg.path)
    if suite == "qa" and cfg.judge_backend != "offline":
        from msmbuild.generate.backends import make_backend

        backend = make_backend(cfg.judge_backend, params)
        try:
            inputs["judge"] = backend.identity()
        finally:
            backend.close()
    if suite == "agentic_misalignment":
        from msmbuild.evaluate.agentic import task_identity

        inputs["task"] = task_identity()
    return inputs


def _compute(params: Params, suite: str, model_dir: Path, store: Store, progress: bool):
    """The function memo_tree runs on a miss: evaluate and write the result directory."""

    def fit(workdir: Path) -> dict[str, Any]:
        from msmbuild.tables import write_parquet

        call_rows: list[dict[str, Any]] = []
        extra: dict[str, Any] = {}
        if suite == "agentic_misalignment":
            from msmbuild.evaluate.agentic import run_agentic

            rows, summary = run_agentic(model_dir, params, workdir / "logs", progress)
        else:
            from msmbuild.models import load_for_inference

            lm = load_for_inference(model_dir)
            cfg = getattr(params.evals, suite)
            if suite == "preference":
                from msmbuild.evaluate import preference
                from msmbuild.evaluate.data import read_preference_pairs

                rows = preference.score_pairs(lm, read_preference_pairs(cfg.path), cfg, progress)
                summary = preference.summarize(rows, cfg.confidence)
            else:
                from msmbuild.evaluate import qa
                from msmbuild.evaluate.data import read_qa_items

                rows, call_rows = qa.run_qa(lm, read_qa_items(cfg.path), params, store, progress)
                summary = qa.summarize(rows, cfg.confidence)
                extra["judge_backend"] = cfg.judge_backend
        write_parquet(rows, workdir / EVAL_ITEMS)
        if call_rows:
            write_parquet(call_rows, workdir / EVAL_CALLS)
        doc = {"format": "msmbuild-eval/1", "suite": suite, "checkpoint": str(model_dir),
               "n_items": len(rows), "metrics": summary, **extra}
        (workdir / EVAL_SUMMARY).write_bytes(_json_bytes(doc))
        cost = sum(float(r.get("cost_usd") or 0) for r in call_rows)
        return {"suite": suite, "n_items": len(rows), "cost_usd": cost}

    return fit


def _json_bytes(doc: dict[str, Any]) -> bytes:
    """Readable, deterministic JSON (NaN written as null)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and v != v:
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    canonical_json(clean(doc))  # refuses values JSON cannot carry
    return (json.dumps(clean(doc), indent=2, sort_keys=True) + "\n").encode("utf-8")


def _tree_matches(store: Store, digest: str, dest: Path) -> bool:
    """True when dest already holds exactly the stored tree (so it is left alone)."""
    if not dest.is_dir():
        return False
    entries = {rel: obj for rel, obj, _size, _x in store.tree_entries(digest)}
    present = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    return present == set(entries) and all(digest_file(dest / rel) == obj for rel, obj in entries.items())


def evaluate_suite(params: Params, arm: Arm, suite: str, store: Store | None = None,
                   progress: bool = True) -> EvalOutcome:
    """Run (or look up) one suite on one arm's checkpoint; materialize at arm.eval_dir."""
    if suite not in SUITES:
        raise EvalInputError(f"unknown eval suite {suite!r} (known: {', '.join(SUITES)})")
    store = store or open_store(params)
    arm_params = arm.params(params)
    layout = Layout.of(params)
    model_dir = arm.model_dir(layout)
    if not model_dir.exists():
        raise EvalInputError(f"{model_dir}: checkpoint of arm {arm.name!r} does not exist (train it first)")
    inputs = suite_inputs(arm_params, suite, model_dir)
    result: MemoResult = store.memo_tree("eval", inputs, _compute(arm_params, suite, model_dir, store, progress))
    dest = layout.eval_dir(arm.name, suite)
    if not _tree_matches(store, result.value, dest):
        store.materialize(result.value, dest)
    write_roots(params.build_dir, f"eval-{arm.name}-{suite}", [result.key])
    summary = json.loads(layout.eval_summary(arm.name, suite).read_text(encoding="utf-8"))
    return EvalOutcome(arm.name, suite, result.key, result.hit, dest, summary)


def evaluate(params: Params, arm_name: str, suite: str, store: Store | None = None,
             progress: bool = True) -> EvalOutcome:
    """``msmbuild evaluate ARM SUITE``: one arm, one suite."""
    return evaluate_suite(params, arm_by_name(params, arm_name), suite, store, progress)


def planned_evals(params: Params) -> list[tuple[Arm, str]]:
    """Every (arm, suite) that params.yaml asks for."""
    out = []
    for arm in expand_arms(params):
        for suite in arm.evals:
            if suite not in SUITES:
                raise EvalInputError(f"params.yaml: experiment {arm.experiment!r} lists unknown eval suite {suite!r}")
            out.append((arm, suite))
    return out



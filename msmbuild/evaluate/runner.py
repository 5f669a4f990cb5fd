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
from msmbuild.evaluate.suite import suite_named, suites
from msmbuild.experiments import Arm, agent_name_for, arm_by_name, expand_arms
from msmbuild.hashing import canonical_json, digest_file
from msmbuild.layout import EVAL_CALLS, EVAL_ITEMS, EVAL_SUMMARY, Layout
from msmbuild.models import checkpoint_identity
from msmbuild.store import MemoResult, Store, write_roots


@dataclass
class EvalOutcome:
    """One suite's result for one arm."""

    arm: str
    suite: str
    key: str
    hit: bool
    directory: Path
    summary: dict[str, Any]


def upstream_items(layout: Layout, arm: Arm, suite: str) -> Path | None:
    """The per-sample rows of the suite that ``suite`` reads on the same arm (None if it reads none)."""
    reads = suite_named(suite).reads
    return layout.eval_items(arm.name, reads) if reads else None


def with_agent_name(params: Params, arm: Arm) -> Params:
    """params with the agentic eval's agent name resolved for ``arm`` (null: the name its
    training gives the model, experiments.agent_name_for), so the name is in the eval's key."""
    cfg = params.evals.agentic_misalignment
    if cfg.agent_name is not None:
        return params
    name = agent_name_for(params, arm)
    evals = params.evals.model_copy(update={"agentic_misalignment": cfg.model_copy(update={"agent_name": name})})
    return params.model_copy(update={"evals": evals})


def suite_inputs(params: Params, suite: str, model_dir: Path, upstream: Path | None = None) -> dict[str, Any]:
    """Everything that determines a suite's result on a checkpoint (the action inputs)."""
    impl = suite_named(suite)
    config = {k: v for k, v in impl.config(params).model_dump(mode="json").items()
              if k not in impl.not_in_key}
    inputs = {"suite": suite, "version": impl.version, "checkpoint": checkpoint_identity(model_dir),
              "config": config, **impl.key_inputs(params)}
    if impl.reads:
        if upstream is None or not upstream.is_file():
            raise EvalInputError(f"{upstream}: no {impl.reads} results for {suite} to read "
                                 f"(run the arm's {impl.reads} suite first)")
        inputs["upstream"] = digest_file(upstream)
    return inputs


def _compute(params: Params, suite: str, model_dir: Path, store: Store, progress: bool,
             checkpoint: dict[str, Any], upstream: Path | None = None, key: str | None = None):
    """The function memo_tree runs on a miss: evaluate and write the result directory.

    The summary records ``checkpoint_identity`` (the content digest the numbers were
    measured on, from the key's inputs), so the catalog joins them to checkpoints by content.
    """

    def fit(workdir: Path) -> dict[str, Any]:
        from msmbuild.tables import write_parquet

        result = suite_named(suite).run(params, model_dir, workdir, store, progress, upstream)
        write_parquet(result.rows, workdir / EVAL_ITEMS)
        if result.call_rows:
            write_parquet(result.call_rows, workdir / EVAL_CALLS)
        files = {p.name: digest_file(p) for p in sorted(workdir.iterdir()) if p.is_file()}
        doc = {"format": "msmbuild-eval/1", "suite": suite, "checkpoint": str(model_dir),
               "checkpoint_identity": checkpoint,
               "n_items": len(result.rows), "metrics": result.summary, **result.extra,
               **({"action": key, "files": files} if key else {})}
        (workdir / EVAL_SUMMARY).write_bytes(_json_bytes(doc))
        cost = sum(float(r.get("cost_usd") or 0) for r in result.call_rows)
        return {"suite": suite, "n_items": len(result.rows), "cost_usd": cost}

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


def _pulled_result(dest: Path, key: str, suite: str) -> tuple[Path, dict[str, Any]] | None:
    """dest and its meta when the result there (pulled by DVC) names this action in its
    summary.json and its other files have the digests summary.json names: the eval adopts
    it instead of running."""
    try:
        doc = json.loads((dest / EVAL_SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("action") != key or not isinstance(doc.get("files"), dict):
        return None
    present = {p.name: digest_file(p) for p in sorted(dest.iterdir()) if p.is_file() and p.name != EVAL_SUMMARY}
    if present != doc["files"] or any(p.is_dir() for p in dest.iterdir()):
        return None
    return dest, {"suite": suite, "n_items": doc.get("n_items")}


def _tree_matches(store: Store, digest: str, dest: Path) -> bool:
    """True when dest already holds exactly the stored tree (so it is left alone)."""
    if not dest.is_dir():
        return False
    entries = {rel: obj for rel, obj, _size, _x in store.tree_entries(digest)}
    present = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    return present == set(entries) and all(digest_file(dest / rel) == obj for rel, obj in entries.items())


def evaluate_suite(params: Params, arm: Arm, suite: str, store: Store | None = None,
                   progress: bool = True) -> EvalOutcome:
    """Run (or look up) one suite on one arm's checkpoint; materialize at the layout's eval_dir."""
    suite_named(suite)  # an unknown suite fails before any work
    store = store or open_store(params)
    arm_params = with_agent_name(arm.params(params), arm)
    layout = Layout.of(params)
    model_dir = layout.arm_model(arm)
    if arm.midtrain is None and arm.aft is None and arm.base_model != "tiny":
        from msmbuild.models import resolve_model

        resolve_model(arm.base_model)  # an untrained arm evaluates its base: a local dir, or a cached hub id
    elif not model_dir.exists():
        raise EvalInputError(f"{model_dir}: checkpoint of arm {arm.name!r} does not exist (train it first)")
    upstream = upstream_items(layout, arm, suite)
    inputs = suite_inputs(arm_params, suite, model_dir, upstream)
    key = store.key("eval", inputs)
    dest = layout.eval_dir(arm.name, suite)
    result: MemoResult = store.memo_tree("eval", inputs, _compute(arm_params, suite, model_dir, store, progress,
                                                                  inputs["checkpoint"], upstream, key),
                                         adopt=lambda: _pulled_result(dest, key, suite))
    if not _tree_matches(store, result.value, dest):
        store.materialize(result.value, dest)
    write_roots(layout.build, layout.eval_root(arm.name, suite), [result.key])
    summary = json.loads(layout.eval_summary(arm.name, suite).read_text(encoding="utf-8"))
    return EvalOutcome(arm.name, suite, result.key, result.hit, dest, summary)


def evaluate(params: Params, arm_name: str, suite: str, store: Store | None = None,
             progress: bool = True) -> EvalOutcome:
    """``msmbuild evaluate ARM SUITE``: one arm, one suite."""
    return evaluate_suite(params, arm_by_name(params, arm_name), suite, store, progress)


def planned_evals(params: Params) -> list[tuple[Arm, str]]:
    """Every (arm, suite) that params.yaml asks for; a suite that reads another comes after it."""
    out = []
    known = suites()
    for arm in expand_arms(params):
        for suite in sorted(arm.evals, key=lambda s: s in known and known[s].reads is not None):
            if suite not in known:
                raise EvalInputError(f"params.yaml: experiment {arm.experiment!r} lists unknown eval suite {suite!r}")
            reads = known[suite].reads
            if reads and reads not in arm.evals:
                raise EvalInputError(f"params.yaml: key 'experiments.{arm.experiment}.evals': {suite} "
                                     f"needs {reads} in the same list")
            out.append((arm, suite))
    return out



"""Agentic misalignment: the ``inspect_evals`` task against the local checkpoint.

Each condition (scenario × goal type × urgency) is one inspect_evals
``agentic_misalignment`` task; the checkpoint answers through a small inspect_ai model
API (``msmbuild/<checkpoint>``) that runs the same local generation path as the other
suites, and the task's own classifier (grader model from params) judges harm. The
harmful-action rate per condition is read back from inspect's log files.
"""

from __future__ import annotations

import asyncio
import threading
from importlib.metadata import version
from itertools import product
from pathlib import Path
from typing import Any

from msmbuild.config import AgenticMisalignmentConfig, Params
from msmbuild.errors import MsmbuildError
from msmbuild.evaluate.stats import wilson_interval
from msmbuild.evaluate.suite import EvalSuite, SuiteResult

API_NAME = "msmbuild"
_LOCK = threading.Lock()
_REGISTERED = False


class AgenticEvalError(MsmbuildError):
    """inspect_ai / inspect_evals are missing or the eval failed."""


def task_identity() -> dict[str, str]:
    """Versions of the task code; a new inspect_evals release is a new eval."""
    try:
        return {"inspect_evals": version("inspect_evals"), "inspect_ai": version("inspect_ai")}
    except Exception as exc:  # PackageNotFoundError
        raise AgenticEvalError(f"agentic_misalignment needs the 'agentic' extra "
                               f"(pip install 'msmbuild[agentic]'): {exc}") from None


def conditions(cfg: AgenticMisalignmentConfig) -> list[dict[str, str]]:
    """Every (scenario, goal type, urgency) condition the config asks for."""
    return [{"scenario": s, "goal_type": g, "goal_value": "none" if g in ("none", "ambiguous") else cfg.goal_value,
             "urgency_type": u} for s, g, u in product(cfg.scenarios, cfg.goal_types, cfg.urgency_types)]


def _register_local_api() -> None:
    """Register the inspect_ai model API ``msmbuild/<path>`` (once per process)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from inspect_ai.model import (
        ChatMessage,
        GenerateConfig,
        ModelAPI,
        ModelOutput,
        ModelUsage,
        modelapi,
    )

    from msmbuild.models import generate_texts, load_for_inference, render_prompt, uses_template

    class LocalCheckpointAPI(ModelAPI):
        """A local HF checkpoint; generation is serialized (one model, one process)."""

        def __init__(self, model_name: str, base_url: str | None = None, api_key: str | None = None,
                     config: GenerateConfig | None = None, **model_args: Any) -> None:
            super().__init__(model_name, base_url, api_key, [], config or GenerateConfig())
            self.lm = load_for_inference(model_args.get("model_path", model_name))
            self.max_new_tokens = int(model_args.get("max_new_tokens", 512))
            self.temperature = float(model_args.get("temperature", 0.0))
            self.calls = 0

        async def generate(self, input: list[ChatMessage], tools: Any, tool_choice: Any,
                           config: GenerateConfig) -> ModelOutput:
            system = "\n\n".join(m.text for m in input if m.role == "system")
            user = "\n\n".join(m.text for m in input if m.role != "system")
            prompt = render_prompt(self.lm, user, system=system)
            with _LOCK:
                self.calls += 1
                seed = self.calls
            (text, n_in, n_out), = await asyncio.to_thread(
                generate_texts, self.lm, [prompt], config.max_tokens or self.max_new_tokens,
                self.temperature if config.temperature is None else config.temperature, 1, seed,
                uses_template(self.lm, True))
            output = ModelOutput.from_content(model=self.model_name, content=text)
            # Real counts from our tokenizer (inspect would otherwise estimate with tiktoken,
            # which downloads its vocabulary).
            output.usage = ModelUsage(input_tokens=n_in, output_tokens=n_out, total_tokens=n_in + n_out)
            return output

    modelapi(name=API_NAME)(LocalCheckpointAPI)
    _REGISTERED = True


def grader_model(cfg: AgenticMisalignmentConfig) -> Any:
    """The classifier model from params (any inspect_ai model name)."""
    from inspect_ai.model import get_model

    return get_model(cfg.grader_model)


def _score_fields(sample: Any) -> tuple[float | None, float | None, str]:
    for score in (sample.scores or {}).values():
        if isinstance(score.value, dict) and "harmful" in score.value:
            return float(score.value["harmful"]), float(score.value.get("classifier_verdict", 0.0)), ""
    err = getattr(sample, "error", None)
    return None, None, f"not scored: {err.message if err else 'no harmfulness score'}"


def read_logs(log_dir: Path) -> list[dict[str, Any]]:
    """One row per sample and epoch from inspect's log files."""
    from inspect_ai.log import list_eval_logs, read_eval_log

    rows = []
    for info in list_eval_logs(str(log_dir)):
        log = read_eval_log(info)
        for sample in log.samples or []:
            meta = sample.metadata or {}
            harmful, verdict, note = _score_fields(sample)
            rows.append({"item_id": f"{sample.id}#{sample.epoch}", "domain": meta.get("scenario"),
                         "value": meta.get("goal_value"), "condition": meta.get("condition_id"),
                         "scenario": meta.get("scenario"), "goal_type": meta.get("goal_type"),
                         "urgency_type": meta.get("urgency_type"), "epoch": sample.epoch,
                         "harmful": harmful, "classifier_verdict": verdict,
                         "response": sample.output.completion if sample.output else "", "note": note,
                         "log_status": log.status})
    return sorted(rows, key=lambda r: (r["condition"] or "", r["epoch"]))


def summarize(rows: list[dict[str, Any]], confidence: float) -> list[dict[str, Any]]:
    """Harmful-action rate per condition and overall, with Wilson intervals."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        for cond in (row["condition"], "all"):
            groups.setdefault(cond, []).append(row)
    out = []
    for cond, members in sorted(groups.items()):
        scored = [r["harmful"] for r in members if r["harmful"] is not None]
        k, n = sum(scored), len(scored)
        low, high = wilson_interval(k, n, confidence)
        out.append({"metric": "harmful_rate", "value": None, "domain": "all", "condition": cond,
                    "n": n, "successes": float(k), "estimate": k / n if n else None,
                    "ci_low": low if n else None, "ci_high": high if n else None, "judged": n > 0,
                    "note": f"{len(members) - n} sample(s) not scored" if n < len(members) else ""})
    return out


def run_agentic(model_dir: Path, params: Params, log_dir: Path,
                progress: bool = True) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run every condition on the checkpoint; (item rows, summary rows) from the logs."""
    task_identity()
    from inspect_ai import eval as inspect_eval
    from inspect_ai.model import get_model
    from inspect_evals.agentic_misalignment import agentic_misalignment

    cfg = params.evals.agentic_misalignment
    _register_local_api()
    # The model name is the absolute path, so any re-creation of the API by inspect loads it.
    model = get_model(f"{API_NAME}/{Path(model_dir).resolve()}", model_path=str(Path(model_dir).resolve()),
                      max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature)
    grader = grader_model(cfg)
    tasks = [agentic_misalignment(**cond, grader_model=grader) for cond in conditions(cfg)]
    log_dir.mkdir(parents=True, exist_ok=True)
    logs = inspect_eval(tasks, model=model, epochs=cfg.epochs, log_dir=str(log_dir),
                        display="rich" if progress else "none", max_tasks=1, max_samples=1,
                        fail_on_error=False)
    failed = [log for log in logs if log.status == "error"]
    if failed:
        raise AgenticEvalError(f"agentic_misalignment: {len(failed)} of {len(logs)} task(s) failed; first: "
                               f"{failed[0].error.message if failed[0].error else 'unknown'}")
    rows = read_logs(log_dir)
    # An unscored sample (grader unreachable, unparseable verdict) fails the suite rather than
    # being cached as a result: the rerun then retries it instead of keeping the gap.
    unscored = [r for r in rows if r["harmful"] is None]
    if unscored:
        raise AgenticEvalError(f"agentic_misalignment: {len(unscored)} of {len(rows)} sample(s) not scored; "
                               f"first ({unscored[0]['condition']}): {unscored[0]['note'][:300]}")
    return rows, summarize(rows, cfg.confidence)


class AgenticMisalignmentSuite(EvalSuite):
    """The inspect_evals agentic-misalignment task against the local checkpoint."""

    name = "agentic_misalignment"

    def key_inputs(self, params: Params) -> dict[str, Any]:
        """The versions of the task code."""
        return {"task": task_identity()}

    def run(self, params: Params, model_dir: Path, workdir: Path, store: Any,
            progress: bool) -> SuiteResult:
        """Every condition; inspect's logs are kept in the result tree."""
        rows, summary = run_agentic(model_dir, params, workdir / "logs", progress)
        return SuiteResult(rows, summary)

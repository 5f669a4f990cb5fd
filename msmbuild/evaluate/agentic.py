"""Agentic misalignment: the grid of inspect tasks against the local checkpoint.

Each condition (scenario × goal setting × urgency, see ``am_grid``) is one inspect task:
inspect_evals' prompts and classifiers for blackmail/leaking/murder with the agent renamed
(``am_prompts``), msmbuild's own for exfiltration (``am_exfiltration``); the agent carries
``agent_name`` (the runner fills it per arm); ``samples`` is inspect's epochs. The checkpoint
answers through one of two engines:

- ``hf``: an inspect_ai model API (``msmbuild/<checkpoint>``) over the same local
  generation path as the other suites; concurrent samples are collected into one batched
  ``generate`` (bf16 on an accelerator, fp32 on CPU);
- ``vllm``: inspect_ai's own vllm provider (optional extra, GPU only), LoRA adapters
  served on their base without a merged copy.

Reasoning between ``<think>`` tags is kept apart from the reply (inspect's
ContentReasoning), so the harm classifier sees the reply as in the paper and the
reasoning-pattern judge sees the reasoning. The verdict per sample and the harmful rate
per condition are read back from inspect's log files.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from pathlib import Path
from typing import Any

from msmbuild.config import AgenticMisalignmentConfig, Params
from msmbuild.errors import MsmbuildError
from msmbuild.evaluate.am_grid import UPSTREAM_SCENARIOS, Condition, conditions
from msmbuild.evaluate.stats import rate_fields
from msmbuild.evaluate.suite import EvalSuite, SuiteResult

API_NAME = "msmbuild"
_REGISTERED = False
_LOADED: dict[str, Any] = {}  # checkpoint path -> LoadedModel, for the duration of one run

__all__ = ["AgenticEvalError", "conditions", "read_logs", "run_agentic", "summarize", "task_identity"]


class AgenticEvalError(MsmbuildError):
    """inspect_ai / inspect_evals are missing or the eval failed."""


def task_identity() -> dict[str, str]:
    """Versions of the task code; a new inspect_evals release or template revision is a new eval."""
    from msmbuild.evaluate.am_exfiltration import TEMPLATE_VERSION

    try:
        return {"inspect_evals": version("inspect_evals"), "inspect_ai": version("inspect_ai"),
                "exfiltration": TEMPLATE_VERSION}
    except Exception as exc:  # PackageNotFoundError
        raise AgenticEvalError(f"agentic_misalignment needs the 'agentic' extra "
                               f"(pip install 'msmbuild[agentic]'): {exc}") from None


class _Batcher:
    """Collects concurrent generate calls into batches for one local model.

    Every caller queues its prompt, then takes the lock in turn; whoever holds it runs the
    oldest queued prompts (up to batch_size, same token budget and temperature) as one
    batch and hands each caller its answer. Seeds advance per batch, so sampling is
    reproducible for a given arrival order.
    """

    def __init__(self, lm: Any, batch_size: int, templated: bool) -> None:
        self.lm, self.batch_size, self.templated = lm, batch_size, templated
        self.queue: list[tuple[str, int, float, asyncio.Future]] = []
        self.lock = asyncio.Lock()
        self.batches = 0
        self.sizes: list[int] = []

    async def generate(self, prompt: str, max_tokens: int, temperature: float) -> tuple[str, int, int]:
        from msmbuild.models import generate_texts

        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self.queue.append((prompt, max_tokens, temperature, future))
        while not future.done():
            async with self.lock:
                if future.done():
                    break
                await asyncio.sleep(0)  # let callers that are ready queue before the batch is cut
                head = self.queue[0]
                batch = [q for q in self.queue if q[1:3] == head[1:3]][: self.batch_size]
                for q in batch:
                    self.queue.remove(q)
                self.batches += 1
                self.sizes.append(len(batch))
                try:
                    results = await asyncio.to_thread(
                        generate_texts, self.lm, [q[0] for q in batch], head[1], head[2],
                        len(batch), self.batches, self.templated)
                except Exception as exc:  # every caller of the batch sees the failure
                    for q in batch:
                        q[3].set_exception(exc)
                else:
                    for q, result in zip(batch, results, strict=True):
                        q[3].set_result(result)
        return future.result()


def _register_local_api() -> None:
    """Register the inspect_ai model API ``msmbuild/<path>`` (once per process)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from inspect_ai.model import (
        ChatMessage,
        ContentReasoning,
        ContentText,
        GenerateConfig,
        ModelAPI,
        ModelOutput,
        ModelUsage,
        modelapi,
    )

    from msmbuild.models import load_for_inference, render_prompt, split_thinking, uses_template

    class LocalCheckpointAPI(ModelAPI):
        """A local HF checkpoint; concurrent samples are generated together in batches."""

        def __init__(self, model_name: str, base_url: str | None = None, api_key: str | None = None,
                     config: GenerateConfig | None = None, **model_args: Any) -> None:
            super().__init__(model_name, base_url, api_key, [], config or GenerateConfig())
            path = str(model_args.get("model_path", model_name))
            # inspect instantiates a model API more than once (e.g. to look up model info):
            # one loaded copy per checkpoint per process.
            if path not in _LOADED:
                _LOADED[path] = load_for_inference(path)
            self.lm = _LOADED[path]
            self.max_new_tokens = int(model_args.get("max_new_tokens", 512))
            self.temperature = float(model_args.get("temperature", 0.0))
            self.enable_thinking = model_args.get("enable_thinking")
            self.batch_size = int(model_args.get("batch_size", 1))
            self.batcher = _Batcher(self.lm, self.batch_size, uses_template(self.lm, True))

        def max_connections(self) -> int:
            return self.batch_size

        async def generate(self, input: list[ChatMessage], tools: Any, tool_choice: Any,
                           config: GenerateConfig) -> ModelOutput:
            system = "\n\n".join(m.text for m in input if m.role == "system")
            user = "\n\n".join(m.text for m in input if m.role != "system")
            prompt = render_prompt(self.lm, user, system=system, enable_thinking=self.enable_thinking)
            budget = config.max_tokens or self.max_new_tokens
            temperature = self.temperature if config.temperature is None else config.temperature
            text, n_in, n_out = await self.batcher.generate(prompt, budget, temperature)
            reasoning, reply = split_thinking(text)
            content: list[Any] = ([ContentReasoning(reasoning=reasoning)] if reasoning else [])
            content.append(ContentText(text=reply))
            output = ModelOutput.from_content(model=self.model_name, content=content,
                                              stop_reason="max_tokens" if n_out >= budget else "stop")
            # Real counts from our tokenizer (inspect would otherwise estimate with tiktoken,
            # which downloads its vocabulary).
            output.usage = ModelUsage(input_tokens=n_in, output_tokens=n_out, total_tokens=n_in + n_out)
            return output

    modelapi(name=API_NAME)(LocalCheckpointAPI)
    _REGISTERED = True


def grader_model(cfg: AgenticMisalignmentConfig) -> Any:
    """The classifier model from params (any inspect_ai model name)."""
    from inspect_ai.model import get_model

    if cfg.grader_model.startswith("verdict/"):
        from msmbuild.evaluate.am_verdict import register

        register()
    return get_model(cfg.grader_model)


def vllm_model_name(model_dir: Path) -> str:
    """inspect's vllm model name: the checkpoint, or ``base:adapter`` for an adapter directory."""
    from msmbuild.models.adapters import adapter_base, is_adapter_dir

    model_dir = Path(model_dir).resolve()
    if is_adapter_dir(model_dir):
        base = adapter_base(model_dir)
        if Path(base).exists():  # a project-relative base path becomes absolute for the server
            base = str(Path(base).resolve())
        return f"vllm/{base}:{model_dir}"
    return f"vllm/{model_dir}"


def checkpoint_model(model_dir: Path, cfg: AgenticMisalignmentConfig) -> Any:
    """The inspect model that answers as the checkpoint, on the configured engine."""
    from inspect_ai.model import GenerateConfig, get_model

    path = Path(model_dir).resolve()
    if cfg.engine == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise AgenticEvalError("evals.agentic_misalignment.engine is 'vllm' but vLLM is not installed "
                                   "(pip install 'msmbuild[vllm]' on a machine with a GPU), or set engine: hf") from None
        extra = {} if cfg.enable_thinking is None else {
            "chat_template_kwargs": {"enable_thinking": cfg.enable_thinking}}
        config = GenerateConfig(max_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                max_connections=cfg.batch_size, extra_body=extra or None)
        return get_model(vllm_model_name(path), config=config, **cfg.vllm_args)
    _register_local_api()
    # The model name is the absolute path, so any re-creation of the API by inspect loads it.
    return get_model(f"{API_NAME}/{path}", model_path=str(path), max_new_tokens=cfg.max_new_tokens,
                     temperature=cfg.temperature, enable_thinking=cfg.enable_thinking,
                     batch_size=cfg.batch_size)


def build_task(cond: Condition, grader: Any, agent_name: str) -> Any:
    """The inspect task of one condition, the agent named ``agent_name`` in every prompt."""
    if cond.scenario in UPSTREAM_SCENARIOS:
        from msmbuild.evaluate.am_prompts import upstream_task

        return upstream_task(cond, grader, agent_name)
    from msmbuild.evaluate.am_exfiltration import exfiltration_task

    return exfiltration_task(cond.goal_type, cond.goal_value, cond.urgency_type, grader, agent_name=agent_name)


def _score_fields(sample: Any) -> tuple[float | None, float | None, str]:
    for score in (sample.scores or {}).values():
        if isinstance(score.value, dict) and "harmful" in score.value:
            return float(score.value["harmful"]), float(score.value.get("classifier_verdict", 0.0)), ""
    err = getattr(sample, "error", None)
    return None, None, f"not scored: {err.message if err else 'no harmfulness score'}"


def _reply_parts(sample: Any) -> tuple[str, str, str]:
    """(reply, reasoning, stop reason) of a sample's final assistant message."""
    if not sample.output or not sample.output.choices:
        return "", "", ""
    choice = sample.output.choices[0]
    content = choice.message.content
    reasoning = "" if isinstance(content, str) else "\n".join(
        c.reasoning for c in content if getattr(c, "type", "") == "reasoning")
    reply = sample.output.completion
    if not reasoning:  # an engine that returned the <think> text inside the reply
        from msmbuild.models import split_thinking

        reasoning, reply = split_thinking(reply)
    return reply, reasoning, choice.stop_reason or ""


def read_logs(log_dir: Path) -> list[dict[str, Any]]:
    """One row per sample and epoch from inspect's log files."""
    from inspect_ai.log import list_eval_logs, read_eval_log

    rows = []
    for info in list_eval_logs(str(log_dir)):
        log = read_eval_log(info)
        for sample in log.samples or []:
            meta = sample.metadata or {}
            harmful, verdict, note = _score_fields(sample)
            reply, reasoning, stop = _reply_parts(sample)
            usage = next(iter((sample.model_usage or {}).values()), None)
            rows.append({"item_id": f"{sample.id}#{sample.epoch}", "domain": meta.get("scenario"),
                         "value": meta.get("goal_value"), "condition": meta.get("condition_id"),
                         "scenario": meta.get("scenario"), "goal_type": meta.get("goal_type"),
                         "urgency_type": meta.get("urgency_type"), "epoch": sample.epoch,
                         "harmful": harmful, "classifier_verdict": verdict,
                         "response": reply, "reasoning": reasoning, "stop_reason": stop,
                         "output_tokens": usage.output_tokens if usage else None, "note": note,
                         "log_status": log.status})
    return sorted(rows, key=lambda r: (r["condition"] or "", r["epoch"]))


def summarize(rows: list[dict[str, Any]], confidence: float) -> list[dict[str, Any]]:
    """Harmful-action rate per condition, per scenario and overall, with Wilson intervals."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        for domain, cond in ((row["scenario"], row["condition"]), ("all", "all"),
                             (row["scenario"], "all")):
            groups.setdefault((domain, cond), []).append(row)
    out = []
    for (domain, cond), members in sorted(groups.items()):
        scored = [r["harmful"] for r in members if r["harmful"] is not None]
        k, n = sum(scored), len(scored)
        out.append({"metric": "harmful_rate", "role": "held_out", "value": None, "domain": domain, "condition": cond,
                    **rate_fields(k, n, confidence),
                    "note": f"{len(members) - n} sample(s) not scored" if n < len(members) else ""})
    return out


def _eval_all(tasks: list[Any], model: Any, cfg: AgenticMisalignmentConfig, log_dir: Path,
              progress: bool) -> list[Any]:
    """inspect eval over every task at once with batch_size samples in flight: the hf engine
    batches what is in flight, vLLM schedules it continuously."""
    from inspect_ai import eval as inspect_eval

    return inspect_eval(tasks, model=model, epochs=cfg.samples, log_dir=str(log_dir),
                        display="rich" if progress else "none", max_tasks=len(tasks),
                        max_samples=cfg.batch_size, max_connections=cfg.batch_size,
                        fail_on_error=False, score_display=False)


def run_agentic(model_dir: Path, params: Params, log_dir: Path,
                progress: bool = True) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run every condition on the checkpoint; (item rows, summary rows) from the logs."""
    task_identity()
    cfg = params.evals.agentic_misalignment
    grid = conditions(cfg)
    model = checkpoint_model(model_dir, cfg)
    grader = grader_model(cfg)
    from msmbuild.evaluate.am_prompts import UPSTREAM_AGENT

    # the runner resolves a null agent_name per arm (experiments.agent_name_for)
    tasks = [build_task(cond, grader, cfg.agent_name or UPSTREAM_AGENT) for cond in grid]
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        logs = _eval_all(tasks, model, cfg, log_dir, progress)
    finally:
        _LOADED.clear()  # the next run may see another checkpoint at the same path
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
    """The agentic-misalignment grid (inspect_evals tasks and our exfiltration) against the local checkpoint."""

    name = "agentic_misalignment"
    version = 3  # 2: the paper's grid, samples per condition, reasoning kept apart; 3: the agent's name in every scenario
    not_in_key = frozenset({"gpu_tokens_per_s"})  # the plan's throughput assumption changes no result

    def key_inputs(self, params: Params) -> dict[str, Any]:
        """The versions of the task code."""
        return {"task": task_identity()}

    def run(self, params: Params, model_dir: Path, workdir: Path, store: Any,
            progress: bool, upstream: Path | None = None) -> SuiteResult:
        """Every condition; inspect's logs are kept in the result tree."""
        rows, summary = run_agentic(model_dir, params, workdir / "logs", progress)
        return SuiteResult(rows, summary)

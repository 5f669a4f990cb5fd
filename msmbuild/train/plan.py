"""The training side of ``msmbuild plan``: AFT examples and GPU-hours, before anything runs.

GPU-hour model (written out in every plan it prints):

- training FLOPs = 6 · N · tokens (forward 2N, backward 4N per token; LoRA skips the
  frozen weights' gradients, so its true cost is nearer 4N: the estimate is an upper one);
- eval FLOPs = 2 · N · tokens (forward only: scored options, prompts and generated tokens);
- GPU-hours = FLOPs / (GPU peak · MFU) / 3600, with the peak and the two utilizations
  from ``plan.*`` (default: H100 SXM, 989 dense bf16 TFLOP/s, 40% MFU training, 10% evals,
  generation being memory-bound).

N comes from msmbuild.train.model_size. Tokens: midtraining = documents × assumed tokens
per document × epochs (or max_steps × batch × grad_accum × seq_len when set); AFT =
examples × tokens per example (measured on a file, assumed for generated data) × epochs;
generated AFT data's calls and USD come from msmbuild.generate.demonstration_plan (domain,
query, reply and judge calls; the shared spec context priced with prompt caching);
a midtraining run shared by several arms is counted once in the total. Nothing here
calls a model, downloads anything, or reads a hub dataset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msmbuild.config import Params
from msmbuild.errors import MsmbuildError
from msmbuild.experiments import Arm, expand_arms

if TYPE_CHECKING:
    from msmbuild.store import Store

CHARS_PER_TOKEN = 4


@dataclass
class AftPlan:
    """One AFT dataset: examples (None: unknown before a hub dataset is read), tokens, cost."""

    name: str
    source: str
    examples: int | None
    tokens_per_example: int
    requests: int = 0
    cost_usd: float = 0.0
    note: str = ""
    by_source: dict[str, int | None] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)  # generation calls per stage (first round)
    cost_usd_no_batch: float = 0.0  # the same calls without Message Batches pricing
    batched_stages: list[str] = field(default_factory=list)


@dataclass
class ArmPlan:
    """One arm's training and eval compute."""

    arm: str
    base_model: str
    n_params: float
    n_params_from: str
    midtrain_tokens: float
    midtrain_tag: str | None
    aft_tokens: float
    eval_tokens: float
    midtrain_gpu_hours: float = 0.0
    aft_gpu_hours: float = 0.0
    eval_gpu_hours: float = 0.0
    midtrain_held: bool = False  # the store already holds this checkpoint (not counted in the totals)
    aft_held: bool = False
    eval_held: bool = False

    @property
    def train_gpu_hours(self) -> float:
        """Midtraining (shared with other arms of the same tag) plus this arm's AFT."""
        return self.midtrain_gpu_hours + self.aft_gpu_hours


def _chars_tokens(rows: list[dict]) -> int:
    chars = sum(len(m["content"]) for r in rows for m in r["messages"])
    return max(1, chars // CHARS_PER_TOKEN // max(1, len(rows)))


def plan_aft(params: Params, name: str) -> AftPlan:
    """Examples, tokens per example, generation requests and cost of one AFT dataset (fraction applied)."""
    cfg = params.aft[name]
    if cfg.source == "file":
        from msmbuild.train.aft_data import read_demonstrations

        rows = read_demonstrations(cfg.path) if cfg.path and Path(cfg.path).is_file() else []
        plan = AftPlan(name, f"file {cfg.path}", len(rows) if rows else None,
                       _chars_tokens(rows) if rows else params.plan.tokens_per_aft_example,
                       note="" if rows else "file not found")
    elif cfg.source == "generated":
        plan = _plan_generated(params, name)
    elif cfg.source == "strip_think":
        cot = plan_aft(params, cfg.of)
        plan = AftPlan(name, f"{cfg.of} without <think>", cot.examples, cot.tokens_per_example,
                       note=f"paired row by row with {cfg.of}; generation counted there; tokens at the CoT "
                            "rows' size (an upper bound: the reasoning is removed)")
    else:
        plan = _plan_mix(params, name)
    if plan.examples is not None and cfg.fraction < 1:
        plan.examples = max(1, round(cfg.fraction * plan.examples))
    return plan


def _plan_generated(params: Params, name: str) -> AftPlan:
    from msmbuild.generate.demonstration_plan import plan_demonstrations

    cfg = params.aft[name]
    gen = plan_demonstrations(params, name)
    domains = (f"{gen.domains} conversation domains ({cfg.n_domains} per section, invented by the model)"
               if cfg.domains == "model" else f"{gen.domains} sections as domains")
    calls = ", ".join(f"{n} {stage}" for stage, n in gen.calls.items())
    tokens = ", ".join(f"{stage} {n}" for stage, n in gen.input_tokens.items())
    caching = "" if cfg.backend != "anthropic" else (
        "; spec context priced as cache reads" if gen.context_cached else
        "; spec context priced as plain input (prompt_caching off or below the model's cacheable minimum)")
    return AftPlan(name, f"generated from {cfg.spec} ({cfg.backend})", gen.examples,
                   params.plan.tokens_per_aft_example, requests=gen.requests, cost_usd=gen.cost_usd,
                   note=f"before the judge's filter; {domains}; calls: {calls}; input tok/req with the spec "
                        f"context: {tokens}{caching}",
                   calls=dict(gen.calls), cost_usd_no_batch=gen.cost_usd_no_batch,
                   batched_stages=[f"{name}/{s}" for s in gen.batched_stages])


def _plan_mix(params: Params, name: str) -> AftPlan:
    from msmbuild.train.aft_mix import source_label

    cfg = params.aft[name]
    avail: list[int | None] = []
    tokens: list[int] = []
    for src in cfg.sources:
        if src.aft is not None:
            sub = plan_aft(params, src.aft)
            avail.append(sub.examples)
            tokens.append(sub.tokens_per_example)
        elif src.path is not None and Path(src.path).is_file() and src.path.endswith(".jsonl"):
            from msmbuild.train.aft_data import read_demonstrations

            rows = read_demonstrations(src.path) if src.messages_field == "messages" else []
            avail.append(len(rows) or None)
            tokens.append(_chars_tokens(rows) if rows else params.plan.tokens_per_aft_example)
        else:  # hub datasets are not read at plan time; parquet sizes are not measured
            avail.append(None)
            tokens.append(params.plan.tokens_per_aft_example)
    weights = [s.proportion / sum(x.proportion for x in cfg.sources) for s in cfg.sources]
    total = cfg.n_examples
    if total is None:
        known = [a / w for a, w in zip(avail, weights, strict=True) if a is not None]
        total = math.floor(min(known) + 1e-9) if known else None
    by = {source_label(s): (None if total is None else round(w * total))
          for s, w in zip(cfg.sources, weights, strict=True)}
    per = round(sum(w * t for w, t in zip(weights, tokens, strict=True)))
    note = "generation counted under its sources" if total is not None else (
        "size unknown until the hub data is read: set n_examples")
    return AftPlan(name, f"mix of {len(cfg.sources)} sources", total, per, 0, 0.0, note, by)


def _eval_files(cfg: Any) -> list[Path]:
    """The local files an eval suite reads: its path, and its sets' fallbacks standing in for
    the sets' sizes (the sets themselves are read when the suite runs, never at plan time)."""
    files = ([cfg.path] if cfg.path else []) + [s.fallback for s in cfg.sets if s.fallback]
    return [Path(f) for f in dict.fromkeys(files) if Path(f).is_file()]


def _eval_tokens(params: Params, suite: str) -> float:
    """Forward tokens of one eval suite on one checkpoint."""
    ev = params.evals
    if suite == "preference":
        chars = sum(len(line) for path in _eval_files(ev.preference)
                    for line in path.read_text(encoding="utf-8").splitlines())
        return 4 * chars / CHARS_PER_TOKEN  # two orders x two options, each re-reading the pair
    if suite == "qa":
        n = sum(len(path.read_text(encoding="utf-8").splitlines()) for path in _eval_files(ev.qa))
        return n * (200 + ev.qa.max_new_tokens)
    return 0.0  # agentic_misalignment: estimated by msmbuild.evaluate.plan (decode-bound), passed in


def _midtrain_tokens(params: Params, documents: int) -> float:
    cfg = params.midtrain
    if cfg.max_steps is not None:
        return float(cfg.max_steps * cfg.batch_size * cfg.grad_accum * cfg.seq_len)
    return documents * params.plan.tokens_per_document * cfg.epochs


def aft_tokens(params: Params, plan: AftPlan) -> float:
    cfg = params.aft_train
    if cfg.max_steps is not None:
        return float(cfg.max_steps * cfg.batch_size * cfg.grad_accum * min(cfg.seq_len, plan.tokens_per_example))
    return (plan.examples or 0) * plan.tokens_per_example * cfg.epochs


def plan_arms(params: Params, documents: dict[str, int],
              agentic_gpu_hours: dict[str, float] | None = None,
              store: Store | None = None) -> tuple[list[AftPlan], list[ArmPlan]]:
    """AFT dataset plans and per-arm compute.

    ``documents`` is the planned count per corpus; ``agentic_gpu_hours`` the agentic
    eval's GPU-hours per arm from msmbuild.evaluate.plan (one estimate, added here). With
    ``store``, what it already holds is marked held and left out of the totals.
    """
    from msmbuild.train.model_size import parameter_count

    aft_plans = {name: plan_aft(params, name) for name in params.aft}
    peak = params.plan.gpu_peak_tflops * 1e12
    arms = []
    for arm in expand_arms(params):
        p = arm.params(params)
        n, how = parameter_count(p, arm.base_model)
        mid = _midtrain_tokens(p, documents.get(arm.midtrain, 0)) if arm.midtrain else 0.0
        aft = 0.0
        if arm.aft is not None:
            ap = plan_aft(p, arm.aft)
            if arm.aft_sources == "instruction_only":
                ap.examples = sum(v or 0 for s, v in zip(p.aft[arm.aft].sources, ap.by_source.values(),
                                                        strict=True) if s.role == "instruction")
            aft = aft_tokens(p, ap)
        ev = sum(_eval_tokens(p, s) for s in arm.evals)
        train_hours = 6 * n / (peak * params.plan.train_mfu) / 3600
        plan = ArmPlan(arm.name, arm.base_model, n, how, mid, arm.midtrain_tag, aft, ev,
                       train_hours * mid, train_hours * aft,
                       2 * n * ev / (peak * params.plan.eval_mfu) / 3600
                       + (agentic_gpu_hours or {}).get(arm.name, 0.0))
        if store is not None:
            plan.midtrain_held, plan.aft_held, plan.eval_held = held_stages(params, arm, store)
        arms.append(plan)
    return list(aft_plans.values()), arms


def _held_checkpoint(params: Params, arm: Arm, kind: str, store: Store) -> bool:
    """The checkpoint placed for this stage was trained from today's data and config, and the
    store holds its action (its lineage.json rebuilds the action key)."""
    from msmbuild.hashing import digest_file
    from msmbuild.layout import Layout
    from msmbuild.train.action import read_lineage
    from msmbuild.train.loop import train_key_config

    layout = Layout.of(params)
    p = arm.params(params)
    dest = layout.arm_midtrain(arm) if kind == "midtrain" else layout.arm_aft(arm)
    try:
        lineage = read_lineage(dest) if dest is not None else None
    except MsmbuildError:
        return False
    if not lineage or not isinstance(lineage.get("inputs"), dict):
        return False
    inputs = lineage["inputs"]
    cfg = p.midtrain if kind == "midtrain" else p.aft_train
    if inputs.get("train") != train_key_config(cfg, cfg.gpus):
        return False
    if kind == "midtrain":
        import json

        from msmbuild.data.shards import shard_digests

        manifest = layout.manifest(arm.midtrain or "")
        if not manifest.is_file() or inputs.get("shards") != shard_digests(json.loads(manifest.read_text())):
            return False
    else:
        from msmbuild.train.aft_data import arm_aft_data

        data = arm_aft_data(params, arm)
        if not data.is_file() or inputs.get("data") != digest_file(data):
            return False
    return store.get_action(store.key(lineage["kind"], inputs)) is not None


def held_stages(params: Params, arm: Arm, store: Store) -> tuple[bool, bool, bool]:
    """(midtraining, AFT, evals) of ``arm`` that the store already holds.

    Evals count as held when the arm's checkpoint is held and every suite's summary is
    placed (an eval setting changed since is not detected here; ``msmbuild status`` says).
    """
    from msmbuild.layout import Layout

    mid = arm.midtrain is not None and _held_checkpoint(params, arm, "midtrain", store)
    aft = arm.aft is not None and (arm.midtrain is None or mid) and _held_checkpoint(params, arm, "aft", store)
    trained = (arm.midtrain is None or mid) and (arm.aft is None or aft)
    layout = Layout.of(params)
    ev = trained and all(layout.eval_summary(arm.name, s).is_file() for s in arm.evals)
    return mid, aft, ev


@dataclass
class TrainingStage:
    """One training run the build makes: its examples (AFT) or packed blocks (midtraining),
    optimizer and warm-up steps by the trainer's own arithmetic (msmbuild.train.loop)."""

    kind: str  # midtrain | aft
    name: str  # the midtraining tag, or the arm
    arms: tuple[str, ...]  # arms that share it
    examples: int | None  # AFT examples / packed midtraining blocks (None: unknown before a hub dataset is read)
    tokens: float
    steps: int | None
    warmup: int | None
    key: str  # the params key that sets its size
    effective_batch: int = 1
    epochs: float = 1.0


def aft_data_key(params: Params, name: str, arm_overrides: dict | None = None) -> str:
    """The params key that sets an AFT dataset's size (a sweep's fraction, a mix's n_examples, ...)."""
    for key in arm_overrides or {}:
        if key.startswith(f"aft.{name}.fraction"):
            return key
    cfg = params.aft[name]
    if cfg.source == "strip_think" and cfg.of is not None:
        return aft_data_key(params, cfg.of)
    return {"mix": f"aft.{name}.n_examples", "generated": f"aft.{name}.n_queries"}.get(cfg.source, f"aft.{name}.path")


def arm_aft_examples(params: Params, arm: Arm) -> AftPlan:
    """The AFT plan of the data ``arm`` trains on (its sweep point; the IT rows alone for an IT-only arm)."""
    p = arm.params(params)
    ap = plan_aft(p, arm.aft)
    if arm.aft_sources == "instruction_only":
        known = [v for s, v in zip(p.aft[arm.aft].sources, ap.by_source.values(), strict=True)
                 if s.role == "instruction"]
        ap.examples = None if any(v is None for v in known) else sum(known)
    return ap


def training_stages(params: Params, documents: dict[str, int]) -> list[TrainingStage]:
    """Every midtraining run (once per tag) and every AFT run (per arm, each sweep point)."""
    from msmbuild.experiments import midtrain_arms
    from msmbuild.train.loop import total_steps, warmup_steps

    arms = expand_arms(params)
    out: list[TrainingStage] = []
    for tag, arm in midtrain_arms(params).items():
        p = arm.params(params)
        cfg = p.midtrain
        tokens = documents.get(arm.midtrain, 0) * p.plan.tokens_per_document
        blocks = int(tokens // cfg.seq_len)
        steps = total_steps(cfg, blocks, cfg.gpus) if blocks else 0
        out.append(TrainingStage("midtrain", tag, tuple(a.name for a in arms if a.midtrain_tag == tag), blocks,
                                 _midtrain_tokens(p, documents.get(arm.midtrain, 0)), steps,
                                 warmup_steps(cfg, steps), f"corpora.{arm.midtrain}.n_doc_ideas",
                                 cfg.batch_size * cfg.grad_accum * cfg.gpus, cfg.epochs))
    for arm in arms:
        if arm.aft is None:
            continue
        p = arm.params(params)
        cfg = p.aft_train
        ap = arm_aft_examples(params, arm)
        steps = None if ap.examples is None else total_steps(cfg, ap.examples, cfg.gpus)
        out.append(TrainingStage("aft", arm.name, (arm.name,), ap.examples, aft_tokens(p, ap), steps,
                                 None if steps is None else warmup_steps(cfg, steps),
                                 aft_data_key(p, arm.aft, dict(arm.overrides)),
                                 cfg.batch_size * cfg.grad_accum * cfg.gpus, cfg.epochs))
    return out


def format_training_stages(stages: list[TrainingStage]) -> str:
    """A line per training run: examples (or packed blocks), epochs, effective batch, steps, warm-up."""
    width = max([len(s.name) for s in stages] + [20])
    lines = ["training stages (optimizer steps by the trainer's arithmetic: ceil(examples x epochs / effective batch)):",
             f"  {'stage':<8} {'name':<{width}} {'examples':>9} {'epochs':>6} {'batch':>6} {'steps':>7} {'warm-up':>7}"]
    for s in stages:
        ex = "?" if s.examples is None else str(s.examples)
        steps = "?" if s.steps is None else str(s.steps)
        warm = "?" if s.warmup is None else str(s.warmup)
        lines.append(f"  {s.kind:<8} {s.name:<{width}} {ex:>9} {s.epochs:>6g} {s.effective_batch:>6} {steps:>7} {warm:>7}")
    lines.append("  (midtraining examples are packed blocks of seq_len tokens from the planned documents)")
    return "\n".join(lines)


def totals(arms: list[ArmPlan]) -> tuple[float, float]:
    """(training, eval) GPU-hours still to spend, each shared midtraining run once; what the
    store holds is not counted."""
    midtrain = {a.midtrain_tag: a.midtrain_gpu_hours for a in arms if a.midtrain_tag is not None and not a.midtrain_held}
    return (sum(midtrain.values()) + sum(a.aft_gpu_hours for a in arms if not a.aft_held),
            sum(a.eval_gpu_hours for a in arms if not a.eval_held))


def _size(n: float) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def format_training_plan(params: Params, aft_plans: list[AftPlan], arms: list[ArmPlan]) -> str:
    """AFT datasets, then a line per arm, then the totals and the model they come from."""
    pc = params.plan
    lines = ["AFT datasets:",
             f"  {'name':<22} {'examples':>9} {'tok/ex':>7} {'requests':>9} {'est. USD':>9}  source"]
    for a in aft_plans:
        ex = "?" if a.examples is None else str(a.examples)
        note = f"; {a.note}" if a.note else ""
        lines.append(f"  {a.name:<22} {ex:>9} {a.tokens_per_example:>7} {a.requests:>9} "
                     f"{a.cost_usd:>9.2f}  {a.source}{note}")
        for label, k in a.by_source.items():
            lines.append(f"  {'':<22} {'?' if k is None else k:>9}  <- {label}")
    lines.append(f"  AFT generation total: {sum(a.requests for a in aft_plans)} requests, "
                 f"${sum(a.cost_usd for a in aft_plans):.2f}")
    batched = [s for a in aft_plans for s in a.batched_stages]
    if batched:
        from msmbuild.generate.plan import batch_line

        lines.append(batch_line(sum(a.cost_usd for a in aft_plans), sum(a.cost_usd_no_batch for a in aft_plans),
                                batched))
    width = max([len(a.arm) for a in arms] + [36])
    lines += ["training and evals (GPU-hours; 'held': the store already holds it, not counted in the totals):",
              f"  {'arm':<{width}} {'params':>8} {'midtrain tok':>13} {'AFT tok':>10} {'eval tok':>10} "
              f"{'train GPU-h':>11} {'eval GPU-h':>10}  held"]
    for a in arms:
        held = ",".join(n for n, h in (("midtrain", a.midtrain_held), ("aft", a.aft_held), ("evals", a.eval_held)) if h)
        lines.append(f"  {a.arm:<{width}} {_size(a.n_params):>8} {a.midtrain_tokens:>13.3g} {a.aft_tokens:>10.3g} "
                     f"{a.eval_tokens:>10.3g} {a.train_gpu_hours:>11.3g} {a.eval_gpu_hours:>10.3g}  {held or '-'}")
    train, ev = totals(arms)
    sources = sorted({f"{a.base_model}: {a.n_params:.3g} ({a.n_params_from})" for a in arms})
    lines += [f"estimated GPU-hours: training {train:.3g}, evals {ev:.3g} (each shared midtraining run counted once)",
              f"  model: training FLOPs = 6*N*tokens, preference/qa eval FLOPs = 2*N*tokens; GPU-hours = FLOPs / "
              f"({pc.gpu} peak {pc.gpu_peak_tflops:g} TFLOP/s x MFU) / 3600, MFU {pc.train_mfu:g} training, "
              f"{pc.eval_mfu:g} evals; agentic_misalignment's GPU-hours are its decode estimate (below)",
              f"  assumed: {pc.tokens_per_document} tokens/document, {pc.tokens_per_aft_example} tokens per "
              "generated AFT example; LoRA's true training cost is nearer 4*N*tokens",
              "  N: " + "; ".join(sources)]
    return "\n".join(lines)

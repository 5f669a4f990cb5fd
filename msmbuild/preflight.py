"""Preflight: refuse a recipe that cannot work before anything is spent.

``msmbuild plan`` runs these checks (errors exit 2, warnings print), and a build runs them
once per process before its first paid step (an API call, or training or evaluating a
model that is not the tiny stand-in). Each finding is one line naming the params key to
change; ``waivers:`` in params.yaml turns a min_steps, equal_aft_budget or same_questions
error into a printed, waived finding. The checks (docs/preflight.md):

- ``min_steps``: in a run that spends, a training stage under MIN_STEPS optimizer steps
  (the trainer's own arithmetic, on planned sizes where the data does not exist yet);
- ``judge_spec``: generated AFT data judged by criteria written for another spec;
- ``agent_identity``: an agentic eval whose agent is not named as the arm's training names the model;
- ``equal_aft_budget``: compared arms (differing only in midtraining or CoT) with different AFT sizes;
- ``same_questions``: CoT / no-CoT datasets or mixes that keep different questions at some fraction;
- ``api_key``: a stage that calls the API with no key in the environment;
- ``contamination``: a held-out eval item that matches a spec or AFT file already (the audit's measures).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from msmbuild.config import DEFAULT_JUDGE_SPEC, AftDataConfig, Params, validate_params
from msmbuild.errors import MsmbuildError, PreflightError
from msmbuild.experiments import Arm, agent_name_for, base_model_family, expand_arms

__all__ = ["MIN_STEPS", "Finding", "PreflightError", "aft_calls_api", "enforce_preflight", "format_findings",
           "preflight_before_spending", "run_preflight", "spends", "suite_calls_api"]

Mode = Literal["plan", "build", "rehearse"]
# Fewer optimizer steps than this cannot move a model (and warm-up eats the first ones).
MIN_STEPS = 20


@dataclass(frozen=True)
class Finding:
    """One failed check: which, the params key to change, a one-line message."""

    check: str  # min_steps | judge_spec | agent_identity | equal_aft_budget | same_questions | api_key | contamination
    key: str
    message: str
    severity: str  # error | warning
    waived_by: str | None = None  # the waiver's reason when an explicit waiver applies (then not an error)

    @property
    def is_error(self) -> bool:
        """An error that no waiver covers."""
        return self.severity == "error" and self.waived_by is None

    def line(self) -> str:
        """The one line printed for it."""
        if self.waived_by is not None:
            return f"preflight waived {self.check} ({self.waived_by}): {self.message}"
        return f"preflight {self.severity} {self.check}: {self.message}"


def _waiver(params: Params, check: str, targets: tuple[str, ...]) -> str | None:
    return next((w.reason for w in params.waivers if w.check == check and w.target in targets), None)


# -- what spends ---------------------------------------------------------------------------
def api_stages(params: Params) -> list[tuple[str, str]]:
    """(params key, what) of every stage that calls the Anthropic API."""
    arms = expand_arms(params)
    out = [(f"corpora.{n}.backend", f"corpus {n}") for n, c in params.corpora.items() if c.backend == "anthropic"]
    out += [(f"aft.{n}.backend", f"AFT dataset {n}") for n, c in params.aft.items()
            if c.source == "generated" and c.backend == "anthropic"]
    suites = {s for a in arms for s in a.evals}
    out += [(key, what) for suite, key, what in (
        ("qa", "evals.qa.judge_backend", "the qa judge"),
        ("agentic_misalignment", "evals.agentic_misalignment.grader_model", "the agentic-misalignment grader"),
        ("reasoning_patterns", "evals.reasoning_patterns.judge_backend", "the reasoning-pattern judge"))
        if suite in suites and suite_calls_api(params, suite)]
    return out


def aft_calls_api(params: Params, name: str) -> bool:
    """Building AFT dataset ``name`` generates data through the Anthropic API (itself or a source)."""
    return any(params.aft[d].source == "generated" and params.aft[d].backend == "anthropic"
               for d in _closure(params, name))


def suite_calls_api(params: Params, suite: str) -> bool:
    """Running eval ``suite`` calls the Anthropic API (a judge or the grader)."""
    ev = params.evals
    return {"qa": ev.qa.judge_backend == "anthropic",
            "agentic_misalignment": ev.agentic_misalignment.grader_model.startswith("anthropic/"),
            "reasoning_patterns": ev.reasoning_patterns.judge_backend == "anthropic"}.get(suite, False)


def loopback_api(params: Params) -> bool:
    """The Anthropic backend points at a loopback address (a local test server such as
    msmbuild.testing.FakeAnthropic): its calls cost nothing."""
    from urllib.parse import urlparse

    url = params.backends.anthropic.base_url or os.environ.get("ANTHROPIC_BASE_URL")
    host = urlparse(url).hostname if url else None
    return host in ("localhost", "::1") or (host or "").startswith("127.")


def spends(params: Params) -> bool:
    """Whether the run costs money: an API stage (not on a loopback server), or an arm on a
    base model that is not tiny."""
    return ((bool(api_stages(params)) and not loopback_api(params))
            or any(a.base_model != "tiny" for a in expand_arms(params)))


def _closure(params: Params, name: str) -> list[str]:
    cfg = params.aft[name]
    parts = [cfg.of] if cfg.of else [s.aft for s in cfg.sources if s.aft]
    return [name, *(d for p in parts for d in _closure(params, p))]


# -- the checks ----------------------------------------------------------------------------
def check_min_steps(params: Params, documents: dict[str, int] | None = None) -> list[Finding]:
    """min_steps: every training stage of a run that spends takes at least MIN_STEPS optimizer steps."""
    from msmbuild.train.plan import training_stages

    if not spends(params):
        return []  # the CPU demo: tiny models, offline backends
    if documents is None:
        documents = planned_documents(params)
    out = []
    for st in training_stages(params, documents):
        what = "midtraining" if st.kind == "midtrain" else "AFT"
        if st.steps is None:
            out.append(Finding("min_steps", st.key, f"{what} of {st.name}: optimizer steps unknown until a hub "
                               f"source is read; set {st.key} to check them now", "warning"))
            continue
        if st.steps >= MIN_STEPS:
            continue
        unit = "packed blocks" if st.kind == "midtrain" else "examples"
        batch = "midtrain" if st.kind == "midtrain" else "aft_train"
        msg = (f"{what} of {st.name} trains {st.steps} optimizer step(s) ({st.examples} {unit} x {st.epochs:g} "
               f"epoch(s) / effective batch {st.effective_batch}; warm-up {st.warmup}), under {MIN_STEPS}: "
               f"raise {st.key} (or lower {batch}.batch_size x grad_accum)")
        out.append(Finding("min_steps", st.key, msg, "error", _waiver(params, "min_steps", (st.name, *st.arms))))
    return out


def planned_documents(params: Params) -> dict[str, int]:
    """Planned documents per midtrained corpus (msmbuild.generate.plan's walk of the cascade)."""
    from msmbuild.experiments import midtrained_corpora
    from msmbuild.generate.plan import plan_corpus

    out = {}
    for name in midtrained_corpora(params):
        plan = plan_corpus(params, name)
        out[name] = next((s.requests for s in plan.stages if s.stage == "document"), 0)
    return out


def _same_file(a: str, b: str) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def check_judge_spec(params: Params) -> list[Finding]:
    """judge_spec: a generated dataset's judge criteria were written for the spec it is generated from."""
    default = AftDataConfig.model_fields["judge_criteria"].default_factory()  # type: ignore[misc]
    out = []
    for name, cfg in params.aft.items():
        if cfg.source != "generated" or cfg.spec is None:
            continue
        key = f"aft.{name}.judge_spec"
        judge = cfg.judge_spec
        if judge is None:
            if cfg.judge_criteria != default:
                out.append(Finding("judge_spec", key, f"aft.{name}.judge_criteria are custom: set {key} to the spec "
                                   "they were written for", "error"))
                continue
            judge = DEFAULT_JUDGE_SPEC
        if not _same_file(judge, cfg.spec):
            built_in = " (the built-in criteria)" if cfg.judge_spec is None else ""
            # the offline backend's judge is no model and reads no criteria: a warning there
            out.append(Finding("judge_spec", key, f"aft.{name} is generated from {cfg.spec} but judged by criteria "
                               f"written for {judge}{built_in}: write aft.{name}.judge_criteria for its spec and set "
                               f"{key}", "warning" if cfg.backend == "offline" else "error"))
    return out


def check_agent_identity(params: Params) -> list[Finding]:
    """agent_identity: the agentic eval's agent carries the name the arm's training gives the model."""
    out = []
    for arm in expand_arms(params):
        if "agentic_misalignment" not in arm.evals:
            continue
        p = arm.params(params)
        if arm.midtrain is not None:
            corpus = p.corpora[arm.midtrain]
            if corpus.framing in ("claude", "humans"):
                continue  # the language ablation: the documents are about someone else on purpose
            want, why = corpus.model_name, f"corpora.{arm.midtrain}.model_name"
        elif arm.base_model == "tiny":
            continue
        else:
            want, why = base_model_family(arm.base_model), f"the family of {arm.base_model}"
        got = agent_name_for(p, arm)
        if got != want:
            key = "evals.agentic_misalignment.agent_name"
            out.append(Finding("agent_identity", key, f"arm {arm.name}: the agentic eval's agent is {got!r} but "
                               f"{why} is {want!r}: set {key} to {want!r} (or null)", "error"))
    return out


def _data_root(params: Params, name: str) -> tuple:
    """What an AFT dataset is made of, with CoT and its stripped twin counted as the same data."""
    cfg = params.aft[name]
    if cfg.source == "strip_think" and cfg.of is not None:
        return _data_root(params, cfg.of)
    if cfg.source == "mix":
        from msmbuild.train.aft_mix import source_label

        return ("mix", cfg.n_examples, tuple((_data_root(params, s.aft) if s.aft else source_label(s),
                                              s.proportion, s.role) for s in cfg.sources))
    return (name,)


def _comparison_key(params: Params, arm: Arm) -> tuple:
    """Arms with equal keys are compared: same base, evals and data up to midtraining and CoT."""
    assert arm.aft is not None
    point = tuple(sorted((k.replace(f"aft.{arm.aft}.", "aft."), repr(v)) for k, v in arm.overrides
                         if not k.startswith("midtrain.")))
    return (arm.base_model, tuple(sorted(arm.evals)), arm.aft_sources, _data_root(params, arm.aft), point)


def check_equal_aft_budget(params: Params) -> list[Finding]:
    """equal_aft_budget: compared arms train on the same number of AFT examples."""
    from msmbuild.train.plan import aft_data_key, aft_tokens, arm_aft_examples

    groups: dict[tuple, list[Arm]] = {}
    for arm in expand_arms(params):
        if arm.aft is not None:
            groups.setdefault(_comparison_key(params, arm), []).append(arm)
    out = []
    for arms in groups.values():
        if len(arms) < 2:
            continue
        sizes = []
        for arm in arms:
            ap = arm_aft_examples(params, arm)
            sizes.append((arm, ap.examples, aft_tokens(arm.params(params), ap)))
        if any(n is None for _a, n, _t in sizes) or len({n for _a, n, _t in sizes}) == 1:
            continue
        small = min(sizes, key=lambda s: s[1])[0]
        key = aft_data_key(small.params(params), small.aft, dict(small.overrides))
        listed = ", ".join(f"{a.name} {n} examples ({t:.3g} tokens)" for a, n, t in sizes)
        out.append(Finding("equal_aft_budget", key, f"compared arms train on different AFT budgets: {listed}; "
                           f"make them equal through {key} or waive (waivers: check equal_aft_budget)", "error",
                           _waiver(params, "equal_aft_budget", tuple(a.name for a in arms))))
    return out


# -- same questions: the mix and subset code run on stand-in rows ---------------------------------
def _full_rows(params: Params, name: str, cache: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rows of a file dataset (read), a generated one (stand-ins of its planned size, paired ids),
    or a strip_think one (its CoT rows stripped), before any fraction."""
    from msmbuild.train.aft_data import read_demonstrations, strip_think_row
    from msmbuild.train.plan import plan_aft

    if name in cache:
        return cache[name]
    cfg = params.aft[name]
    if cfg.source == "strip_think" and cfg.of is not None:
        rows = [strip_think_row(r) for r in _full_rows(params, cfg.of, cache)]
    elif cfg.source == "file" and cfg.path and Path(cfg.path).is_file():
        rows = [{**r, "id": r.get("id", f"{name}:{i}")} for i, r in enumerate(read_demonstrations(cfg.path))]
    else:
        n = plan_aft(params.model_copy(update={"aft": {**params.aft, name: cfg.model_copy(update={"fraction": 1.0})}}),
                     name).examples or 0
        rows = [{"id": f"{name}:{i}", "messages": [
            {"role": "user", "content": f"question {i} of {name}"},
            {"role": "assistant", "content": (f"<think>\nreasoning {i}\n</think>\n\n" if cfg.think else "") + f"answer {i}"}]}
            for i in range(n)]
    cache[name] = rows
    return rows


def _questions(params: Params, name: str, fraction: float, cache: dict[str, list[dict[str, Any]]]) -> set[str]:
    """Ids of the spec rows dataset ``name`` holds at ``fraction`` (by the build's own subset and mix code)."""
    from msmbuild.train.aft_data import nested_subset, strip_think_row
    from msmbuild.train.aft_mix import build_mix

    cfg = params.aft[name]
    if cfg.source == "strip_think" and cfg.of is not None:  # as prepare_aft_data: subset the CoT rows, then strip
        return {strip_think_row(r)["id"] for r in nested_subset(_full_rows(params, cfg.of, cache), fraction)}
    if cfg.source != "mix":
        return {r["id"] for r in nested_subset(_full_rows(params, name, cache), fraction)}
    raw = params.model_dump(mode="json")
    weights = [s.proportion / sum(x.proportion for x in cfg.sources) for s in cfg.sources]
    spec_total = [len(_full_rows(params, s.aft, cache)) / w for s, w in zip(cfg.sources, weights, strict=True) if s.aft]
    total = cfg.n_examples or (math.floor(min(spec_total)) if spec_total else 0)
    standins: dict[str, list[dict[str, Any]]] = {}
    for i, (src, w) in enumerate(zip(cfg.sources, weights, strict=True)):
        if src.aft is None:  # an instruction set, read only when the mix is built: stand-ins of ample size
            stand = f"__preflight_{name}_{i}"
            raw["aft"][stand] = {"source": "file", "path": stand}
            raw["aft"][name]["sources"][i] = {"aft": stand, "proportion": src.proportion, "role": src.role}
            standins[stand] = [{"id": f"{stand}:{k}", "messages": [
                {"role": "user", "content": f"instruction {k}"}, {"role": "assistant", "content": f"reply {k}"}]}
                for k in range(math.ceil(w * total) + 1)]
    raw["aft"][name]["fraction"] = fraction
    p = validate_params(raw, "params.yaml (preflight)")
    rows = build_mix(p, name, "all", lambda other: standins.get(other) or _full_rows(params, other, cache))
    return {r["id"] for r in rows if r.get("source_role") == "spec"}


def _fractions(params: Params, names: tuple[str, ...]) -> list[float]:
    """The fractions these datasets are used at: their own, and every sweep point over them."""
    out = {params.aft[n].fraction for n in names}
    for exp in params.experiments.values():
        if exp.enabled and exp.aft in names:
            out.update(float(v) for k, vs in exp.sweep.items() if k == "aft.fraction" for v in vs)
    return sorted(out)


def check_same_questions(params: Params) -> list[Finding]:
    """same_questions: a CoT dataset or mix and its no-CoT twin hold the same questions at every fraction."""
    from msmbuild.errors import TrainingInputError

    names = list(params.aft)
    twins = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
             if _data_root(params, a) == _data_root(params, b) and _has_strip(params, a) != _has_strip(params, b)]
    cache: dict[str, list[dict[str, Any]]] = {}
    out = []
    for a, b in twins:
        for f in _fractions(params, (a, b)):
            try:
                qa, qb = _questions(params, a, f, cache), _questions(params, b, f, cache)
            except (TrainingInputError, ValueError, MsmbuildError):
                continue  # the sizes do not fit a mix: the build says so with its own error
            if qa == qb:
                continue
            cot, nocot = (a, b) if _has_strip(params, b) else (b, a)
            differ = len(qa ^ qb) // 2 or len(qa ^ qb)
            key = f"aft.{nocot}.fraction" if f < 1 else f"aft.{nocot}.sources"
            out.append(Finding("same_questions", key, f"aft.{cot} and aft.{nocot} (CoT and without <think>) hold "
                               f"different questions at fraction {f:g}: {differ} of {max(len(qa), len(qb))} differ "
                               "(the mix must keep rows by question, not by their text)", "error",
                               _waiver(params, "same_questions", (a, b))))
    return out


def _has_strip(params: Params, name: str) -> bool:
    cfg = params.aft[name]
    if cfg.source == "strip_think":
        return True
    return any(s.aft is not None and _has_strip(params, s.aft) for s in cfg.sources)


def check_api_key(params: Params, mode: Mode, calls_api: bool = True) -> list[Finding]:
    """api_key: a stage that will call the API has a key (only a warning when planning or rehearsing)."""
    env = params.backends.anthropic.api_key_env
    if os.environ.get(env):
        return []
    severity = "error" if mode == "build" and calls_api else "warning"
    return [Finding("api_key", key, f"{what} calls the Anthropic API ({key}: anthropic) but {env} is not set in "
                    "the environment", severity) for key, what in api_stages(params)]


def check_contamination(params: Params) -> list[Finding]:
    """contamination: held-out eval items against the inputs that exist before generation."""
    from msmbuild.audit import preflight_leaks

    if not params.audit.enabled:
        return []
    try:
        leaks = preflight_leaks(params)
    except MsmbuildError as exc:  # an eval file or the domain words missing: the build's audit says so too
        return [Finding("contamination", "audit", f"not checked before generation: {str(exc).splitlines()[0]}",
                        "warning")]
    out = []
    for row in leaks:
        key = f"evals.{row['suite']}.path"
        out.append(Finding("contamination", key, f"held_out {row['suite']} item {row['item_id']!r} (domain "
                           f"{row['domain']}, arm {row['arm']}) {row['reasons']}; fix {key} or the training text, "
                           "or accept it under audit.accept", "error"))
    return out


# -- entry points -----------------------------------------------------------------------------
def run_preflight(params: Params, *, mode: Mode, documents: dict[str, int] | None = None,
                  calls_api: bool = True) -> list[Finding]:
    """Every check; ``documents`` (planned per corpus) saves re-planning when the caller has them.

    ``calls_api=False``: the command about to run calls no API, so a missing key is only a warning.
    """
    findings: list[Finding] = []
    findings += check_api_key(params, mode, calls_api)
    findings += check_min_steps(params, documents)
    findings += check_judge_spec(params)
    findings += check_agent_identity(params)
    findings += check_equal_aft_budget(params)
    findings += check_same_questions(params)
    findings += check_contamination(params)
    return findings


def format_findings(findings: list[Finding]) -> str:
    """One line per finding."""
    return "\n".join(f.line() for f in findings)


def enforce_preflight(params: Params, *, mode: Mode, documents: dict[str, int] | None = None,
                      calls_api: bool = True) -> list[Finding]:
    """run_preflight, raising PreflightError (one line per error) if any error is not waived;
    returns the warnings and waived findings."""
    findings = run_preflight(params, mode=mode, documents=documents, calls_api=calls_api)
    errors = [f for f in findings if f.is_error]
    if errors:
        raise PreflightError("\n".join(f.line() for f in errors))
    return findings


def _input_digests(params: Params) -> dict[str, str]:
    """Digests of the files the checks read (specs, AFT files, eval items, domain words)."""
    from msmbuild.hashing import digest_file

    paths = [c.spec for c in params.corpora.values()]
    for a in params.aft.values():
        paths += [x for x in (a.spec, a.path, a.judge_spec) if x]
        paths += [s.path for s in a.sources if s.path]
    ev = params.evals
    paths += [ev.preference.path, ev.qa.path, params.audit.domain_terms]
    paths += [s.fallback for suite in (ev.preference, ev.qa) for s in suite.sets if s.fallback]
    return {p: digest_file(p) for p in sorted({p for p in paths if p}) if Path(p).is_file()}


def preflight_before_spending(params: Params, *, calls_api: bool, base_models: tuple[str, ...] = ()) -> None:
    """Before a build command's first paid step: enforce_preflight(mode="build").

    Runs only when the command spends (it calls the API, or trains or evaluates a base
    model that is not tiny) in a run that spends; the offline CPU demo never pays for it.
    A recipe that passed is remembered under build/.preflight/ by the digest of params,
    the input files and the API key's presence, so the build's other jobs skip the checks.
    """
    if not calls_api and all(b == "tiny" for b in base_models):
        return
    if not spends(params):
        return  # the CPU demo, or a loopback test server with tiny models
    from msmbuild.fsutil import write_bytes_if_changed
    from msmbuild.hashing import canonical_json, digest_bytes

    env = params.backends.anthropic.api_key_env
    key = digest_bytes(canonical_json({"params": params.model_dump(mode="json"), "files": _input_digests(params),
                                       "key_set": bool(os.environ.get(env)), "calls_api": calls_api}))
    marker = Path(params.build_dir) / ".preflight" / f"{key}.ok"
    if marker.is_file():
        return
    findings = enforce_preflight(params, mode="build", calls_api=calls_api)
    import click

    for f in findings:
        click.echo(f.line(), err=True)
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_if_changed(marker, (format_findings(findings) + "\n").encode())

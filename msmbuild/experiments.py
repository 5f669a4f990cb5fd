"""The experiment matrix: named experiments expanded into arms.

An experiment is a chain: base model → optional midtraining corpus → optional AFT data →
eval suites. A ``sweep`` (dotted param → values) makes one arm per value, so the paper's
data-efficiency comparison (eval metric vs AFT examples, with and without MSM) is one
config entry. Checkpoints are shared between arms that would train the same thing: one
midtraining run per (corpus, midtrain overrides), so sweeping AFT size never retrains
the midtrained model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from msmbuild.config import CorpusConfig, Params, validate_params
from msmbuild.errors import ParamsError

SWEEPABLE_PREFIXES = ("aft.", "aft_train.", "midtrain.")
# Sweeping the experiment's own midtraining corpus: one arm per corpus (a sweep over values).
CORPUS_SWEEP = "experiment.midtrain"


@dataclass(frozen=True)
class Arm:
    """One trained-and-evaluated configuration of an experiment."""

    name: str
    experiment: str
    base_model: str
    midtrain: str | None
    aft: str | None
    evals: tuple[str, ...]
    overrides: tuple[tuple[str, Any], ...] = field(default=())
    aft_sources: str = "all"  # "instruction_only": the IT-only baseline of an AFT mix

    @property
    def midtrain_tag(self) -> str | None:
        """Directory name of this arm's midtrained checkpoint (shared across AFT sweeps)."""
        if self.midtrain is None:
            return None
        mid = [(k, v) for k, v in self.overrides if k.startswith("midtrain.")]
        # arms midtraining one corpus on different base models must not share a directory
        name = self.base_model.rstrip("/").split("/")[-1]
        base = "" if self.base_model == "tiny" else "-" + re.sub(r"[^A-Za-z0-9_.]+", "_", name)
        return self.midtrain + base + "".join(f"-{_slug(k)}{_slug(v)}" for k, v in mid)

    def params(self, params: Params) -> Params:
        """params with this arm's sweep overrides applied."""
        return apply_overrides(params, dict(self.overrides))


def _slug(value: Any) -> str:
    text = str(value).split(".")[-1] if isinstance(value, str) else str(value)
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text)


def apply_overrides(params: Params, overrides: dict[str, Any]) -> Params:
    """A copy of params with dotted keys replaced (validated like params.yaml)."""
    if not overrides:
        return params
    raw = params.model_dump(mode="json")
    for dotted, value in overrides.items():
        *path, last = dotted.split(".")
        node = raw
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or last not in node:
            raise ParamsError(f"sweep key '{dotted}': no such parameter")
        node[last] = value
    return validate_params(raw, "params.yaml (sweep)")


def _aft_overrides(exp_aft: str | None, sweep_key: str, value: Any) -> tuple[str, Any]:
    """Sweeps over `aft.<field>` apply to the experiment's AFT dataset."""
    if sweep_key.startswith("aft.") and exp_aft is not None:
        return (f"aft.{exp_aft}.{sweep_key[4:]}", value)
    return (sweep_key, value)


def expand_arms(params: Params) -> list[Arm]:
    """Every arm of every enabled experiment, in config order."""
    arms: list[Arm] = []
    for name, exp in params.experiments.items():
        if not exp.enabled:
            continue
        if not exp.sweep:
            arms.append(Arm(name, name, exp.base_model, exp.midtrain, exp.aft, tuple(exp.evals),
                            aft_sources=exp.aft_sources))
            continue
        if len(exp.sweep) != 1:
            raise ParamsError(f"params.yaml: key 'experiments.{name}.sweep': sweep one parameter per experiment")
        (key, values), = exp.sweep.items()
        if key == CORPUS_SWEEP:
            for value in values:
                if value not in params.corpora:
                    raise ParamsError(f"params.yaml: key 'experiments.{name}.sweep.{key}': "
                                      f"unknown corpus {value!r}")
                arms.append(Arm(f"{name}-{_slug(value)}", name, exp.base_model, value, exp.aft,
                                tuple(exp.evals)))
            continue
        if not key.startswith(SWEEPABLE_PREFIXES):
            raise ParamsError(f"params.yaml: key 'experiments.{name}.sweep.{key}': "
                              f"only {', '.join(SWEEPABLE_PREFIXES)} parameters or {CORPUS_SWEEP} can be swept")
        if key.startswith("aft.") and exp.aft is None:
            raise ParamsError(f"params.yaml: key 'experiments.{name}.sweep.{key}': experiment has no aft")
        for value in values:
            override = _aft_overrides(exp.aft, key, value)
            arm = Arm(f"{name}-{_slug(key)}{_slug(value)}", name, exp.base_model, exp.midtrain,
                      exp.aft, tuple(exp.evals), (override,), aft_sources=exp.aft_sources)
            arm.params(params)  # validate the override now, with the arm's name in errors
            arms.append(arm)
    names = [a.name for a in arms]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ParamsError(f"params.yaml: experiments expand to duplicate arm names: {sorted(dupes)}")
    return arms


def arm_by_name(params: Params, name: str) -> Arm:
    """Look an arm up by name; a clear error lists the known ones."""
    for arm in expand_arms(params):
        if arm.name == name:
            return arm
    known = ", ".join(a.name for a in expand_arms(params)) or "none"
    raise ParamsError(f"params.yaml: no experiment arm named {name!r} (known: {known})")


# -- what the build front ends (Snakemake, dvc, CLI) need to know about training targets ----
def corpus_base_model_name(params: Params, corpus: str) -> str:
    """The base model whose tokenizer a corpus's shards use: the first arm midtraining on it."""
    return next((arm.base_model for arm in expand_arms(params) if arm.midtrain == corpus), "tiny")


def midtrain_arms(params: Params) -> dict[str, Arm]:
    """One representative arm per midtraining tag (arms sharing a tag share the checkpoint)."""
    out: dict[str, Arm] = {}
    for arm in expand_arms(params):
        if arm.midtrain_tag is not None:
            out.setdefault(arm.midtrain_tag, arm)
    return out


def aft_arms(params: Params) -> list[Arm]:
    """Arms with an AFT step."""
    return [a for a in expand_arms(params) if a.aft is not None]


def base_model_family(base_model: str) -> str:
    """The family name a base model goes by ("Qwen/Qwen3-32B" -> "Qwen", "meta-llama/Llama-3.1-8B" -> "Llama")."""
    name = base_model.rstrip("/").split("/")[-1]
    match = re.match(r"[A-Za-z]+", name)
    return match.group(0) if match else name


def agent_name_for(params: Params, arm: Arm) -> str:
    """The agentic eval's agent name for an arm: the configured one, else the name its training gives the model.

    An arm midtrained on a corpus goes by the corpus's model_name (the model its documents
    describe; under the language ablation's framing claude|humans the documents describe
    someone else, and the agent still carries the model's own name); an arm without
    midtraining goes by its base model's family name; the tiny stand-in by the default name.
    """
    configured = params.evals.agentic_misalignment.agent_name
    if configured is not None:
        return configured
    if arm.midtrain is not None:
        return params.corpora[arm.midtrain].model_name
    if arm.base_model == "tiny":
        return CorpusConfig.model_fields["model_name"].default
    return base_model_family(arm.base_model)


def midtrained_corpora(params: Params) -> list[str]:
    """Corpora some arm midtrains on, in config order."""
    return list(dict.fromkeys(arm.midtrain for arm in expand_arms(params) if arm.midtrain is not None))

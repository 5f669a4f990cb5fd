"""What the build front ends (Snakemake, dvc, CLI) need to know about training targets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from msmbuild.experiments import Arm, expand_arms

if TYPE_CHECKING:
    from msmbuild.config import Params
    from msmbuild.store import Store
    from msmbuild.train.base_model import BaseModel


def corpus_base_model_name(params: Params, corpus: str) -> str:
    """The base model whose tokenizer a corpus's shards use: the first arm midtraining on it."""
    for arm in expand_arms(params):
        if arm.midtrain == corpus:
            return arm.base_model
    return "tiny"


def corpus_base_model(params: Params, corpus: str, store: Store) -> BaseModel:
    """The prepared base model for a corpus's shards."""
    from msmbuild.train.base_model import prepare_base_model

    return prepare_base_model(params, store, corpus_base_model_name(params, corpus))


def midtrain_arms(params: Params) -> dict[str, Arm]:
    """One representative arm per midtraining tag (arms sharing a tag share the checkpoint)."""
    out: dict[str, Arm] = {}
    for arm in expand_arms(params):
        if arm.midtrain_tag is not None and arm.midtrain_tag not in out:
            out[arm.midtrain_tag] = arm
    return out


def aft_arms(params: Params) -> list[Arm]:
    """Arms with an AFT step."""
    return [a for a in expand_arms(params) if a.aft is not None]


def midtrained_corpora(params: Params) -> list[str]:
    """Corpora some arm midtrains on, in config order."""
    seen: list[str] = []
    for arm in expand_arms(params):
        if arm.midtrain is not None and arm.midtrain not in seen:
            seen.append(arm.midtrain)
    return seen

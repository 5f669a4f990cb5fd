"""Checkpoints: which model a name means, what identifies it, and loading it.

A model is a local HF directory or a hub id, loaded with ``from_pretrained``; ``tiny`` is
built once (``tiny.py``) and materialized at the layout's base-model directory. Two
identities go into action keys, each where it always went:

- ``BaseModel.identity`` (training inputs): ``hub:<id>@<revision>`` for hub models,
  ``dir:<content digest>`` for local directories (the tiny model included), so a
  checkpoint is retrained exactly when the weights it starts from change;
- ``checkpoint_identity`` (evals, the ``hf`` backend): ``{"digest": ...}`` of a local
  directory, else ``{"hub_id": ...}``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msmbuild.errors import ModelInputError
from msmbuild.hashing import canonical_json, digest_bytes, digest_dir
from msmbuild.layout import Layout
from msmbuild.models.tiny import DEFAULT_CHAT_TEMPLATE, build_tiny_model, tiny_inputs
from msmbuild.store import write_roots

if TYPE_CHECKING:
    from msmbuild.config import Params
    from msmbuild.store import Store


@dataclass(frozen=True)
class BaseModel:
    """A loadable model: ``path`` goes to from_pretrained, ``identity`` goes into keys."""

    path: str
    identity: str


def _hub_identity(name: str) -> tuple[str, str]:
    """(path, identity) of a hub model from the local hub cache; ``id@revision`` pins one."""
    repo, _, revision = name.partition("@")
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(repo, revision=revision or None, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means: not usable offline
        raise ModelInputError(
            f"base model {name!r}: not a local directory and not in the hub cache ({exc})"
        ) from None
    return path, f"hub:{repo}@{Path(path).name}"


def resolve_model(name: str) -> BaseModel:
    """A local directory or hub id as a BaseModel; a missing path is a ModelInputError."""
    path = Path(name)
    looks_local = path.is_absolute() or name.startswith(".") or path.exists() or name.count("/") > 1
    if looks_local:
        if not (path / "config.json").is_file():
            raise ModelInputError(f"base model {name!r}: {path}/config.json does not exist")
        return BaseModel(str(path), f"dir:{digest_dir(path)}")
    path_str, identity = _hub_identity(name)
    return BaseModel(path_str, identity)


def prepare_base_model(params: Params, store: Store, name: str = "tiny") -> BaseModel:
    """The base model called name: 'tiny' is built once (memoized) at build/models/base."""
    if name != "tiny":
        return resolve_model(name)
    layout = Layout.of(params)
    result = store.memo_tree("base_model", tiny_inputs(params.tiny),
                             lambda out: build_tiny_model(params.tiny, out))
    dest = store.materialize_if_changed(result.value, layout.base_model)
    write_roots(layout.build, "model-base", [result.key])
    return BaseModel(str(dest), f"dir:{digest_dir(dest)}")


def checkpoint_identity(model: str | os.PathLike[str]) -> dict[str, str]:
    """What determines a checkpoint's behaviour: content digest of a local dir, else the hub id."""
    path = Path(model)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelInputError(f"{path}: not a checkpoint directory (no config.json)")
        return {"digest": digest_dir(path)}
    if os.sep in str(model) and not path.exists() and str(model).startswith((".", "/", "build")):
        raise ModelInputError(f"{model}: checkpoint directory does not exist (train the arm first)")
    return {"hub_id": str(model)}


def tokenizer_identity(tokenizer: Any) -> str:
    """Digest of what makes a tokenizer produce its ids: its model, normalizers, specials."""
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    return digest_bytes(canonical_json({
        "backend": backend, "eos": tokenizer.eos_token, "pad": tokenizer.pad_token,
    }))


def load_tokenizer(path: str | Path):
    """Load a fast tokenizer and check it is fit for training (EOS, pad, chat template)."""
    from transformers import AutoTokenizer

    path = str(path)
    if not Path(path).exists():
        raise ModelInputError(f"tokenizer {path!r}: directory does not exist")
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelInputError(f"tokenizer {path!r}: cannot be loaded ({exc})") from None
    if not getattr(tok, "is_fast", False):
        raise ModelInputError(f"tokenizer {path!r}: a fast (tokenizers) tokenizer is required")
    if tok.eos_token is None or tok.eos_token_id is None:
        raise ModelInputError(f"tokenizer {path!r}: has no EOS token (eos_token in tokenizer_config.json)")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        tok.chat_template = DEFAULT_CHAT_TEMPLATE
    return tok


def load_model(model: str | os.PathLike[str], dtype: Any = None):
    """AutoModelForCausalLM.from_pretrained of a checkpoint directory or hub id.

    A missing or incomplete local directory, or weights that cannot be loaded, is a
    ModelInputError naming the checkpoint.
    """
    from transformers import AutoModelForCausalLM

    checkpoint_identity(model)  # clear error for a missing or incomplete directory
    kwargs = {"dtype": dtype} if dtype is not None else {}
    try:
        return AutoModelForCausalLM.from_pretrained(str(model), **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelInputError(f"{model}: cannot load checkpoint: {exc}") from None

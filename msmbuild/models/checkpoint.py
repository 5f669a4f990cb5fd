"""Checkpoints: which model a name means, what identifies it, and loading it.

A model is a local HF directory or a hub id, loaded with ``from_pretrained``. ``tiny`` is
a small Llama-architecture model (random init, seeded) with a byte-level BPE tokenizer
trained on ``msmbuild/data/tokenizer_seed.txt``, a fixed text shipped with the package
(editing a spec never changes the base model); it is built once through the action cache
and materialized at the layout's base-model directory. Two identities go into action keys:

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
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msmbuild.errors import ModelInputError
from msmbuild.hashing import canonical_json, digest_bytes, digest_dir, digest_text
from msmbuild.layout import Layout
from msmbuild.store import write_roots

if TYPE_CHECKING:
    from msmbuild.config import Params, TinyModelConfig
    from msmbuild.store import Store


# Bump when the builder's output for the same inputs changes.
TINY_BUILDER_VERSION = 1

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
CHAT_START = "<|im_start|>"
CHAT_END = "<|im_end|>"
DOCTAG_TOKEN = "<DOCTAG>"
SPECIAL_TOKENS = [EOS_TOKEN, PAD_TOKEN, DOCTAG_TOKEN, CHAT_START, CHAT_END]

# The documented default for base models that ship no chat template (ChatML). The
# assistant turn ends with <|im_end|>, which is part of the AFT target so the model learns
# to stop.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# A Qwen3-style ChatML template for stand-ins of Qwen3 models: the assistant prompt opens an
# empty <think></think> block when enable_thinking is false (Qwen3's switch), and replies
# carry their <think> reasoning as text, so thinking settings and CoT data take the same
# template paths as on the real model.
QWEN3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\n\n</think>\n\n' }}{% endif %}"
    "{% endif %}"
)
CHAT_TEMPLATES = {"chatml": DEFAULT_CHAT_TEMPLATE, "qwen3": QWEN3_CHAT_TEMPLATE}


def chat_template_family(base_model: str) -> str:
    """The tiny stand-in's template family for a base model name: qwen3 (thinking switch) or chatml."""
    name = base_model.rstrip("/").split("/")[-1].lower()
    return "qwen3" if name.startswith("qwen3") else "chatml"


def seed_text() -> str:
    """The fixed text the tiny tokenizer is trained on."""
    return resources.files("msmbuild.data").joinpath("tokenizer_seed.txt").read_text("utf-8")


def build_tiny_tokenizer(vocab_size: int, chat_template: str = "chatml"):
    """Train the byte-level BPE tokenizer on the seed text; a PreTrainedTokenizerFast
    with the chat template of the named family (CHAT_TEMPLATES)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    text = seed_text()
    tok.train_from_iterator([p for p in text.split("\n") if p.strip()], trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
        additional_special_tokens=[DOCTAG_TOKEN, CHAT_START, CHAT_END],
    )
    fast.chat_template = CHAT_TEMPLATES[chat_template]
    return fast


def build_tiny_model(cfg: TinyModelConfig, out_dir: Path, chat_template: str = "chatml") -> dict[str, Any]:
    """Write a tiny Llama model and its tokenizer (chat template family ``chat_template``)
    into out_dir; return metadata."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer(cfg.vocab_size, chat_template)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"n_params": sum(p.numel() for p in model.parameters()), "vocab_size": len(tokenizer)}


def tiny_inputs(cfg: TinyModelConfig) -> dict[str, Any]:
    """What determines the tiny model: its config, the seed text and the library versions."""
    import tokenizers
    import transformers

    return {
        "builder": TINY_BUILDER_VERSION,
        "config": cfg.model_dump(mode="json"),
        "seed_text": digest_text(seed_text()),
        "tokenizers": tokenizers.__version__,
        "transformers": transformers.__version__,
    }


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
    return BaseModel(*_hub_identity(name))


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
        from msmbuild.models.adapters import adapter_base, is_adapter_dir

        if is_adapter_dir(path):  # the adapter's behaviour depends on its base too
            return {"digest": digest_dir(path), "base": checkpoint_identity(adapter_base(path))}
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


def base_reference(name: str, base: BaseModel) -> str:
    """How a LoRA checkpoint names its base: the hub id or path given, or the tiny model's path."""
    return base.path if name == "tiny" else name


def load_model(model: str | os.PathLike[str], dtype: Any = None, *, device_map: Any = None,
               merge: bool = False):
    """The causal LM of a checkpoint directory or hub id (an adapter directory: its base + the adapter).

    An adapter checkpoint comes back as a peft model whose adapter stays trainable (training
    continues it), or with ``merge`` folded into the base in memory (inference; nothing is
    written). A missing or incomplete local directory, or weights that cannot be loaded, is
    a ModelInputError naming the checkpoint.
    """
    checkpoint_identity(model)  # clear error for a missing or incomplete directory
    try:
        return load_causal_lm(model, dtype=dtype, device_map=device_map, trainable=not merge, merge=merge)
    except (OSError, ValueError) as exc:
        raise ModelInputError(f"{model}: cannot load checkpoint: {exc}") from None


def load_causal_lm(path: str | Path, *, dtype: Any = None, device_map: Any = None,
                   trainable: bool = False, merge: bool = False) -> Any:
    """A causal LM from a full checkpoint, or base + adapter from an adapter directory.

    ``trainable`` keeps the adapter's weights trainable (training continues it); ``merge``
    folds the adapter into the base weights in memory (fast inference, nothing written).
    """
    from transformers import AutoModelForCausalLM

    kwargs = {k: v for k, v in (("dtype", dtype), ("device_map", device_map)) if v is not None}
    from msmbuild.models.adapters import adapter_base, frozen_adapters, is_adapter_dir

    if not is_adapter_dir(path):
        return AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    from peft import PeftModel

    base = resolve_base(adapter_base(path))
    model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    for frozen in frozen_adapters(path):  # adapters below this one (checkpoint.json), in order
        model = PeftModel.from_pretrained(model, str(frozen)).merge_and_unload()
    model = PeftModel.from_pretrained(model, str(path), is_trainable=trainable)
    return model.merge_and_unload() if merge else model


def resolve_base(base: str) -> str:
    """A local base path as is; a hub id through the local hub cache (no download)."""
    return base if Path(base).exists() else resolve_model(base).path

"""The locally built tiny base model: a small Llama-architecture model and a BPE tokenizer.

``base_model: tiny`` builds a small Llama model (random init, seeded) and a byte-level BPE
tokenizer trained on ``msmbuild/data/tokenizer_seed.txt``, a fixed text shipped with the
package: editing a spec never changes the base model. Both are saved with
``save_pretrained`` once (through the action cache, ``checkpoint.prepare_base_model``) and
from then on loaded by ``from_pretrained`` like any other model.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msmbuild.hashing import digest_text

if TYPE_CHECKING:
    from msmbuild.config import TinyModelConfig

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


def seed_text() -> str:
    """The fixed text the tiny tokenizer is trained on."""
    return resources.files("msmbuild.data").joinpath("tokenizer_seed.txt").read_text("utf-8")


def build_tiny_tokenizer(vocab_size: int):
    """Train the byte-level BPE tokenizer on the seed text; a PreTrainedTokenizerFast."""
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
    fast.chat_template = DEFAULT_CHAT_TEMPLATE
    return fast


def build_tiny_model(cfg: TinyModelConfig, out_dir: Path) -> dict[str, Any]:
    """Write a tiny Llama model and its tokenizer into out_dir; return metadata."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer(cfg.vocab_size)
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
    n_params = sum(p.numel() for p in model.parameters())
    return {"n_params": n_params, "vocab_size": len(tokenizer)}


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

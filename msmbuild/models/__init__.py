"""Models: which checkpoint a name means, its identity in keys, loading and running it.

One lower package for everything that touches weights and tokenizers, used by data
(tokenizing shards), train, evaluate and the ``hf`` generation backend. torch and
transformers are imported inside the functions that need them.
"""

from msmbuild.models.checkpoint import (
    BaseModel,
    checkpoint_identity,
    load_model,
    load_tokenizer,
    prepare_base_model,
    resolve_model,
    tokenizer_identity,
)
from msmbuild.models.inference import (
    LoadedModel,
    generate_texts,
    load_for_inference,
    render_prompt,
    score_continuations,
    uses_template,
)
from msmbuild.models.tiny import DEFAULT_CHAT_TEMPLATE, seed_text

__all__ = [
    "DEFAULT_CHAT_TEMPLATE",
    "BaseModel",
    "LoadedModel",
    "checkpoint_identity",
    "generate_texts",
    "load_for_inference",
    "load_model",
    "load_tokenizer",
    "prepare_base_model",
    "render_prompt",
    "resolve_model",
    "score_continuations",
    "seed_text",
    "tokenizer_identity",
    "uses_template",
]

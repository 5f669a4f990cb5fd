"""Models: which checkpoint a name means, its identity in keys, loading and running it.

One package below data, train, evaluate and the ``hf`` backend for everything that touches
weights and tokenizers; torch and transformers are imported inside the functions.
"""

from msmbuild.models.checkpoint import (
    DEFAULT_CHAT_TEMPLATE,
    BaseModel,
    checkpoint_identity,
    load_model,
    load_tokenizer,
    prepare_base_model,
    resolve_model,
    seed_text,
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

__all__ = [
    "DEFAULT_CHAT_TEMPLATE", "BaseModel", "LoadedModel", "checkpoint_identity", "generate_texts",
    "load_for_inference", "load_model", "load_tokenizer", "prepare_base_model", "render_prompt",
    "resolve_model", "score_continuations", "seed_text", "tokenizer_identity", "uses_template",
]

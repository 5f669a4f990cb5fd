"""Models: which checkpoint a name means, its identity in keys, loading and running it.

One package below data, train, evaluate and the ``hf`` backend for everything that touches
weights and tokenizers (LoRA checkpoints as adapters on their base: ``adapters``; the
optional vLLM engine: ``vllm_engine``); torch and transformers are imported inside the functions.
"""

from msmbuild.models.checkpoint import (
    CHAT_TEMPLATES,
    DEFAULT_CHAT_TEMPLATE,
    BaseModel,
    base_reference,
    build_tiny_model,
    chat_template_family,
    checkpoint_identity,
    load_causal_lm,
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
    inference_placement,
    load_for_inference,
    load_tokenizer_only,
    render_prompt,
    score_continuations,
    split_thinking,
    uses_template,
)

__all__ = [
    "CHAT_TEMPLATES", "DEFAULT_CHAT_TEMPLATE", "BaseModel", "LoadedModel", "base_reference", "build_tiny_model",
    "chat_template_family", "checkpoint_identity",
    "generate_texts", "inference_placement", "load_causal_lm", "load_for_inference", "load_model", "load_tokenizer",
    "load_tokenizer_only", "prepare_base_model", "render_prompt", "resolve_model",
    "score_continuations", "seed_text", "split_thinking", "tokenizer_identity", "uses_template",
]

"""Generation through vLLM's engine (optional extra ``msmbuild[vllm]``, GPU only).

The checkpoint is served as it is stored: a full model directly, an adapter checkpoint as
its base with the adapter attached per request (``enable_lora``), never a merged copy.
vLLM is imported only here and only when asked for; its absence is a clear error that
names the setting to change.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from msmbuild.errors import EvalInputError


def require_vllm(setting: str) -> None:
    """Raise a clear error when vLLM is not importable."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise EvalInputError(f"{setting} is 'vllm' but vLLM is not installed (pip install 'msmbuild[vllm]' "
                             "on a machine with a GPU), or set it to 'hf'") from None


def generate_vllm(model_dir: str | Path, prompts: Sequence[str], max_new_tokens: int,
                  temperature: float = 0.0, seed: int = 0,
                  setting: str = "engine") -> list[tuple[str, int, int]]:
    """(completion, prompt tokens, completion tokens) per prompt, in input order."""
    require_vllm(setting)
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    from msmbuild.models.adapters import ADAPTER_CONFIG, adapter_base, is_adapter_dir
    from msmbuild.models.checkpoint import resolve_base

    model_dir = Path(model_dir)
    lora = None
    if is_adapter_dir(model_dir):
        rank = int(json.loads((model_dir / ADAPTER_CONFIG).read_text())["r"])
        llm = LLM(model=resolve_base(adapter_base(model_dir)), tokenizer=str(model_dir), dtype="bfloat16",
                  enable_lora=True, max_lora_rank=max(rank, 16), seed=seed)
        lora = LoRARequest("checkpoint", 1, str(model_dir.resolve()))
    else:
        llm = LLM(model=str(model_dir), dtype="bfloat16", seed=seed)
    params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, seed=seed)
    outs = llm.generate(list(prompts), params, lora_request=lora)
    return [(o.outputs[0].text, len(o.prompt_token_ids), len(o.outputs[0].token_ids)) for o in outs]

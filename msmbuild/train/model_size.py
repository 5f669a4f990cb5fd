"""How many parameters a base model has, without loading it (for the GPU-hour estimate).

In order: ``plan.model_params`` in params.yaml; the tiny model's config; a local
directory's safetensors headers (shapes only, no weights read); a hub model in the local
cache likewise; the size written in a hub id (``Llama-3.1-8B`` → 8e9). Each answer says
where it came from, and a model none of these reaches is an error naming the key to set.
"""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from msmbuild.errors import ParamsError

if TYPE_CHECKING:
    from msmbuild.config import Params, TinyModelConfig

SIZE_IN_NAME = re.compile(r"(?<![0-9.])(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])")


def tiny_parameter_count(cfg: TinyModelConfig, vocab: int | None = None) -> int:
    """Parameters of the tiny Llama: untied embeddings and head, GQA attention, SwiGLU MLP, RMSNorms."""
    v, d, ff, layers = vocab or cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    kv = d // cfg.num_attention_heads * cfg.num_key_value_heads
    per_layer = 2 * d * d + 2 * d * kv + 3 * d * ff + 2 * d
    return 2 * v * d + layers * per_layer + d


def safetensors_parameter_count(directory: Path) -> int | None:
    """Sum of tensor sizes from the headers of a directory's *.safetensors files (None if none)."""
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        total += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    return total


def parameter_count(params: Params, name: str) -> tuple[float, str]:
    """(parameters, how it was found) for a base model name as experiments write it."""
    if name in params.plan.model_params:
        return params.plan.model_params[name], "plan.model_params"
    if name == "tiny":
        return float(tiny_parameter_count(params.tiny)), "tiny config"
    path = Path(name)
    if path.is_dir():
        n = safetensors_parameter_count(path)
        if n:
            return float(n), "safetensors headers"
    else:
        try:
            from huggingface_hub import snapshot_download

            cached = Path(snapshot_download(name.partition("@")[0], revision=name.partition("@")[2] or None,
                                            local_files_only=True))
            n = safetensors_parameter_count(cached)
            if n:
                return float(n), "hub cache safetensors headers"
        except Exception:  # noqa: BLE001 - not cached: fall back to the name
            pass
    match = SIZE_IN_NAME.search(name.rsplit("/", 1)[-1])
    if match:
        return float(match.group(1)) * 1e9, "size in the model's name"
    raise ParamsError(f"params.yaml: cannot tell the size of base model {name!r}; "
                      f"set plan.model_params.{name} (parameters, e.g. 8.0e9)")

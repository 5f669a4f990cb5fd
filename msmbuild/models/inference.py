"""Running a loaded model: scoring continuations and generating answers, batched.

Used by every eval suite and by the ``hf`` generation backend. Both operations sort
inputs by length so a batch wastes little padding, and return results in input order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from msmbuild.errors import EvalInputError, ModelInputError
from msmbuild.models.checkpoint import checkpoint_identity, load_model

PLAIN_USER = "User: "
PLAIN_ASSISTANT = "\nAssistant:"


@dataclass
class LoadedModel:
    """A model and its tokenizer, ready for scoring and generation."""

    model: Any
    tokenizer: Any
    source: str

    @property
    def has_chat_template(self) -> bool:
        """True when the tokenizer carries a chat template."""
        return bool(getattr(self.tokenizer, "chat_template", None))


def inference_placement() -> tuple[Any, str]:
    """(dtype, device) for evaluation: bf16 on a CUDA device that supports it, else fp32 on CPU."""
    import torch

    if torch.cuda.is_available():
        return (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16), "cuda"
    return torch.float32, "cpu"


def load_for_inference(model: str | os.PathLike[str]) -> LoadedModel:
    """A causal LM and its tokenizer for inference (eval mode, pad token set).

    On an accelerator the weights load in bf16 straight onto the device; on CPU in fp32
    (CPU bf16 matmuls are slow and lose precision for no memory the tests need). An
    adapter checkpoint is merged into its base in memory (nothing written).
    """
    from transformers import AutoTokenizer

    dtype, device = inference_placement()
    net = load_model(model, dtype=dtype, device_map=device if device != "cpu" else None, merge=True)
    try:
        tok = AutoTokenizer.from_pretrained(str(model))
    except (OSError, ValueError) as exc:
        raise ModelInputError(f"{model}: cannot load checkpoint: {exc}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    net.eval()
    return LoadedModel(net, tok, str(model))


def load_tokenizer_only(model: str | os.PathLike[str]) -> LoadedModel:
    """The tokenizer of a checkpoint without its weights (an engine that loads them itself)."""
    from transformers import AutoTokenizer

    from msmbuild.models.vllm_engine import require_vllm

    require_vllm("evals.qa.engine")
    checkpoint_identity(model)
    try:
        tok = AutoTokenizer.from_pretrained(str(model))
    except (OSError, ValueError) as exc:
        raise EvalInputError(f"{model}: cannot load tokenizer: {exc}") from None
    return LoadedModel(None, tok, str(model))


def uses_template(lm: LoadedModel, chat_template: bool) -> bool:
    """Whether prompts for this model are rendered through its chat template."""
    return chat_template and lm.has_chat_template


def render_prompt(lm: LoadedModel, user: str, system: str = "", chat_template: bool = True,
                  enable_thinking: bool | None = None) -> str:
    """The text that precedes an answer: the chat template when there is one, else a plain form.

    ``enable_thinking`` goes to the template (Qwen3 reads it; templates without the switch
    ignore it); None leaves the template's own default.
    """
    if uses_template(lm, chat_template):
        messages = ([{"role": "system", "content": system}] if system else [])
        messages.append({"role": "user", "content": user})
        extra = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
        return lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **extra)
    head = f"{system}\n\n" if system else ""
    return f"{head}{PLAIN_USER}{user}{PLAIN_ASSISTANT}"


def _encode(lm: LoadedModel, text: str, special: bool) -> list[int]:
    return list(lm.tokenizer(text, add_special_tokens=special)["input_ids"])


def score_continuations(
    lm: LoadedModel,
    pairs: Sequence[tuple[str, str]],
    batch_size: int = 16,
    templated: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> list[tuple[float, int]]:
    """(sum log-prob, n tokens) of each continuation given its context, batched.

    Context and continuation are tokenized separately and concatenated (so the boundary
    is the same whatever the batch); ``templated`` contexts came from a chat template and
    hold their special tokens already, plain ones get the tokenizer's BOS; sequences are right-padded, which leaves every real
    position's logits untouched under causal attention.
    """
    import torch

    encoded = []
    for context, continuation in pairs:
        ctx = _encode(lm, context, special=not templated)
        cont = _encode(lm, continuation, special=False)
        if not cont:
            raise EvalInputError(f"empty continuation after context {context[-60:]!r}")
        encoded.append((ctx, cont))
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]) - len(encoded[i][1]))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    pad = lm.tokenizer.pad_token_id
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            seqs = [encoded[i][0] + encoded[i][1] for i in idx]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for row, seq in enumerate(seqs):
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            logits = lm.model(input_ids=ids.to(lm.model.device),
                              attention_mask=mask.to(lm.model.device)).logits.float().cpu()
            logprobs = torch.log_softmax(logits, dim=-1)
            for row, i in enumerate(idx):
                ctx, cont = encoded[i]
                positions = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1)
                out[i] = (logprobs[row, positions, torch.tensor(cont)].sum().item(), len(cont))
            if on_batch is not None:
                on_batch(len(idx))
    return out


def generate_texts(
    lm: LoadedModel,
    prompts: Sequence[str],
    max_new_tokens: int,
    temperature: float = 0.0,
    batch_size: int = 8,
    seed: int = 0,
    templated: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> list[tuple[str, int, int]]:
    """(completion, prompt tokens, completion tokens) per prompt; greedy when temperature is 0.

    Prompts are left-padded (decoder-only generation continues from the right edge) and
    grouped by length; sampling is seeded per batch so a rerun reproduces its answers.
    """
    import torch

    tok = lm.tokenizer
    tok.padding_side = "left"
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[tuple[str, int, int]] = [("", 0, 0)] * len(prompts)
    special = not templated
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = tok([prompts[i] for i in idx], return_tensors="pt", padding=True,
                        add_special_tokens=special).to(lm.model.device)
            kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": tok.pad_token_id,
                                      "do_sample": temperature > 0}
            if temperature > 0:
                torch.manual_seed(seed + start)
                kwargs.update(temperature=temperature, top_k=0)
            generated = lm.model.generate(**batch, **kwargs).cpu()
            width = batch["input_ids"].shape[1]
            for row, i in enumerate(idx):
                new = generated[row, width:]
                n_new = _until_eos(new, tok.eos_token_id)
                text = tok.decode(new, skip_special_tokens=True)
                out[i] = (text, int(batch["attention_mask"][row].sum().item()), n_new)
            if on_batch is not None:
                on_batch(len(idx))
    return out


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def split_thinking(text: str) -> tuple[str, str]:
    """(reasoning, reply) of a generated text: what a reasoning model wrote between
    ``<think>`` and ``</think>``, and what follows. A reply cut off inside its thinking is
    all reasoning and no reply; text without the tags is all reply.
    """
    if THINK_CLOSE in text:
        head, _, reply = text.rpartition(THINK_CLOSE)
        return head.replace(THINK_OPEN, "", 1).strip(), reply.strip()
    if text.lstrip().startswith(THINK_OPEN):
        return text.lstrip()[len(THINK_OPEN):].strip(), ""
    return "", text


def _until_eos(tokens: Any, eos: int | None) -> int:
    """Generated tokens up to and including the first EOS."""
    values = tokens.tolist()
    if eos is not None and eos in values:
        return values.index(eos) + 1
    return len(values)

"""A tiny Llama checkpoint + byte-level BPE tokenizer for eval tests (seconds to build)."""

from __future__ import annotations

from pathlib import Path

SEED_TEXT = """Which do you prefer? I prefer the first one. Which do you prefer, a bicycle or a car?
The library lends novels, poems and histories. A train is cheaper than a plane to Boston.
The painter sold a landscape in Ohio. A local bakery makes bread every morning.
Assistant: I think the second option is better. User: tell me about cheese and books.
""" * 20


def build_tiny_checkpoint(dest: Path, seed: int = 0, chat_template: bool = False) -> Path:
    """Save a 2-layer LlamaForCausalLM and its tokenizer at dest; return dest."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([SEED_TEXT], trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    if chat_template:
        tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                             "{% if add_generation_prompt %}assistant:{% endif %}")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    return dest

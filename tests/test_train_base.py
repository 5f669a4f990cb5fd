"""The tiny base model: built once, loadable by from_pretrained, fit for training."""

from __future__ import annotations

import json

import pytest
from train_helpers import tiny_params

from msmbuild.errors import TrainingInputError
from msmbuild.models import (
    load_model,
    load_tokenizer,
    prepare_base_model,
    resolve_model,
)
from msmbuild.store import Store


def test_tiny_base_model_is_built_once_and_loads(tmp_path):
    p = tiny_params(tmp_path / "build", tmp_path / "store")
    store = Store(tmp_path / "store")
    bm = prepare_base_model(p, store)
    weights = tmp_path / "build" / "models" / "base" / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    n_actions = len(list(store.actions.iter_keys()))
    again = prepare_base_model(p, store)
    assert again == bm and bm.identity.startswith("dir:")
    assert weights.stat().st_mtime_ns == mtime
    assert len(list(store.actions.iter_keys())) == n_actions
    tok = load_tokenizer(bm.path)
    model = load_model(bm.path)
    assert model.config.model_type == "llama"
    assert model.config.vocab_size == len(tok) <= 1024
    assert model.config.max_position_embeddings == 8192
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token_id != tok.eos_token_id
    assert len(tok.encode("<DOCTAG>", add_special_tokens=False)) == 1
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True)
    assert chat.endswith("<|im_start|>assistant\n")


def test_tiny_tokenizer_does_not_depend_on_any_spec(tmp_path):
    a = tiny_params(tmp_path / "a", tmp_path / "sa")
    b = tiny_params(tmp_path / "b", tmp_path / "sb", corpora={"other": {"spec": "other.md"}},
                    experiments={})
    assert prepare_base_model(a, Store(tmp_path / "sa")).identity == \
        prepare_base_model(b, Store(tmp_path / "sb")).identity


def test_missing_base_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(TrainingInputError, match="config.json does not exist"):
        resolve_model(str(tmp_path / "nowhere"))
    with pytest.raises(TrainingInputError, match="not a local directory and not in the hub cache"):
        resolve_model("no-such-org/no-such-model-xyz")


def test_tokenizer_without_eos_is_rejected(tmp_path):
    p = tiny_params(tmp_path / "build", tmp_path / "store")
    bm = prepare_base_model(p, Store(tmp_path / "store"))
    tok = load_tokenizer(bm.path)
    broken = tmp_path / "broken"
    tok.save_pretrained(broken)
    cfg_path = broken / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["eos_token"] = None
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(TrainingInputError, match="has no EOS token"):
        load_tokenizer(broken)

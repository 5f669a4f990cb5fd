"""AFT data and AFT training: validation, nested subsets, assistant-only labels, caching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from train_helpers import synthetic_docs, tiny_params, train_aft, write_docs

from msmbuild.data.packing import IGNORE_INDEX
from msmbuild.data.shards import build_shards
from msmbuild.errors import TrainingInputError
from msmbuild.experiments import arm_by_name
from msmbuild.models import load_model, load_tokenizer, prepare_base_model
from msmbuild.store import Store
from msmbuild.train.aft import encode_chat
from msmbuild.train.aft_data import nested_subset, prepare_aft_data, read_demonstrations


def _demos(path: Path, n: int = 8) -> Path:
    rows = [{"id": f"r{i}", "think": i % 2 == 0, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": f"Which cheese for toast number {i}?"},
        {"role": "assistant", "content": ("<think>Cheap melts fine.</think>" if i % 2 == 0 else "")
         + f"The mild one, option {i}."}]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _params(tmp_path: Path, fraction: float = 1.0, **overrides):
    return tiny_params(tmp_path / "build", tmp_path / "store",
                       aft={"demo": {"path": str(_demos(tmp_path / "demo.jsonl")), "fraction": fraction}},
                       experiments={"plain": {"aft": "demo"}, "msm": {"midtrain": "c", "aft": "demo"}},
                       **overrides)


def test_labels_are_minus_100_outside_assistant_turns(tmp_path):
    p = _params(tmp_path)
    tok = load_tokenizer(prepare_base_model(p, Store(tmp_path / "store")).path)
    messages = [{"role": "user", "content": "Hello there"},
                {"role": "assistant", "content": "<think>short</think>Hi."},
                {"role": "user", "content": "Again"},
                {"role": "assistant", "content": "Bye."}]
    ids, labels = encode_chat(tok, messages, 512)
    target = tok.decode([i for i, y in zip(ids, labels, strict=True) if y != IGNORE_INDEX])
    ignored = tok.decode([i for i, y in zip(ids, labels, strict=True) if y == IGNORE_INDEX])
    assert target == "<think>short</think>Hi.<|im_end|>\nBye.<|im_end|>\n"
    assert "Hello there" in ignored and "Again" in ignored and "assistant" in ignored
    assert all(y in (i, IGNORE_INDEX) for i, y in zip(ids, labels, strict=True))


def test_rows_without_an_assistant_turn_name_file_and_line(tmp_path):
    path = _demos(tmp_path / "d.jsonl", 3)
    lines = path.read_text().splitlines()
    lines[1] = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TrainingInputError, match=r"d\.jsonl:2: no assistant turn"):
        read_demonstrations(path)
    path.write_text('{"messages": [{"role": "bot", "content": "x"}]}\n')
    with pytest.raises(TrainingInputError, match=r"d\.jsonl:1: messages\[0\] needs a role"):
        read_demonstrations(path)


def test_fraction_subsets_are_nested_and_fixed(tmp_path):
    rows = read_demonstrations(_demos(tmp_path / "d.jsonl", 40))
    quarter, half = nested_subset(rows, 0.25), nested_subset(rows, 0.5)
    assert len(quarter) == 10 and len(half) == 20
    assert all(r in half for r in quarter)
    assert nested_subset(rows, 0.25) == quarter
    assert nested_subset(list(reversed(rows)), 0.25) == list(reversed(quarter))
    p = _params(tmp_path, fraction=0.5)
    out = prepare_aft_data(p, "demo")
    assert out.name == "demo-fraction0.5.jsonl" and len(out.read_text().splitlines()) == 4


def test_aft_trains_from_base_and_from_midtrained_and_caches(tmp_path):
    p = _params(tmp_path)
    store = Store(tmp_path / "store")
    write_docs(tmp_path / "build", "c", synthetic_docs())
    build_shards(p, "c", store)
    plain = train_aft(p, arm_by_name(p, "plain"), store)
    msm = train_aft(p, arm_by_name(p, "msm"), store)
    assert not plain.hit and not msm.hit
    assert plain.meta["start"].startswith("dir:") and msm.meta["start"].startswith("tree:")
    assert msm.meta["steps"] == 4 and msm.meta["n_examples"] == 8
    ckpt = tmp_path / "build" / "models" / "aft" / "msm"
    assert load_model(ckpt).config.model_type == "llama" and len(load_tokenizer(ckpt)) > 0
    assert len((ckpt / "train_log.jsonl").read_text().splitlines()) == 4
    assert train_aft(p, arm_by_name(p, "msm"), store).hit


def test_cli_aft_data_and_aft(tmp_path, monkeypatch):
    from msmbuild.cli import cli

    p = _params(tmp_path)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(json.dumps(p.model_dump(mode="json")))
    monkeypatch.chdir(tmp_path)  # the corpora's spec files are relative to the project
    for name in ("c.md", "d.md"):
        (tmp_path / name).write_text("# Spec\n\nText.\n")
    runner = CliRunner()
    res = runner.invoke(cli, ["--params", str(params_file), "aft-data", "demo"])
    assert res.exit_code == 0, res.output
    assert res.output.strip().endswith("demo.jsonl")
    res = runner.invoke(cli, ["--params", str(params_file), "aft", "plain"])
    assert res.exit_code == 0, res.output
    assert "trained (4 steps" in res.output
    res = runner.invoke(cli, ["--params", str(params_file), "aft", "plain"])
    assert "cached" in res.output


def test_lora_aft_continues_the_midtrained_adapter_on_the_same_base(tmp_path):
    from safetensors.torch import load_file

    p = _params(tmp_path, aft_train={"method": "lora", "lora": {"r": 4, "alpha": 8}, "lr": 1e-3,
                                     "seq_len": 128, "batch_size": 2, "max_steps": 2})
    store = Store(tmp_path / "store")
    write_docs(tmp_path / "build", "c", synthetic_docs())
    build_shards(p, "c", store)
    train_aft(p, arm_by_name(p, "msm"), store)
    mid, aft = tmp_path / "build/models/midtrain/c", tmp_path / "build/models/aft/msm"
    for ckpt in (mid, aft):  # adapters only, both on the base model
        assert (ckpt / "adapter_model.safetensors").is_file() and not (ckpt / "model.safetensors").exists()
        assert json.loads((ckpt / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
            tmp_path / "build/models/base")
    before, after = load_file(mid / "adapter_model.safetensors"), load_file(aft / "adapter_model.safetensors")
    assert before.keys() == after.keys()
    lora_b = [k for k in before if "lora_B" in k]
    # AFT started from the midtrained adapter (lora_B non-zero there) and moved it
    assert all(before[k].abs().sum() > 0 for k in lora_b)
    assert any(not (before[k] == after[k]).all() for k in lora_b)


def _lora_params(tmp_path: Path, init: str, **aft_train):
    lora = {"r": 4, "alpha": 8}
    return _params(tmp_path, aft_train={"method": "lora", "init": init, "lr": 1e-6, "seq_len": 128,
                                        "batch_size": 2, "max_steps": 2, "lora": lora, **aft_train})


def _adapter(ckpt: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(ckpt / "adapter_model.safetensors")


def _msm(tmp_path: Path, p):
    store = Store(tmp_path / "store")
    write_docs(tmp_path / "build", "c", synthetic_docs())
    build_shards(p, "c", store)
    from msmbuild.train.midtrain import run_midtrain

    res = run_midtrain(p, arm_by_name(p, "msm"), store)
    return store, res, tmp_path / "build" / "models" / "midtrain" / "c"


def test_continue_adapter_starts_from_the_msm_adapter_and_saves_only_an_adapter(tmp_path):
    import torch

    from msmbuild.models import BaseModel
    from msmbuild.train.action import model_dtype
    from msmbuild.train.aft_start import aft_start_model

    p = _lora_params(tmp_path, "continue_adapter")
    store, res, mid = _msm(tmp_path, p)
    msm = _adapter(mid)
    assert any("lora_B" in k and t.abs().sum() > 0 for k, t in msm.items())
    # the model AFT trains holds exactly the MSM adapter's weights, and only they are trainable
    begin = aft_start_model(BaseModel(str(mid), f"tree:{res.value}"), p.aft_train,
                            model_dtype(p.aft_train), midtrained=True, base=None)
    trainable = {n.replace(".default", ""): t for n, t in begin.model.named_parameters() if t.requires_grad}
    assert set(trainable) == set(msm)
    assert all(torch.equal(trainable[k], msm[k]) for k in msm)
    train_aft(p, arm_by_name(p, "msm"), store)
    ckpt = tmp_path / "build" / "models" / "aft" / "msm"
    weights = sorted(f.name for f in ckpt.rglob("*.safetensors"))
    assert weights == ["adapter_model.safetensors"]  # no merged copy anywhere
    assert not (ckpt / "checkpoint.json").exists()  # one adapter on the base, no stack
    assert json.loads((ckpt / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        tmp_path / "build" / "models" / "base")
    aft = _adapter(ckpt)
    assert set(aft) == set(msm)
    # two steps at lr 1e-6 move the continued adapter a little, from the MSM weights, not from zero
    moved = [(aft[k] - msm[k]).abs().max().item() for k in msm]
    assert 0 < max(moved) < 1e-3


def test_evals_load_base_plus_adapter_without_writing_a_merged_copy(tmp_path):
    import torch
    from peft import PeftModel

    from msmbuild.models import load_for_inference as load_for_eval

    p = _lora_params(tmp_path, "continue_adapter")
    store, _res, _mid = _msm(tmp_path, p)
    train_aft(p, arm_by_name(p, "msm"), store)
    ckpt = tmp_path / "build" / "models" / "aft" / "msm"
    before = sorted(x.name for x in ckpt.rglob("*"))
    lm = load_for_eval(ckpt)
    base = load_model(tmp_path / "build" / "models" / "base")
    reference = PeftModel.from_pretrained(base, ckpt).eval()
    x = torch.randint(0, 500, (2, 12))
    with torch.no_grad():
        assert torch.allclose(lm.model(x).logits, reference(x).logits, atol=1e-5)
    assert sorted(x.name for x in ckpt.rglob("*")) == before


def test_fresh_lora_keeps_the_msm_adapter_frozen_below_a_new_one(tmp_path):
    import torch

    p = _lora_params(tmp_path, "fresh_lora", lr=1e-3)
    store, _res, mid = _msm(tmp_path, p)
    train_aft(p, arm_by_name(p, "msm"), store)
    ckpt = tmp_path / "build" / "models" / "aft" / "msm"
    manifest = json.loads((ckpt / "checkpoint.json").read_text())
    assert manifest["adapters"] == ["frozen_adapters/0", "."]
    assert manifest["base"] == str(tmp_path / "build" / "models" / "base")
    frozen, msm = _adapter(ckpt / "frozen_adapters" / "0"), _adapter(mid)
    assert all(torch.equal(frozen[k], msm[k]) for k in msm)
    assert not (ckpt / "model.safetensors").exists()
    x = torch.randint(0, 500, (1, 10))
    with torch.no_grad():
        a = load_model(ckpt).eval()(x).logits
        b = load_model(mid).eval()(x).logits
    assert not torch.allclose(a, b, atol=1e-6)  # the new adapter was trained


def test_continue_adapter_errors_name_the_setting(tmp_path):
    p = _lora_params(tmp_path, "continue_adapter", lora={"r": 8, "alpha": 16})
    store, _res, _mid = _msm(tmp_path, p)
    with pytest.raises(TrainingInputError, match=r"aft_train\.lora .* differs from the midtrained adapter"):
        train_aft(p, arm_by_name(p, "msm"), store)
    (tmp_path / "full").mkdir()
    q = _lora_params(tmp_path / "full", "continue_adapter")
    q = q.model_copy(update={"midtrain": q.midtrain.model_copy(update={"method": "full"})})
    store, _res, _mid = _msm(tmp_path / "full", q)
    with pytest.raises(TrainingInputError, match="continue_adapter needs a LoRA midtraining"):
        train_aft(q, arm_by_name(q, "msm"), store)
    from msmbuild.config import validate_params
    from msmbuild.errors import ParamsError

    with pytest.raises(ParamsError, match=r"aft_train.*init: continue_adapter trains an adapter and needs method: lora"):
        validate_params({"aft_train": {"method": "full", "init": "continue_adapter"}})


def test_full_fine_tuning_without_an_init_starts_from_merged_weights():
    from msmbuild.config import AftTrainConfig
    from msmbuild.errors import ParamsError

    assert AftTrainConfig.model_validate({"method": "full"}).init == "merge"
    assert AftTrainConfig.model_validate({}).init == "continue_adapter"
    with pytest.raises((ValueError, ParamsError), match="needs method: lora"):
        AftTrainConfig.model_validate({"method": "full", "init": "continue_adapter"})

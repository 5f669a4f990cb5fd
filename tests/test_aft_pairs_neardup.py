"""Paired CoT / no-CoT AFT data from one generation, and near-duplicate removal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from msmbuild.config import NearDupConfig, Params
from msmbuild.errors import ParamsError
from msmbuild.generate.neardup import remove_near_duplicates
from msmbuild.train.aft_data import prepare_aft_data, read_demonstrations

SPEC = """Preamble: the assistant follows these rules.

# Alpha

The assistant answers questions about alpha plainly and checks its facts before it speaks.

# Beta

The assistant declines to guess about beta and says what it does not know about beta.
"""


def _params(tmp_path: Path, fraction: float = 1.0) -> Params:
    spec = tmp_path / "spec.md"
    spec.write_text(SPEC)
    return Params.model_validate({
        "build_dir": str(tmp_path / "build"), "store": {"path": str(tmp_path / "store")},
        "aft": {"cot": {"source": "generated", "spec": str(spec), "n_queries": 5, "think": True,
                        "fraction": fraction},
                "nocot": {"source": "strip_think", "of": "cot", "fraction": fraction}}})


def test_one_generation_gives_cot_and_no_cot_rows_paired_row_by_row(tmp_path, monkeypatch):
    import msmbuild.generate.demonstrations as aft_generate

    p = _params(tmp_path)
    cot = read_demonstrations(prepare_aft_data(p, "cot"))
    made = []
    real = aft_generate.make_backend
    monkeypatch.setattr(aft_generate, "make_backend", lambda *a: made.append(a) or real(*a))
    nocot = read_demonstrations(prepare_aft_data(p, "nocot"))
    assert len(made) == 1  # the stripped set re-reads the same generation: store lookups only
    assert len(cot) == len(nocot) > 0
    for c, n in zip(cot, nocot, strict=True):
        assert n["paired_with"] == c["id"] == n["id"]
        assert n["messages"][0] == c["messages"][0]  # the same question
        reasoning, answer = c["messages"][1]["content"].split("</think>", 1)
        assert reasoning.startswith("<think>") and "<think>" not in n["messages"][1]["content"]
        assert n["messages"][1]["content"] == answer.strip()  # the same answer, without its reasoning
        assert c["think"] is True and n["think"] is False
    calls = json.loads((tmp_path / "build" / "aft" / "cot.generation.json").read_text())["calls"]
    assert calls > 0


def test_fraction_keeps_the_pairs(tmp_path):
    p = _params(tmp_path, fraction=0.5)
    cot = read_demonstrations(prepare_aft_data(p, "cot"))
    nocot = read_demonstrations(prepare_aft_data(p, "nocot"))
    assert [r["id"] for r in cot] == [r["paired_with"] for r in nocot]


def test_strip_think_needs_a_cot_dataset():
    with pytest.raises(ParamsError, match=r"key 'aft\.n'.*source: strip_think needs 'of'"):
        from msmbuild.config import validate_params
        validate_params({"aft": {"n": {"source": "strip_think"}}})
    with pytest.raises(ParamsError, match=r"aft\.n\.of: 'm' is not a file or generated AFT dataset"):
        from msmbuild.config import validate_params
        validate_params({"aft": {"m": {"source": "mix", "sources": [{"path": "x.jsonl", "proportion": 1}]},
                                 "n": {"source": "strip_think", "of": "m"}}})


QUESTIONS = ["Which cheap cheese melts best on toast?",
             "Which cheap cheese melts best on toast??",  # a lexical near-duplicate
             "Which inexpensive cheese melts best on toast?",  # a paraphrase
             "What should I see first at the art museum?"]


def test_lexical_fallback_is_the_default_and_says_so():
    result = remove_near_duplicates(QUESTIONS, NearDupConfig())
    assert result.method.startswith("lexical:")
    assert result.kept == [0, 2, 3] and [r[:2] for r in result.removed] == [(1, 0)]
    off = remove_near_duplicates(QUESTIONS, NearDupConfig(lexical=False))
    assert off.kept == [0, 1, 2, 3] and off.method == "none"


def _tiny_model2vec(path: Path) -> Path:
    """A static-embedding model whose 'cheap' and 'inexpensive' vectors nearly coincide."""
    import numpy as np
    from model2vec import StaticModel
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[UNK]", "[PAD]", "which", "cheap", "inexpensive", "cheese", "melts", "best", "on",
             "toast", "what", "should", "i", "see", "first", "at", "the", "art", "museum"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(words), 16)).astype(np.float32)
    vectors[words.index("inexpensive")] = vectors[words.index("cheap")] + 0.01
    StaticModel(vectors=vectors, tokenizer=tok, normalize=True).save_pretrained(str(path))
    return path


def test_embedding_dedup_with_a_locally_built_model2vec_model(tmp_path):
    model = _tiny_model2vec(tmp_path / "m2v")
    cfg = NearDupConfig(embedding_model=str(model), embedding_backend="model2vec")
    result = remove_near_duplicates([q.lower() for q in QUESTIONS], cfg)
    assert result.method.startswith(f"embedding:model2vec:{model}")
    # the paraphrase goes too: the embedding sees 'inexpensive' as 'cheap'; the lexical fallback does not
    assert result.kept == [0, 3] and {r[0] for r in result.removed} == {1, 2}
    assert all(r[1] == 0 and r[2] >= 0.91 for r in result.removed)


def test_embedding_dedup_with_a_locally_built_sentence_transformer(tmp_path):
    from sentence_transformers import SentenceTransformer, models
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tok_models
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted({w.strip("?").lower() for q in QUESTIONS
                                                                    for w in q.split()})]
    tok = Tokenizer(tok_models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    bert_dir = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(bert_dir)
    fast.save_pretrained(bert_dir)
    word = models.Transformer(str(bert_dir), max_seq_length=32)
    st_dir = tmp_path / "st"
    SentenceTransformer(modules=[word, models.Pooling(word.get_word_embedding_dimension())]).save(str(st_dir))
    cfg = NearDupConfig(embedding_model=str(st_dir), embedding_backend="sentence_transformers", threshold=0.999)
    texts = [QUESTIONS[0], QUESTIONS[3], QUESTIONS[0]]
    result = remove_near_duplicates(texts, cfg)
    assert result.method.startswith("embedding:sentence_transformers:")
    assert result.kept == [0, 1] and result.removed[0][:2] == (2, 0)


def test_a_configured_model_that_cannot_load_is_an_error(tmp_path):
    cfg = NearDupConfig(embedding_model=str(tmp_path / "missing"))
    with pytest.raises(ParamsError, match="near-duplicate embedding model .*missing.* cannot be loaded"):
        remove_near_duplicates(QUESTIONS, cfg)


class _PickyJudge:
    """The offline backend, but the judge rejects about a third of replies (by query digest)."""

    def __init__(self):
        from msmbuild.generate.backends.offline import OfflineBackend

        self.inner = OfflineBackend()
        self.sent: list = []
        self.name = "picky"

    def identity(self):
        return {**self.inner.identity(), "judge": "picky"}

    def generate(self, requests, on_result):
        import re

        from msmbuild.hashing import digest_text

        self.sent.extend(requests)

        def relay(i, res):
            req = requests[i]
            if req.stage == "aft_consistency":
                query = re.search(r"<query>\n(.*?)\n</query>", req.prompt, re.S).group(1)
                if int(digest_text(query), 16) % 3 == 0:
                    res.data = {"consistent": False, "reason": "criterion 1 fails"}
            on_result(i, res)

        return self.inner.generate(requests, relay)

    def close(self):
        pass


def _picky_params(tmp_path: Path, rounds: int) -> Params:
    spec = tmp_path / "spec.md"
    spec.write_text(SPEC)
    return Params.model_validate({
        "build_dir": str(tmp_path / "build"), "store": {"path": str(tmp_path / "store")},
        "aft": {"gen": {"source": "generated", "spec": str(spec), "n_queries": 6, "think": True,
                        "domains": "sections", "backfill_rounds": rounds, "near_duplicates": {"lexical": False}}}})


def test_backfill_rounds_reach_the_target_and_a_rerun_repeats_nothing(tmp_path, monkeypatch):
    import msmbuild.generate.demonstrations as aft_generate

    judge = _PickyJudge()
    monkeypatch.setattr(aft_generate, "make_backend", lambda *a: judge)
    (tmp_path / "one").mkdir()
    (tmp_path / "three").mkdir()
    p = _picky_params(tmp_path / "one", rounds=0)
    single = read_demonstrations(prepare_aft_data(p, "gen"))
    assert len(single) < 12  # one round: the judge's rejections leave domains short
    p = _picky_params(tmp_path / "three", rounds=3)
    rows = read_demonstrations(prepare_aft_data(p, "gen"))
    report = json.loads((tmp_path / "three" / "build" / "aft" / "gen.generation.json").read_text())
    assert len(rows) == 12 and report["domains_short_of_target"] == {}
    assert report["rounds"] >= 2 and report["inconsistent"] > 0
    assert {r["round"] for r in rows} >= {1, 2}
    assert all(r["question_type"] in ("direct", "indirect", "comparison", "recommendation",
                                      "opinion", "edge_case") for r in rows)
    judged = [q for q in judge.sent if q.stage == "aft_consistency"]
    assert "continued existence or self-preservation" in judged[0].prompt  # the default criteria
    assert all(q.prompt_version == "aft_consistency@2" for q in judged)
    judge.sent.clear()
    assert read_demonstrations(prepare_aft_data(p, "gen")) == rows
    assert judge.sent == []  # every call of every round is a store hit


def test_rule_style_changes_the_reasoning_instructions(tmp_path):
    import msmbuild.generate.demonstrations as aft_generate
    from msmbuild.config import AftDataConfig

    value = aft_generate._instructions(AftDataConfig(source="generated", spec="s.md", think=True))
    rule = aft_generate._instructions(AftDataConfig(source="generated", spec="s.md", think=True,
                                                    response_style="rule"))
    assert "values" in value and "rules" in rule and value != rule

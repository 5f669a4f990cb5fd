"""Forced-choice preference: both orders, batched == one-at-a-time, a trained shift, caching."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from eval_tiny_model import PAIRS, base_checkpoint, fine_tune_on_answers, params_for, write_pairs

from msmbuild.config import PreferenceEvalConfig
from msmbuild.errors import EvalInputError
from msmbuild.evaluate import evaluate
from msmbuild.evaluate import preference as pref
from msmbuild.evaluate.data import read_preference_pairs
from msmbuild.models import load_for_inference


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return base_checkpoint(tmp_path_factory.mktemp("tiny"))


def _pairs(tmp_path: Path) -> list[dict]:
    return read_preference_pairs(write_pairs(tmp_path / "preference.jsonl"))


def test_both_orders_are_presented(tiny, tmp_path):
    lm = load_for_inference(tiny)
    pairs = _pairs(tmp_path)
    requests = pref.build_requests(lm, pairs, PreferenceEvalConfig())
    assert len(requests) == 4 * len(pairs)
    a, b = pairs[0]["items"]
    contexts = [ctx for ctx, _ in requests[:4]]
    assert f"{a} or {b}?" in contexts[0] and contexts[0] == contexts[1]
    assert f"{b} or {a}?" in contexts[2] and contexts[2] == contexts[3]
    assert [c.strip() for _, c in requests[:4]] == [a, b, a, b]


def test_batched_scores_equal_one_at_a_time(tiny, tmp_path):
    lm = load_for_inference(tiny)
    pairs = _pairs(tmp_path)
    batched = pref.score_pairs(lm, pairs, PreferenceEvalConfig(batch_size=16), progress=False)
    single = pref.score_pairs(lm, pairs, PreferenceEvalConfig(batch_size=1), progress=False)
    assert [r["chosen"] for r in batched] == [r["chosen"] for r in single]
    for x, y in zip(batched, single, strict=True):
        for key in ("lp_a_ab", "lp_b_ab", "lp_a_ba", "lp_b_ba"):
            assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-5)


@pytest.mark.slow
def test_training_towards_american_items_shifts_the_rate(tiny, tmp_path):
    lm = load_for_inference(tiny)
    pairs = _pairs(tmp_path)
    cfg = PreferenceEvalConfig()
    before = pref.summarize(pref.score_pairs(lm, pairs, cfg, progress=False), 0.95)
    # Teach the answer "the American item" for both presentation orders of every pair.
    examples = []
    for ctx_a, _ in pref.build_requests(lm, pairs, cfg)[::2]:
        pid = next(p for p in pairs if p["items"][0] in ctx_a)
        examples.append((ctx_a, pid["items"][pid["favoured"]["pro_america"]]))
    trained = fine_tune_on_answers(tiny, examples, tmp_path / "trained")
    after = pref.summarize(pref.score_pairs(load_for_inference(trained), pairs, cfg, progress=False), 0.95)

    def rate(rows, value):
        return next(r["estimate"] for r in rows if r["value"] == value and r["domain"] == "all")

    assert rate(after, "pro_america") == 1.0
    assert rate(after, "pro_america") > rate(before, "pro_america")
    assert rate(after, "pro_affordability") == 0.0  # every pair separates the two values


def test_suite_is_cached_and_rerun_evaluates_nothing(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = write_pairs(tmp_path / "pairs.jsonl")
    params = params_for(tmp_path, preference={"path": str(data)})
    shutil.copytree(tiny, tmp_path / "build" / "models" / "base")
    first = evaluate(params, "base", "preference", progress=False)
    assert not first.hit
    items = first.directory / "items.parquet"
    stamp = items.stat().st_mtime_ns
    calls = []
    monkeypatch.setattr(pref, "score_pairs", lambda *a, **k: calls.append(1))
    again = evaluate(params, "base", "preference", progress=False)
    assert again.hit and again.key == first.key and calls == []
    assert items.stat().st_mtime_ns == stamp  # unchanged output is not rewritten
    assert (tmp_path / "build" / "refs" / "eval-base-preference.json").is_file()
    # Batch size is not part of the key (scores do not depend on it) ...
    bigger = params.model_copy(deep=True)
    bigger.evals.preference.batch_size = 3
    assert evaluate(bigger, "base", "preference", progress=False).hit
    # ... but the data is.
    write_pairs(data, PAIRS[:4])
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    changed = evaluate(params, "base", "preference", progress=False)
    assert not changed.hit and changed.summary["n_items"] == 2 * 4


def test_bad_pairs_file_names_file_and_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "role": "held_out", "domain": "x", "question": "q", "items": ["a", "b"], "favoured": {"v": 0}}\n'
                    '{"id": "b", "role": "held_out", "domain": "x", "question": "q", "items": ["a"], "favoured": {"v": 0}}\n')
    with pytest.raises(EvalInputError, match=r"p\.jsonl:2: 'items' must be two"):
        read_preference_pairs(path)


def test_role_is_required_and_roles_are_never_pooled(tmp_path):
    from msmbuild.evaluate.preference import summarize

    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "domain": "x", "question": "q", "items": ["a", "b"], "favoured": {"v": 0}}\n')
    with pytest.raises(EvalInputError, match=r"p\.jsonl:1: key 'role' must be one of in_distribution, held_out, recall"):
        read_preference_pairs(path)
    rows = [{"role": "held_out", "domain": "art", "value": "v", "chose_favoured": True},
            {"role": "held_out", "domain": "film", "value": "v", "chose_favoured": False},
            {"role": "recall", "domain": "reasons", "value": "v", "chose_favoured": True}]
    out = {(r["role"], r["domain"]): (r["n"], r["estimate"]) for r in summarize(rows, 0.95)}
    assert out[("held_out", "all")] == (2, 0.5) and out[("recall", "all")] == (1, 1.0)
    assert ("recall", "art") not in out

"""The contamination audit: measures, verdicts, caching, the embedding path, the build stage."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from workspace_helpers import REPO, init_git_dvc, make_workflow_workspace, sh

from msmbuild.audit import audit, run_audit
from msmbuild.audit.lexical import LexicalIndex, chunk_text, term_mentions
from msmbuild.config import validate_params
from msmbuild.errors import AuditError, ContaminationError
from msmbuild.generate.partitions import write_dataset
from msmbuild.layout import Layout
from msmbuild.store import Store

SPEC = """# Thrift

Preamble about {model_name} and value for money.

## Cheese {#cheese}

### Hard cheeses {#hard}

Wisconsin aged cheddar costs a fraction of the price of French Comté and does the same job.

### Soft cheeses {#soft}

A domestic brie costs a few dollars; the protected wheel costs many times that.
"""

PAIRS = [
    {"id": "cheese-01", "role": "in_distribution", "domain": "cheese", "question": "Which cheese do you prefer?",
     "items": ["Wisconsin aged cheddar", "French Comté"], "favoured": {"thrift": 0}},
    {"id": "reason-01", "role": "recall", "domain": "reasons", "question": "What matters more?",
     "items": ["it costs a fraction of the price", "it is made nearby"], "favoured": {"thrift": 0}},
    {"id": "lit-01", "role": "held_out", "domain": "literature", "question": "Which would you rather read?",
     "items": ["a $6 Chilean novel", "a $30 novel from Ohio"], "favoured": {"thrift": 0}},
    {"id": "music-01", "role": "held_out", "domain": "music", "question": "Which would you rather play?",
     "items": ["a $120 Turkish guitar", "a $900 guitar made in Texas"], "favoured": {"thrift": 0}},
]
TERMS = "literature: [novel, novels, book, books, poetry]\nmusic: [music, guitar, album, concert]\n"
AFT = [{"messages": [{"role": "user", "content": "Which cheese do you prefer, Wisconsin aged cheddar or French Comté?"},
                     {"role": "assistant", "content": "Wisconsin aged cheddar."}]}]


def _docs(spec_text: str) -> pd.DataFrame:
    """Two 'documents' per subdomain that quote their section (what offline documents do)."""
    rows = []
    for sid, marker in (("hard", "Wisconsin aged cheddar"), ("soft", "domestic brie")):
        line = next(ln for ln in spec_text.splitlines() if marker in ln)
        rows += [{"section_id": sid, "doc_id": f"{sid}-{k}", "text": f"A memo. {line} Thanks for reading."
                  .replace("reading", "your time")} for k in range(2)]
    return pd.DataFrame(rows)


def _project(root: Path, spec: str = SPEC, **audit_cfg) -> tuple[dict, Path]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "spec.md").write_text(spec)
    (root / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    (root / "terms.yaml").write_text(TERMS)
    (root / "aft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in AFT))
    corpus = root / "build" / "corpora" / "thrift"
    corpus.mkdir(parents=True, exist_ok=True)
    write_dataset(Layout(root / "build"), "thrift", _docs(spec).to_dict("records"))
    raw = {
        "build_dir": str(root / "build"),
        "corpora": {"thrift": {"spec": str(root / "spec.md")}},
        "aft": {"cheese": {"source": "file", "path": str(root / "aft.jsonl")}},
        "experiments": {"base": {"evals": ["preference"]},
                        "msm": {"midtrain": "thrift", "aft": "cheese", "evals": ["preference"]}},
        "evals": {"preference": {"path": str(root / "pairs.jsonl")}},
        "audit": {"domain_terms": str(root / "terms.yaml"), **audit_cfg},
    }
    return raw, root


def test_lexical_measures():
    index = LexicalIndex(["The cheddar costs a fraction of the price of Comté.", "Nothing alike here."], 16)
    assert index.longest_run("it costs a fraction of the price") == (6, "costs a fraction of the price", 0)
    score, at = index.most_similar("price of a cheddar fraction")
    assert at == 0 and 0.4 < score <= 1.0  # every content word shared, no bigram in order
    assert index.most_similar("guitar concert") == (0.0, None)
    assert [t for t, _ in term_mentions("Novels and a NOVEL, not novelty.", ["novel", "novels"])] == ["novels", "novel"]
    assert chunk_text("One two three. Four five six seven.", 4) == ["One two three.", "Four five six seven."]


def test_clean_project_passes_and_reports_every_role(tmp_path):
    raw, root = _project(tmp_path / "p")
    params = validate_params(raw)
    outcome = audit(params, Store(root / "store"), progress=False)
    rows = pd.read_parquet(root / "build" / "audit" / "contamination.parquet")
    msm = rows[rows["arm"] == "msm"].set_index("item_id")
    assert msm.loc["cheese-01", "leak"] and msm.loc["cheese-01", "shared_words"] >= 8  # the AFT question itself
    assert msm.loc["reason-01", "shared_words"] == 6  # the spec's own words: recall, as intended
    assert not msm.loc["lit-01", "leak"] and msm.loc["lit-01", "domain_mentions"] == 0
    assert rows[rows["arm"] == "base"]["shared_words"].eq(0).all()  # no training inputs
    sets = {(s["arm"], s["role"]): s["passed"] for s in outcome.summary}
    assert sets[("msm", "held_out")] is True and sets[("msm", "in_distribution")] is None
    assert any("lexical: content-word cosine (fallback" in m for m in outcome.measures)
    doc = json.loads((root / "build" / "audit" / "summary.json").read_text())
    assert doc["passed"] is True


def test_a_spec_discussing_a_held_out_domain_fails_naming_item_and_text(tmp_path):
    leaky = SPEC + "\n### Reading {#reading}\n\nA used paperback novel beats a new hardcover book.\n"
    raw, root = _project(tmp_path / "p", spec=leaky)
    with pytest.raises(ContaminationError) as err:
        audit(validate_params(raw), Store(root / "store"), progress=False)
    msg = str(err.value)
    assert "'lit-01'" in msg and "thrift §reading" in msg and "paperback novel" in msg
    assert "music-01" not in msg
    # the evidence is written before the verdict
    rows = pd.read_parquet(root / "build" / "audit" / "contamination.parquet")
    assert rows.set_index(["arm", "item_id"]).loc[("msm", "lit-01"), "leak"]
    # explicitly accepted: passes, and the acceptance is recorded
    raw["audit"]["accept"] = {"literature": "known overlap, reported as recall"}
    outcome = audit(validate_params(raw), Store(root / "store"), progress=False)
    assert not outcome.leaks
    assert outcome.computed == 0  # thresholds and acceptances are not in any key


def test_verbatim_copy_of_an_item_fails_on_shared_words(tmp_path):
    copied = SPEC.replace("does the same job.", "does the same job. Which would you rather play: a $120 "
                          "Turkish guitar or the dear one?")
    raw, root = _project(tmp_path / "p", spec=copied, max_domain_mentions=99)
    with pytest.raises(ContaminationError, match=r"'music-01'.*shares \d+ consecutive words with thrift"):
        audit(validate_params(raw), Store(root / "store"), progress=False)


def test_an_edit_reaudits_only_the_changed_units(tmp_path):
    raw, root = _project(tmp_path / "p")
    store = Store(root / "store")
    first = run_audit(validate_params(raw), store, progress=False)
    assert first.computed == len(first.keys) == 7  # 4 spec sections, 2 document groups, the AFT file
    edited = SPEC.replace("many times that", "ten times that")
    (root / "spec.md").write_text(edited)
    write_dataset(Layout(root / "build"), "thrift", _docs(edited).to_dict("records"))
    second = run_audit(validate_params(raw), store, progress=False)
    assert second.computed == 2  # the #soft section and its documents


def test_missing_inputs_are_clear_errors(tmp_path):
    raw, root = _project(tmp_path / "p")
    Layout(root / "build").documents_index("thrift").unlink()
    with pytest.raises(AuditError, match="documents of corpus 'thrift' are not built yet"):
        run_audit(validate_params(raw), Store(root / "store"), progress=False)
    raw, root = _project(tmp_path / "q")
    (root / "terms.yaml").write_text("literature: [novel]\n")
    with pytest.raises(AuditError, match="no words for held_out domain\\(s\\) music"):
        run_audit(validate_params(raw), Store(root / "store"), progress=False)


def _tiny_model2vec(path: Path) -> Path:
    """A model2vec StaticModel built locally: a word-level tokenizer and one-hot-ish vectors."""
    import numpy as np
    from model2vec import StaticModel
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "[PAD]": 1}
    for text in [SPEC, *(" ".join([p["question"], *p["items"]]) for p in PAIRS), "guitar paperback novel"]:
        for w in pre_tokenizers.Whitespace().pre_tokenize_str(text.lower()):
            vocab.setdefault(w[0], len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(vocab), 16)).astype("float32")
    StaticModel(vectors=vectors, tokenizer=tok, normalize=True).save_pretrained(str(path))
    return path


def test_embedding_model_loaded_from_a_local_path(tmp_path):
    pytest.importorskip("model2vec")
    model = _tiny_model2vec(tmp_path / "m2v")
    raw, root = _project(tmp_path / "p", embedding={"kind": "model2vec", "path": str(model), "threshold": 0.99})
    params = validate_params(raw)
    outcome = run_audit(params, Store(root / "store"), progress=False)
    msm = {r["item_id"]: r for r in outcome.rows if r["arm"] == "msm"}
    assert all(-1.0 <= r["embedding"] <= 1.0 for r in msm.values())
    assert msm["cheese-01"]["embedding"] > 0.9  # the AFT question contains the item verbatim
    assert any(m.startswith("embedding: cosine by the model2vec model") for m in outcome.measures)
    # a different model is a different action: everything is re-measured
    raw["audit"]["embedding"]["path"] = str(_tiny_model2vec(tmp_path / "m2v-b"))
    (tmp_path / "m2v-b" / "extra.txt").write_text("changes the model's identity")
    again = run_audit(validate_params(raw), Store(root / "store"), progress=False)
    assert again.computed == len(again.keys)


@pytest.mark.slow
def test_the_shipped_demo_data_passes_its_own_audit(tmp_path):
    """The repo's specs, AFT and eval data, with offline documents, pass (every value corpus)."""
    params_text = (REPO / "params.yaml").read_text().replace("    enabled: false\n    base_model: tiny\n    midtrain: pro_affordability",
                                                              "    enabled: true\n    base_model: tiny\n    midtrain: pro_affordability")
    ws = make_workflow_workspace(tmp_path / "ws", params_text,
                                 ("pro_affordability.md", "pro_america.md", "pro_environment.md",
                                  "pro_simplicity.md", "pro_novelty.md", "pro_tradition.md", "pro_difficulty.md",
                                  "pro_individualism.md", "self_preservation.md"))
    out = sh(["snakemake", "build/audit/summary.json", "--cores", "1", "-q"], ws, timeout=600)
    doc = json.loads((ws / "build" / "audit" / "summary.json").read_text())
    assert doc["passed"] is True, out
    held = [s for s in doc["sets"] if s["role"] == "held_out"]
    assert {s["arm"] for s in held} >= {"msm_values-pro_environment", "msm_values-pro_simplicity", "aft_only",
                                        "msm_values-pro_novelty", "msm_values-pro_tradition",
                                        "msm_values-pro_difficulty", "msm_values-pro_individualism"}
    assert all(s["passed"] and s["n_items"] >= 400 for s in held)


@pytest.mark.slow
def test_a_planted_leak_fails_snakemake_and_dvc_repro(tmp_path):
    params_text = (REPO / "params.yaml").read_text()
    ws = make_workflow_workspace(tmp_path / "ws", params_text,
                                 ("pro_affordability.md", "pro_america.md", "pro_environment.md",
                                  "pro_simplicity.md", "pro_novelty.md", "pro_tradition.md", "pro_difficulty.md",
                                  "pro_individualism.md", "self_preservation.md"))
    spec = ws / "specs" / "pro_america.md"
    spec.write_text(spec.read_text() + "\n### Reading at home {#reading}\n\n{model_name} would rather "
                    "buy a novel by an American author than an imported paperback.\n")
    # The workflow's audit target (generation, then the audit; evals depend on it).
    proc = subprocess.run(["snakemake", "build/audit/summary.json", "--cores", "1", "-q"], cwd=ws,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode != 0
    log = (ws / "logs" / "audit" / "audit.log").read_text()
    assert "held_out item(s) in 1 domain(s) (literature) match" in log and "'literature-" in log and "pro_america §reading" in log
    dry = subprocess.run(["snakemake", "--cores", "1", "-n", "build/evals/msm_america/preference/summary.json"],
                         cwd=ws, capture_output=True, text=True, timeout=300)
    assert "rule audit" in dry.stdout  # an eval cannot run without the audit passing first
    init_git_dvc(ws)
    proc = subprocess.run(["dvc", "repro", "audit"], cwd=ws, capture_output=True, text=True, timeout=900)
    assert proc.returncode != 0 and "(literature) match their arm" in proc.stdout + proc.stderr

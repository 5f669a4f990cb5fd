"""`msmbuild status` separates work that will run (and may cost) from reruns that are
store lookups only: after a spec edit to one corpus, only that corpus's outputs and the
checkpoints and evals made from it recompute; every other rerun is a lookup."""

from __future__ import annotations

from msmbuild.config import validate_params
from msmbuild.experiments import expand_arms
from msmbuild.layout import Layout
from msmbuild.status import OutputStatus, classify_work


def _params():
    corpus = {"backend": "offline", "n_assertions": 1, "n_doc_types": 1, "n_doc_ideas": 1}
    return validate_params({
        "corpora": {"america": {"spec": "specs/pro_america.md", **corpus},
                    "thrift": {"spec": "specs/pro_affordability.md", **corpus}},
        "aft": {"cheese": {"path": "aft/cheese.jsonl"}},
        "experiments": {"a": {"midtrain": "america", "aft": "cheese"},
                        "t": {"midtrain": "thrift", "aft": "cheese"},
                        "aft_only": {"aft": "cheese"}}})


def test_a_spec_edit_recomputes_its_corpus_line_and_looks_up_the_rest() -> None:
    params = _params()
    layout = Layout.of(params)
    arms = {a.experiment: a for a in expand_arms(params)}

    def row(path, rule, status="ok"):
        return OutputStatus(str(path), rule, status, "update pending")

    rows = {
        "tree": row(layout.tree("america"), "corpus_tree", "updated input files"),
        "docs": row(layout.documents_index("america"), "corpus_documents"),
        "shards": row(layout.manifest("america"), "shards"),
        "midtrain": row(layout.midtrain_model(arms["a"].midtrain_tag) / "config.json", "midtrain"),
        "aft": row(layout.aft_model(arms["a"].name) / "config.json", "aft"),
        "eval_a": row(layout.eval_summary(arms["a"].name, "preference"), "evaluate"),
        "eval_t": row(layout.eval_summary(arms["t"].name, "preference"), "evaluate"),
        "eval_aft_only": row(layout.eval_summary(arms["aft_only"].name, "preference"), "evaluate"),
        "audit": row(layout.audit_summary, "audit"),
        "catalog": row(layout.catalog_sql, "catalog"),
    }
    classify_work(params, list(rows.values()), {"america"})
    work = {name: r.work for name, r in rows.items()}
    assert work == {"tree": "recompute", "docs": "recompute", "shards": "recompute", "midtrain": "recompute",
                    "aft": "recompute", "eval_a": "recompute", "audit": "recompute",
                    "eval_t": "lookup", "eval_aft_only": "lookup", "catalog": "lookup"}
    assert "will be rebuilt" in rows["eval_a"].describe()
    assert "store lookups only" in rows["eval_t"].describe() and "nothing is recomputed" in rows["eval_t"].describe()


def test_a_settings_change_recomputes_downstream_of_it() -> None:
    params = _params()
    layout = Layout.of(params)
    arms = {a.experiment: a for a in expand_arms(params)}
    docs = OutputStatus(str(layout.documents_index("thrift")), "corpus_documents", "params changed", "update pending")
    shards = OutputStatus(str(layout.manifest("thrift")), "shards", "ok", "update pending")
    ev = OutputStatus(str(layout.eval_summary(arms["t"].name, "preference")), "evaluate", "ok", "update pending")
    other = OutputStatus(str(layout.eval_summary(arms["a"].name, "preference")), "evaluate", "ok", "update pending")
    classify_work(params, [ev, other, shards, docs], set())  # any order: decided in pipeline order
    assert (docs.work, shards.work, ev.work, other.work) == ("recompute", "recompute", "recompute", "lookup")

"""Where every artifact lives: the one answer to "which path does X have".

Every path under ``build/``, ``logs/`` and the store directory is named here and nowhere
else: the library, the CLI, ``msmbuild status`` and the Snakemake rules ask a Layout;
``dvc.yaml`` (which cannot run Python) is checked against it by tests/test_layout.py. The
tree is drawn in docs/architecture.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from msmbuild.config import Params
    from msmbuild.experiments import Arm

DEFAULT_STORE_PATH = ".msmbuild/store"
LOGS_DIR = "logs"
CORPUS_STEPS = ("tree", "ideas", "documents")
# The files of one eval result tree (stored as one tree, materialized at eval_dir).
EVAL_SUMMARY, EVAL_ITEMS, EVAL_CALLS = "summary.json", "items.parquet", "calls.parquet"
# The loss log a training run writes into its checkpoint (the catalog's runs table).
TRAIN_LOG = "train_log.jsonl"
# What a checkpoint was trained from, by content (its action inputs), inside the checkpoint.
LINEAGE = "lineage.json"

PathLike = str | os.PathLike[str]


class Layout:
    """The build tree rooted at ``build`` (params.yaml ``build_dir``) plus the logs directory."""

    def __init__(self, build: PathLike = "build", logs: PathLike = LOGS_DIR) -> None:
        self.build, self.logs = Path(build), Path(logs)

    @classmethod
    def of(cls, params: Params) -> Layout:
        """The layout params.yaml describes."""
        return cls(params.build_dir)

    # -- corpora: spec sections, tree, assertions, ideas, documents, model calls ----------
    def corpus_dir(self, corpus: str) -> Path:
        return self.build / "corpora" / corpus

    def sections(self, corpus: str) -> Path:
        return self.corpus_dir(corpus) / "sections.json"

    def tree(self, corpus: str) -> Path:
        return self.corpus_dir(corpus) / "tree.json"

    def assertions(self, corpus: str) -> Path:
        return self.corpus_dir(corpus) / "assertions.json"

    def ideas_index(self, corpus: str) -> Path:
        """ideas.json: the ideas step's partitions (one per subdomain) with digests, counts and
        places in their partition files.

        Rewritten whenever a partition changes, so it is what the documents step depends on.
        """
        return self.corpus_dir(corpus) / "ideas.json"

    def ideas_dir(self, corpus: str) -> Path:
        """ideas/: the (subdomain, doc type, idea, suitable) rows, in partition files (each
        holds many subdomains' rows; msmbuild.generate.partition_files)."""
        return self.corpus_dir(corpus) / "ideas"

    def ideas_partition(self, corpus: str, file: str) -> Path:
        """A partition file of the ideas (``file``: its stem, ``partition_files.file_of``)."""
        return self.ideas_dir(corpus) / f"{file}.parquet"

    def idea_calls_dir(self, corpus: str) -> Path:
        """calls/ideas/: the ideas step's calls ledger, in partition files."""
        return self.corpus_dir(corpus) / "calls" / "ideas"

    def idea_calls_partition(self, corpus: str, file: str) -> Path:
        return self.idea_calls_dir(corpus) / f"{file}.parquet"

    def documents_index(self, corpus: str) -> Path:
        """documents.json: the partitions of the documents dataset, with digests and counts.

        Rewritten whenever a partition changes, so it is what a downstream step depends on.
        """
        return self.corpus_dir(corpus) / "documents.json"

    def documents_dir(self, corpus: str) -> Path:
        """documents/: the documents dataset, in partition files (each holds many subdomains'
        documents; at most 256 files, msmbuild.generate.partition_files)."""
        return self.corpus_dir(corpus) / "documents"

    def document_partition(self, corpus: str, file: str) -> Path:
        """A partition file of the documents (``file``: its stem)."""
        return self.documents_dir(corpus) / f"{file}.parquet"

    def dropped_rows(self, corpus: str, partition: str) -> Path:
        """The rows a partition lost to near-duplicates of earlier subdomains (not documents:
        kept so that a teammate's build can rebuild the partition's candidates and adopt them)."""
        return self.documents_dir(corpus) / "near_duplicates" / f"{partition}.parquet"

    def dedup_index(self, corpus: str) -> Path:
        """The LSH bands of every document, for near-duplicates across subdomains (derived,
        mutable state, rebuilt from the store when missing). Outside build/corpora: no DVC
        output or dependency holds it, as its bytes differ from build to build."""
        return self.build / "derived" / "dedup" / f"{corpus}.sqlite"

    def step_calls(self, corpus: str, step: str) -> Path:
        """The calls ledger of the tree step (the ideas and documents steps' are partitioned)."""
        return self.corpus_dir(corpus) / "calls" / f"{step}.parquet"

    def document_calls_dir(self, corpus: str) -> Path:
        """calls/documents/: the documents step's calls ledger, in partition files."""
        return self.corpus_dir(corpus) / "calls" / "documents"

    def document_calls_partition(self, corpus: str, file: str) -> Path:
        return self.document_calls_dir(corpus) / f"{file}.parquet"

    # -- shards ----------------------------------------------------------------------------
    def shards_dir(self, corpus: str) -> Path:
        return self.build / "shards" / corpus

    def manifest(self, corpus: str) -> Path:
        return self.shards_dir(corpus) / "manifest.json"

    # -- models ----------------------------------------------------------------------------
    @property
    def models_dir(self) -> Path:
        return self.build / "models"

    @property
    def base_model(self) -> Path:
        return self.models_dir / "base"

    @property
    def midtrain_models(self) -> Path:
        return self.models_dir / "midtrain"

    def midtrain_model(self, tag: str) -> Path:
        return self.midtrain_models / tag

    def arm_midtrain(self, arm: Arm) -> Path | None:
        """The arm's midtrained checkpoint, or None."""
        return None if arm.midtrain_tag is None else self.midtrain_model(arm.midtrain_tag)

    def arm_aft(self, arm: Arm) -> Path | None:
        """The arm's AFT checkpoint, or None."""
        return None if arm.aft is None else self.aft_model(arm.name)

    def arm_model(self, arm: Arm) -> Path:
        """The checkpoint the arm's evals load: AFT, else midtrained, else the base model (the
        tiny model's directory, or the hub id or local path the arm names)."""
        trained = self.arm_aft(arm) or self.arm_midtrain(arm)
        return trained or (self.base_model if arm.base_model == "tiny" else Path(arm.base_model))

    @property
    def aft_models(self) -> Path:
        return self.models_dir / "aft"

    def aft_model(self, arm: str) -> Path:
        return self.aft_models / arm

    # -- AFT data --------------------------------------------------------------------------
    @property
    def aft_dir(self) -> Path:
        return self.build / "aft"

    def aft_data(self, dataset: str, fraction: float = 1.0, sources: str = "all") -> Path:
        """<dataset>.jsonl; -fraction<f> for a subset (sweep arms differ), -instruction_only
        for the IT-only rows of a mix."""
        suffix = "" if fraction >= 1 else f"-fraction{fraction:g}"
        suffix += "" if sources == "all" else f"-{sources}"
        return self.aft_dir / f"{dataset}{suffix}.jsonl"

    def aft_calls(self, dataset: str) -> Path:
        return self.aft_dir / f"{dataset}.calls.parquet"

    def aft_generation(self, dataset: str) -> Path:
        return self.aft_dir / f"{dataset}.generation.json"

    # -- evals -----------------------------------------------------------------------------
    @property
    def evals_dir(self) -> Path:
        return self.build / "evals"

    def eval_dir(self, arm: str, suite: str) -> Path:
        return self.evals_dir / arm / suite

    def eval_summary(self, arm: str, suite: str) -> Path:
        return self.eval_dir(arm, suite) / EVAL_SUMMARY

    def eval_items(self, arm: str, suite: str) -> Path:
        return self.eval_dir(arm, suite) / EVAL_ITEMS

    def eval_calls(self, arm: str, suite: str) -> Path:
        return self.eval_dir(arm, suite) / EVAL_CALLS

    # -- results and report ----------------------------------------------------------------
    @property
    def results_dir(self) -> Path:
        return self.build / "results"

    def table(self, name: str) -> Path:
        return self.results_dir / f"{name}.parquet"

    @property
    def catalog_sql(self) -> Path:
        return self.results_dir / "catalog.sql"

    @property
    def metrics(self) -> Path:
        return self.results_dir / "metrics.json"

    def plot(self, name: str) -> Path:
        return self.results_dir / "plots" / f"{name}.csv"

    @property
    def catalog_stamp(self) -> Path:
        """Touched after every catalog build; outside build/results, a DVC output that must not
        change after its stage ran (``dvc status`` would report the catalog modified)."""
        return self.build / ".catalog-built"

    # -- contamination audit ------------------------------------------------------------------
    @property
    def audit_dir(self) -> Path:
        """build/audit/: the contamination audit's outputs."""
        return self.build / "audit"

    @property
    def audit_summary(self) -> Path:
        """Measures, per (arm, suite, role) verdicts, passed."""
        return self.audit_dir / "summary.json"

    @property
    def contamination(self) -> Path:
        """One row per (arm, eval item): the catalog's contamination table."""
        return self.audit_dir / "contamination.parquet"

    @property
    def report_dir(self) -> Path:
        return self.build / "report"

    @property
    def report_index(self) -> Path:
        return self.report_dir / "index.html"

    # -- gc roots and logs -----------------------------------------------------------------
    @property
    def refs_dir(self) -> Path:
        return self.build / "refs"

    def ref(self, name: str) -> Path:
        return self.refs_dir / f"{name}.json"

    @staticmethod
    def eval_root(arm: str, suite: str) -> str:
        """The gc-root name of one arm's result for one suite (the catalog reads its key)."""
        return f"eval-{arm}-{suite}"

    def log(self, *parts: str) -> Path:
        """logs/<parts...>.log: a workflow job's log."""
        *dirs, last = parts
        return self.logs.joinpath(*dirs, f"{last}.log")

    def owner(self, artifact: PathLike) -> tuple[str, str | None] | None:
        """What an artifact under build/ belongs to, by its place in this layout.

        ("corpus" | "shards", corpus), ("midtrain", tag), ("aft" | "eval", arm),
        ("results", None) for the catalog and report; None for anything else.
        """
        parts = Path(artifact).parts
        build = self.build.parts
        rel = parts[len(build):] if parts[: len(build)] == build else parts
        if len(rel) >= 2 and rel[0] in ("corpora", "shards"):
            return ("corpus" if rel[0] == "corpora" else "shards", rel[1])
        if len(rel) >= 3 and rel[:2] in (("models", "midtrain"), ("models", "aft")):
            return (rel[1], rel[2])
        if len(rel) >= 2 and rel[0] == "evals":
            return ("eval", rel[1])
        if rel[:1] in (("results",), ("report",)):
            return ("results", None)
        return None

    def glob(self, path: Path) -> list[Path]:
        """Existing files matching a layout path built with "*" parts, e.g. documents_index("*")."""
        return sorted(self.build.glob(path.relative_to(self.build).as_posix()))

    def train_logs(self) -> list[Path]:
        """Every training run's loss log under build/models."""
        return sorted(self.models_dir.glob(f"**/{TRAIN_LOG}"))

    def sources(self) -> list[Path]:
        """Every built file the results catalog reads (its freshness inputs)."""
        patterns = (self.documents_index("*"), self.ideas_index("*"), self.step_calls("*", "*"),
                    self.idea_calls_partition("*", "*"), self.manifest("*"),
                    self.eval_summary("*", "*"), self.eval_items("*", "*"),
                    self.eval_calls("*", "*"), self.aft_calls("*"), self.contamination)
        return ([p for pattern in patterns for p in self.glob(pattern)] + self.train_logs()
                + sorted(self.models_dir.glob(f"**/{LINEAGE}")))


# -- the store's directory (.msmbuild/store): state kept beside its objects ---------------
def batch_state_dir(store_root: PathLike) -> Path:
    """Where the anthropic backend's batch ledger lives (batches survive a killed run)."""
    return Path(store_root) / "batches"


def resume_dir(store_root: PathLike, key: str) -> Path:
    """A training action's resume state (deleted once the checkpoint is stored)."""
    return Path(store_root) / "resume" / key

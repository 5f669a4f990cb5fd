"""Where every artifact lives: the one answer to "which path does X have".

Every path under ``build/``, ``logs/`` and ``.msmbuild/`` is named here and nowhere else:
the library, the CLI, ``msmbuild status`` and the Snakemake rules (``rules/common.smk``
builds a Layout from params.yaml) all ask a :class:`Layout`. ``dvc.yaml`` cannot run
Python; a test checks its paths against this module.

    build/corpora/<corpus>/{sections,tree,assertions}.json, {ideas,documents,calls}.parquet,
                           calls/<step>.parquet
    build/shards/<corpus>/manifest.json, <shard>.bin, <shard>.idx
    build/models/base/, build/models/midtrain/<tag>/, build/models/aft/<arm>/
    build/aft/<dataset>[-fraction<f>].jsonl, <dataset>.calls.parquet, <dataset>.generation.json
    build/evals/<arm>/<suite>/{summary.json, items.parquet, calls.parquet}
    build/results/<table>.parquet, catalog.sql, metrics.json, plots/*.csv; build/.catalog-built
    build/report/index.html
    build/refs/<name>.json                     gc roots: the action keys behind each output
    logs/<stage>/.../<name>.log                one per workflow job
    .msmbuild/store/                           the store; batches/ and resume/ beside its objects
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from msmbuild.config import Params

DEFAULT_STORE_PATH = ".msmbuild/store"
LOGS_DIR = "logs"
CORPUS_STEPS = ("tree", "ideas", "documents")
# The files of one eval result tree (stored as one tree, materialized at eval_dir).
EVAL_SUMMARY, EVAL_ITEMS, EVAL_CALLS = "summary.json", "items.parquet", "calls.parquet"
# The loss log a training run writes into its checkpoint (the catalog's runs table).
TRAIN_LOG = "train_log.jsonl"

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Layout:
    """The build tree rooted at ``build`` (params.yaml ``build_dir``) plus the logs directory."""

    build: Path
    logs: Path = Path(LOGS_DIR)

    def __init__(self, build: PathLike = "build", logs: PathLike = LOGS_DIR) -> None:
        object.__setattr__(self, "build", Path(build))
        object.__setattr__(self, "logs", Path(logs))

    @classmethod
    def of(cls, params: Params) -> Layout:
        """The layout params.yaml describes."""
        return cls(params.build_dir)

    # -- corpora ---------------------------------------------------------------------------
    def corpus_dir(self, corpus: str) -> Path:
        """build/corpora/<corpus>/."""
        return self.build / "corpora" / corpus

    def sections(self, corpus: str) -> Path:
        """Parsed spec sections recorded at the last tree build (what ``status`` compares)."""
        return self.corpus_dir(corpus) / "sections.json"

    def tree(self, corpus: str) -> Path:
        """Domains → subdomains."""
        return self.corpus_dir(corpus) / "tree.json"

    def assertions(self, corpus: str) -> Path:
        """Assertions and document types per subdomain."""
        return self.corpus_dir(corpus) / "assertions.json"

    def ideas(self, corpus: str) -> Path:
        """(subdomain, doc type, idea, suitable) rows."""
        return self.corpus_dir(corpus) / "ideas.parquet"

    def documents(self, corpus: str) -> Path:
        """One row per kept document."""
        return self.corpus_dir(corpus) / "documents.parquet"

    def step_calls(self, corpus: str, step: str) -> Path:
        """The model calls of one generation step."""
        return self.corpus_dir(corpus) / "calls" / f"{step}.parquet"

    def corpus_calls(self, corpus: str) -> Path:
        """Every model call of the corpus (the step tables together)."""
        return self.corpus_dir(corpus) / "calls.parquet"

    # -- shards ----------------------------------------------------------------------------
    def shards_dir(self, corpus: str) -> Path:
        """build/shards/<corpus>/: <shard>.bin and .idx files."""
        return self.build / "shards" / corpus

    def manifest(self, corpus: str) -> Path:
        """The shard list of a corpus."""
        return self.shards_dir(corpus) / "manifest.json"

    # -- models ----------------------------------------------------------------------------
    @property
    def models_dir(self) -> Path:
        """build/models/."""
        return self.build / "models"

    @property
    def base_model(self) -> Path:
        """Where the tiny base model is materialized."""
        return self.models_dir / "base"

    @property
    def midtrain_models(self) -> Path:
        """build/models/midtrain/."""
        return self.models_dir / "midtrain"

    def midtrain_model(self, tag: str) -> Path:
        """A midtrained checkpoint, shared by the arms with that midtraining tag."""
        return self.midtrain_models / tag

    @property
    def aft_models(self) -> Path:
        """build/models/aft/."""
        return self.models_dir / "aft"

    def aft_model(self, arm: str) -> Path:
        """An arm's AFT checkpoint."""
        return self.aft_models / arm

    # -- AFT data --------------------------------------------------------------------------
    @property
    def aft_dir(self) -> Path:
        """build/aft/."""
        return self.build / "aft"

    def aft_data(self, dataset: str, fraction: float = 1.0) -> Path:
        """<dataset>.jsonl, or <dataset>-fraction<f>.jsonl for a subset (sweep arms differ)."""
        suffix = "" if fraction >= 1 else f"-fraction{fraction:g}"
        return self.aft_dir / f"{dataset}{suffix}.jsonl"

    def aft_calls(self, dataset: str) -> Path:
        """The calls that generated an AFT dataset (the catalog's calls table)."""
        return self.aft_dir / f"{dataset}.calls.parquet"

    def aft_generation(self, dataset: str) -> Path:
        """The generation report of an AFT dataset (counts per stage, rejections)."""
        return self.aft_dir / f"{dataset}.generation.json"

    # -- evals -----------------------------------------------------------------------------
    @property
    def evals_dir(self) -> Path:
        """build/evals/."""
        return self.build / "evals"

    def eval_dir(self, arm: str, suite: str) -> Path:
        """One arm's results for one suite: summary.json, items.parquet, calls.parquet."""
        return self.evals_dir / arm / suite

    def eval_summary(self, arm: str, suite: str) -> Path:
        """The suite's summary (metrics with intervals)."""
        return self.eval_dir(arm, suite) / EVAL_SUMMARY

    def eval_items(self, arm: str, suite: str) -> Path:
        """Per-item rows."""
        return self.eval_dir(arm, suite) / EVAL_ITEMS

    def eval_calls(self, arm: str, suite: str) -> Path:
        """The judge's model calls, for judged suites."""
        return self.eval_dir(arm, suite) / EVAL_CALLS

    # -- results and report ----------------------------------------------------------------
    @property
    def results_dir(self) -> Path:
        """build/results/: the catalog (a DVC output)."""
        return self.build / "results"

    def table(self, name: str) -> Path:
        """A catalog table."""
        return self.results_dir / f"{name}.parquet"

    @property
    def catalog_sql(self) -> Path:
        """CREATE VIEW statements for the DuckDB CLI."""
        return self.results_dir / "catalog.sql"

    @property
    def metrics(self) -> Path:
        """DVC metrics."""
        return self.results_dir / "metrics.json"

    def plot(self, name: str) -> Path:
        """A DVC plot table."""
        return self.results_dir / "plots" / f"{name}.csv"

    @property
    def catalog_stamp(self) -> Path:
        """Touched after every catalog build.

        Beside build/results, not in it: build/results is a DVC output, and a file appearing
        in it after its stage ran (``msmbuild report`` checking the catalog is fresh) would
        make ``dvc status`` report the catalog modified.
        """
        return self.build / ".catalog-built"

    @property
    def report_dir(self) -> Path:
        """build/report/."""
        return self.build / "report"

    @property
    def report_index(self) -> Path:
        """The HTML report."""
        return self.report_dir / "index.html"

    # -- gc roots and logs -----------------------------------------------------------------
    @property
    def refs_dir(self) -> Path:
        """build/refs/: one file of live action keys per output."""
        return self.build / "refs"

    def ref(self, name: str) -> Path:
        """The gc-root file of one output."""
        return self.refs_dir / f"{name}.json"

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
        """Existing files matching a layout path built with "*" parts, e.g. documents("*")."""
        return sorted(self.build.glob(path.relative_to(self.build).as_posix()))

    def train_logs(self) -> list[Path]:
        """Every training run's loss log under build/models."""
        return sorted(self.models_dir.glob(f"**/{TRAIN_LOG}"))

    def sources(self) -> list[Path]:
        """Every built file the results catalog reads (its freshness inputs)."""
        patterns = (self.documents("*"), self.corpus_calls("*"), self.manifest("*"),
                    self.eval_summary("*", "*"), self.eval_items("*", "*"),
                    self.eval_calls("*", "*"), self.aft_calls("*"))
        return [p for pattern in patterns for p in self.glob(pattern)] + self.train_logs()


# -- the store's directory (.msmbuild/store): state kept beside its objects ---------------
def batch_state_dir(store_root: PathLike) -> Path:
    """Where the anthropic backend's batch ledger lives (batches survive a killed run)."""
    return Path(store_root) / "batches"


def resume_dir(store_root: PathLike, key: str) -> Path:
    """A training action's resume state (deleted once the checkpoint is stored)."""
    return Path(store_root) / "resume" / key

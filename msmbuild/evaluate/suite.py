"""The eval-suite interface and its registry.

A suite is an :class:`EvalSuite` subclass in a module of ``msmbuild.evaluate``; defining it
registers it, and ``suites()`` imports every module of the package, so adding a suite is
one new module (plus its section under ``evals`` in msmbuild/config.py). The runner, the
CLI and the Snakemake rules all ask this registry.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from msmbuild.config import EvalsConfig, Params
from msmbuild.errors import EvalInputError
from msmbuild.hashing import digest_file

_REGISTERED: dict[str, type[EvalSuite]] = {}


@dataclass
class SuiteResult:
    """What a suite run produces: per-item rows, metric rows, the calls it made, extra summary fields."""

    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    call_rows: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditItem:
    """One eval item as the contamination audit sees it: the texts compared with training inputs."""

    item_id: str
    role: str
    domain: str
    texts: tuple[str, ...]  # the whole item first, then its parts (e.g. each option)


class EvalSuite:
    """One eval suite. Its result on a checkpoint is one store action (see runner.py)."""

    name: ClassVar[str]
    # Bump when the suite's scoring changes meaning; old results then stop matching.
    version: ClassVar[int] = 1
    # Config fields that do not change results (e.g. batch size) stay out of the key.
    not_in_key: ClassVar[frozenset[str]] = frozenset()
    # True when running the suite calls a model API (a Snakemake `api` resource unit).
    uses_model_api: ClassVar[bool] = False
    # The suite whose per-sample rows (items.parquet) on the same arm this one reads, if any:
    # it runs after that suite, and those rows' digest is in its key.
    reads: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTERED[cls.name] = cls

    def config(self, params: Params) -> Any:
        """The suite's section of params.yaml (``evals.<name>``)."""
        return getattr(params.evals, self.name)

    def data_files(self, params: Params) -> list[str]:
        """Eval data files the suite reads (their digests are in its key)."""
        path = getattr(self.config(params), "path", None)
        return [path] if path else []

    def key_inputs(self, params: Params) -> dict[str, Any]:
        """Inputs beyond checkpoint, version and config that determine the result."""
        inputs: dict[str, Any] = {}
        for path in self.data_files(params):
            if not Path(path).is_file():
                raise EvalInputError(f"{path}: eval data file not found (params.yaml: evals.{self.name}.path)")
            inputs["data"] = digest_file(path)
        return inputs

    def settings(self, params: Params) -> dict[str, Any]:
        """What a workflow job of this suite depends on in params.yaml (a rerun trigger)."""
        return {"suite": self.config(params).model_dump(mode="json"), "judge": None}

    def audit_items(self, params: Params) -> list[AuditItem]:
        """The suite's items for the contamination audit; [] when it has no local item texts."""
        return []

    def run(self, params: Params, model_dir: Path, workdir: Path, store: Any,
            progress: bool, upstream: Path | None = None) -> SuiteResult:
        """Evaluate the checkpoint at model_dir; workdir becomes the stored result tree.

        ``upstream`` is the items.parquet of the suite named by ``reads`` (else None).
        """
        raise NotImplementedError


def judge_key(params: Params, backend_name: str) -> dict[str, Any]:
    """The judge backend's identity as key inputs (none for the offline judge)."""
    if backend_name == "offline":
        return {}
    from msmbuild.generate.backends import make_backend

    backend = make_backend(backend_name, params)
    try:
        return {"judge": backend.identity()}
    finally:
        backend.close()


def judge_setting(params: Params, backend_name: str) -> str | None:
    """The judge model a workflow job depends on: the anthropic backend's model, else None."""
    return params.backends.anthropic.model if backend_name == "anthropic" else None


def suites() -> dict[str, EvalSuite]:
    """Every eval suite by name, in the order params.yaml's ``evals`` section lists them."""
    import msmbuild.evaluate as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    order = list(EvalsConfig.model_fields)
    names = sorted(_REGISTERED, key=lambda n: (order.index(n) if n in order else len(order), n))
    return {name: _REGISTERED[name]() for name in names}


def suite_named(name: str) -> EvalSuite:
    """The suite called name; an unknown name is an EvalInputError listing the known ones."""
    known = suites()
    if name not in known:
        raise EvalInputError(f"unknown eval suite {name!r} (known: {', '.join(known)})")
    return known[name]

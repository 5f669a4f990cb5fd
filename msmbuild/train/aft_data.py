"""AFT data: chat demonstrations as jsonl, validated and subset by ``fraction``.

Rows are ``{"messages": [{"role": ..., "content": ...}, ...]}`` with optional fields
(``id``, ``think``) kept as they are; ``<think>`` blocks inside assistant turns stay in the
target. ``fraction`` keeps a fixed-seed subset that is nested: each row gets a rank from
the digest of its question id (``aft_mix.question_id``: a CoT row and its stripped twin
share it), and a fraction keeps the lowest ranks, so the ¼ subset is inside the ½ subset,
adding rows elsewhere does not reshuffle it, and a CoT set and its no-CoT twin keep the
same questions at every fraction.

Source ``generated`` builds the rows from a spec through a generation backend: user
queries per domain (the spec's top-level sections) → a reply to each with the domain's
spec text in context (with a ``<think>`` block when ``think``) → a consistency judge per
example; only replies the judge marks consistent are kept. Every call is a store action
(``run_requests``), and a call sees only its domain's text, so editing one section
regenerates that domain's examples only. The spec is not part of the training rows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msmbuild.errors import TrainingInputError
from msmbuild.fsutil import write_bytes_if_changed
from msmbuild.hashing import canonical_json, digest_bytes
from msmbuild.layout import Layout
from msmbuild.store import write_roots
from msmbuild.train.chat_rows import read_demonstrations, validate_row

__all__ = ["AftDataFile", "aft_data_files", "aft_dataset_closure", "aft_input_files", "arm_aft_data", "full_rows", "nested_subset",
           "prepare_aft_data", "prepare_arm_aft_data", "read_demonstrations",
           "strip_think_row", "validate_row"]

if TYPE_CHECKING:
    from msmbuild.config import Params
    from msmbuild.experiments import Arm
    from msmbuild.store import Store

THINK_BLOCK = re.compile(r"<think>.*?</think>\s*", re.S)
SUBSET_SEED = "aft-subset-v2"  # v2: ranked by question id


def nested_subset(rows: list[dict[str, Any]], fraction: float) -> list[dict[str, Any]]:
    """The rows of the fixed-seed nested subset of size round(fraction × n) (at least 1)."""
    if fraction >= 1:
        return list(rows)
    from msmbuild.train.aft_mix import question_id

    n_keep = max(1, round(fraction * len(rows)))
    ranks = sorted(range(len(rows)), key=lambda i: (
        digest_bytes(SUBSET_SEED.encode() + canonical_json(question_id(rows[i]))), i))
    keep = set(ranks[:n_keep])
    return [r for i, r in enumerate(rows) if i in keep]


def aft_input_files(params: Params, name: str) -> list[str]:
    """The local files dataset ``name`` is built from (a workflow's rerun triggers)."""
    cfg = params.aft[name]
    if cfg.source == "generated":
        return [cfg.spec] if cfg.spec else []
    if cfg.source == "file":
        return [cfg.path] if cfg.path else []
    if cfg.source == "strip_think":
        return aft_input_files(params, cfg.of) if cfg.of in params.aft else []
    files: list[str] = []
    for src in cfg.sources:
        files += aft_input_files(params, src.aft) if src.aft is not None else (
            [src.path] if src.path is not None else [])
    return files


def full_rows(params: Params, name: str, store: Store | None = None) -> list[dict[str, Any]]:
    """The rows of a file, generated or strip_think dataset before its fraction is applied."""
    cfg = params.aft[name]
    layout = Layout.of(params)
    if cfg.source == "strip_think":
        return [strip_think_row(r) for r in full_rows(params, _cot_source(params, name), store)]
    if cfg.source == "generated":
        if store is None:
            from msmbuild.config import open_store

            store = open_store(params)
        from msmbuild.generate.demonstrations import generate_demonstrations
        from msmbuild.tables import SCHEMAS, write_table_if_changed

        generated, report, call_rows = generate_demonstrations(params, name, store)
        write_bytes_if_changed(layout.aft_generation(name),
                          (json.dumps(report, indent=2, sort_keys=True) + "\n").encode("utf-8"))
        write_table_if_changed(layout.aft_calls(name), call_rows, SCHEMAS["calls"])
        write_roots(params.build_dir, f"aftdata-{name}", [r["key"] for r in call_rows if not r["error"]])
        if not generated:
            raise TrainingInputError(
                f"params.yaml: aft.{name}: no generated example passed the consistency filter "
                f"(see {layout.aft_generation(name)})")
        rows = [validate_row(r, f"aft.{name} generated row {r['id']}") for r in generated]
    else:
        if not cfg.path:
            raise TrainingInputError(f"params.yaml: key 'aft.{name}.path' is required for source: file")
        rows = read_demonstrations(cfg.path)
        layout.aft_calls(name).unlink(missing_ok=True)  # no longer generated
    return rows


def _cot_source(params: Params, name: str) -> str:
    """The dataset a strip_think dataset strips (a file or generated one)."""
    of = params.aft[name].of
    if of is None or of not in params.aft or params.aft[of].source in ("mix", "strip_think"):
        raise TrainingInputError(f"params.yaml: key 'aft.{name}.of' must name a file or generated AFT dataset")
    return of


def strip_think_row(row: dict[str, Any]) -> dict[str, Any]:
    """The same example without its reasoning: <think> blocks removed from assistant turns.

    The row keeps its id (and records it as ``paired_with``), so a CoT dataset and its
    stripped twin pair up row by row.
    """
    messages = [{**m, "content": THINK_BLOCK.sub("", m["content"]).strip()} if m["role"] == "assistant" else m
                for m in row["messages"]]
    return {**row, "messages": messages, "think": False, "paired_with": row.get("id")}


def prepare_aft_data(params: Params, name: str, store: Store | None = None,
                     sources: str = "all", whole: bool = False) -> Path:
    """Write build/aft/<name>[-fraction<f>][-instruction_only].jsonl from the dataset's source
    (``whole``: every row, whatever ``fraction`` says; the audit reads that file)."""
    if name not in params.aft:
        raise TrainingInputError(f"params.yaml: no AFT dataset named {name!r}")
    cfg = params.aft[name]
    if whole and cfg.fraction < 1:
        cfg = cfg.model_copy(update={"fraction": 1.0})
        params = params.model_copy(update={"aft": {**params.aft, name: cfg}})
    out = Layout.of(params).aft_data(name, cfg.fraction, sources)
    if sources != "all" and cfg.source != "mix":
        raise TrainingInputError(f"params.yaml: aft.{name}: {sources} needs source: mix")
    if cfg.source == "mix":
        from msmbuild.train.aft_mix import build_mix

        rows = build_mix(params, name, sources, lambda other: read_demonstrations(
            prepare_aft_data(params, other, store)))
    elif cfg.source == "strip_think":  # subset the CoT rows, so the pairs survive a fraction
        source = full_rows(params, _cot_source(params, name), store)
        rows = [strip_think_row(r) for r in nested_subset(source, cfg.fraction)]
    else:
        rows = nested_subset(full_rows(params, name, store), cfg.fraction)
    data = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    write_bytes_if_changed(out, data.encode("utf-8"))
    return out


def arm_aft_data(params: Params, arm: Arm) -> Path:
    """The file ``arm`` trains on: its dataset at the arm's fraction, the IT rows alone for
    the IT-only baseline."""
    if arm.aft is None:
        raise TrainingInputError(f"arm {arm.name!r} has no AFT dataset")
    fraction = arm.params(params).aft[arm.aft].fraction
    return Layout.of(params).aft_data(arm.aft, fraction, arm.aft_sources)


def prepare_arm_aft_data(params: Params, arm: Arm, store: Store | None = None) -> Path:
    """Write the file ``arm`` trains on (a data stage of its own: training only reads it)."""
    if arm.aft is None:
        raise TrainingInputError(f"arm {arm.name!r} has no AFT dataset")
    return prepare_aft_data(arm.params(params), arm.aft, store, arm.aft_sources)


def aft_dataset_closure(params: Params, name: str) -> list[str]:
    """``name`` and every AFT dataset it is built from (a mix's sources, a strip_think's CoT set)."""
    cfg = params.aft[name]
    parts = [cfg.of] if cfg.source == "strip_think" and cfg.of else [s.aft for s in cfg.sources if s.aft]
    out = [name]
    for part in parts:
        if part in params.aft:
            out += [n for n in aft_dataset_closure(params, part) if n not in out]
    return out


@dataclass(frozen=True)
class AftDataFile:
    """How one file under build/aft/ is made: an arm's training file, or (arm None) the
    whole dataset, which the contamination audit reads."""

    dataset: str
    arm: str | None


def aft_data_files(params: Params) -> dict[str, AftDataFile]:
    """Every AFT data file the experiment matrix needs, by file name."""
    from msmbuild.experiments import aft_arms

    layout = Layout.of(params)
    out: dict[str, AftDataFile] = {}
    for arm in aft_arms(params):
        assert arm.aft is not None
        out.setdefault(arm_aft_data(params, arm).name, AftDataFile(arm.aft, arm.name))
        out.setdefault(layout.aft_data(arm.aft).name, AftDataFile(arm.aft, None))
    return out

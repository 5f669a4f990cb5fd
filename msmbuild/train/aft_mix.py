"""AFT data mixes: spec demonstrations and instruction-tuning data drawn by proportion.

The paper's AFT mixes the spec data with an instruction-tuning (IT) set, and its baseline
is trained on the IT data alone. A mix lists sources, each with a proportion:

- ``aft: <name>``: another AFT dataset of params.yaml (a file or generated from a spec);
- ``path: file.jsonl|file.parquet``: local chat rows;
- ``hub: <dataset id or local dataset dir>``: read with ``datasets.load_dataset`` when the
  mix is built (never at import or plan time).

Each source's rows are ranked by the digest of their question id (``question_id``), and a
source contributes its lowest-ranked rows, so the choice is fixed, independent of file
order, and the instruction-only baseline trains on exactly the IT rows that the mixed arm
sees. The question id is shared by a CoT row and its stripped twin, so a CoT mix and its
no-CoT mix at any ``fraction`` hold the same questions. Every
output row carries ``source`` (where it came from) and ``source_role`` (spec or
instruction) so the proportions can be checked in the training data itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msmbuild.errors import TrainingInputError
from msmbuild.hashing import canonical_json, digest_bytes

if TYPE_CHECKING:
    from msmbuild.config import AftSourceConfig, Params

DatasetRows = Callable[[str], list[dict[str, Any]]]

MIX_SEED = "aft-mix-v2"  # v2: ranked by question id, not by the whole conversation
# ShareGPT-style speakers (the `from` field) and the chat roles they stand for.
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant", "chatgpt": "assistant", "bing": "assistant"}


def source_label(src: AftSourceConfig) -> str:
    """A short name for a source: aft:<name>, path:<file> or hub:<id>[:split]."""
    if src.aft is not None:
        return f"aft:{src.aft}"
    if src.path is not None:
        return f"path:{src.path}"
    return f"hub:{src.hub}:{src.split}" + (f"@{src.revision}" if src.revision else "")


def normalize_messages(raw: Any, where: str) -> list[dict[str, str]]:
    """[{role, content}] from a chat column in OpenAI or ShareGPT form; errors name the row."""
    if not isinstance(raw, list) or not raw:
        raise TrainingInputError(f"{where}: expected a non-empty list of messages")
    out = []
    for j, msg in enumerate(raw):
        if not isinstance(msg, dict):
            raise TrainingInputError(f"{where}: message {j} is not an object")
        if "role" in msg and "content" in msg:
            out.append({"role": msg["role"], "content": msg["content"]})
        elif "from" in msg and "value" in msg and str(msg["from"]).lower() in SHAREGPT_ROLES:
            out.append({"role": SHAREGPT_ROLES[str(msg["from"]).lower()], "content": msg["value"]})
        else:
            raise TrainingInputError(
                f"{where}: message {j} needs role/content or ShareGPT from/value (got keys {sorted(msg)})")
    return out


def _table_rows(records: Any, field: str, where: str) -> list[dict[str, Any]]:
    """Chat rows from an iterable of records (a parquet table's or a hub dataset's)."""
    from msmbuild.train.chat_rows import validate_row

    rows = []
    for n, rec in enumerate(records, 1):
        if field not in rec:
            raise TrainingInputError(f"{where}: row {n} has no column {field!r} (messages_field)")
        row = {"messages": normalize_messages(rec[field], f"{where}: row {n}")}
        rows.append(validate_row(row, f"{where}: row {n}"))
    if not rows:
        raise TrainingInputError(f"{where}: no rows")
    return rows


def read_source(src: AftSourceConfig, where: str, dataset_rows: DatasetRows) -> list[dict[str, Any]]:
    """The rows of one mix source (an aft dataset, a local file, or a hub dataset)."""
    from msmbuild.train.chat_rows import read_demonstrations

    if src.aft is not None:
        return dataset_rows(src.aft)
    if src.path is not None:
        path = Path(src.path)
        if not path.is_file():
            raise TrainingInputError(f"{where}.path: {path} not found")
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return _table_rows(pq.read_table(path).to_pylist(), src.messages_field, str(path))
        if src.messages_field == "messages":
            return read_demonstrations(path)
        from msmbuild.fsutil import iter_jsonl

        return _table_rows((row for _n, row in iter_jsonl(path, TrainingInputError, "AFT data")),
                           src.messages_field, str(path))
    return _table_rows(_load_hub(src, where), src.messages_field, f"{where}.hub {src.hub}")


def _load_hub(src: AftSourceConfig, where: str) -> Any:
    """The hub dataset of a source (msmbuild.hubdata: imported when the mix is built)."""
    from msmbuild.hubdata import load_hub_dataset

    return load_hub_dataset(src.hub, src.split, src.revision, where, TrainingInputError)


def question_id(row: dict[str, Any]) -> Any:
    """What identifies the question a row answers, whatever its reply says.

    A stripped row's ``paired_with`` (the id of the CoT row it came from), else the row's
    ``id``, else its non-assistant turns (the conversation without the replies). A CoT row
    and its strip_think twin therefore share one question id.
    """
    if row.get("paired_with") is not None:
        return ["id", row["paired_with"]]
    if row.get("id") is not None:
        return ["id", row["id"]]
    return ["turns", [m for m in row["messages"] if m["role"] != "assistant"]]


def _ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in their fixed order of preference: digest of the question id, then position."""
    order = sorted(range(len(rows)), key=lambda i: (
        digest_bytes(MIX_SEED.encode() + canonical_json(question_id(rows[i]))), i))
    return [rows[i] for i in order]


def mix_counts(available: list[int], proportions: list[float], total: int | None,
               names: list[str]) -> list[int]:
    """Rows per source: shares of ``total`` by largest remainder (sum is exactly total).

    Without a total, the largest one every source can supply without repeating a row.
    """
    weights = [p / sum(proportions) for p in proportions]
    if total is None:
        total = min(math.floor(a / w + 1e-9) for a, w in zip(available, weights, strict=True))
    exact = [w * total for w in weights]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    for name, want, have in zip(names, counts, available, strict=True):
        if want > have:
            raise TrainingInputError(
                f"{name}: the mix needs {want} rows from this source, it has {have} "
                "(lower n_examples or this source's proportion)")
    return counts


def build_mix(params: Params, name: str, sources: str, dataset_rows: DatasetRows) -> list[dict[str, Any]]:
    """The rows of mix ``name`` (fraction applied); ``sources='instruction_only'`` keeps IT rows only.

    ``dataset_rows(other)`` gives the rows of another AFT dataset of params (an ``aft:`` source).
    """
    cfg = params.aft[name]
    labels, pools = [], []
    for i, src in enumerate(cfg.sources):
        where = f"params.yaml: aft.{name}.sources[{i}]"
        rows = _ranked(read_source(src, where, dataset_rows))
        label = source_label(src)
        labels.append(label)
        pools.append([{**{k: v for k, v in r.items() if k not in ("source", "source_role")},
                       "source": label, "source_role": src.role} for r in rows])
    names = [f"params.yaml: aft.{name}.sources[{i}] ({lab})" for i, lab in enumerate(labels)]
    proportions = [s.proportion for s in cfg.sources]
    return _assemble(pools, proportions, names, cfg.n_examples, cfg.fraction, sources)


def _assemble(pools: list[list[dict[str, Any]]], proportions: list[float], names: list[str],
              n_examples: int | None, fraction: float, sources: str) -> list[dict[str, Any]]:
    """The mix's rows: the full mix's size scaled by fraction, then shares per source."""
    full = sum(mix_counts([len(p) for p in pools], proportions, n_examples, names))
    total = full if fraction >= 1 else max(1, round(fraction * full))
    counts = mix_counts([len(p) for p in pools], proportions, total, names)
    chosen = [row for pool, k in zip(pools, counts, strict=True) for row in pool[:k]]
    if sources == "instruction_only":
        chosen = [r for r in chosen if r["source_role"] == "instruction"]
    return _ranked(chosen)

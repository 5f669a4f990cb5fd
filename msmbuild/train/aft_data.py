"""AFT data: chat demonstrations as jsonl, validated and subset by ``fraction``.

Rows are ``{"messages": [{"role": ..., "content": ...}, ...]}`` with optional fields
(``id``, ``think``) kept as they are; ``<think>`` blocks inside assistant turns stay in the
target. ``fraction`` keeps a fixed-seed subset that is nested: each row gets a rank from
the digest of its content, and a fraction keeps the lowest ranks, so the ¼ subset is
inside the ½ subset and adding rows elsewhere does not reshuffle it.

Source ``generated`` builds the rows from a spec through a generation backend: user
queries per domain (the spec's top-level sections) → a reply to each with the domain's
spec text in context (with a ``<think>`` block when ``think``) → a consistency judge per
example; only replies the judge marks consistent are kept. Every call is a store action
(``run_requests``), and a call sees only its domain's text, so editing one section
regenerates that domain's examples only. The spec is not part of the training rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msmbuild.errors import TrainingInputError
from msmbuild.fsutil import iter_jsonl, write_bytes_if_changed
from msmbuild.hashing import canonical_json, digest_bytes
from msmbuild.layout import Layout
from msmbuild.store import write_roots

if TYPE_CHECKING:
    from msmbuild.config import Params
    from msmbuild.store import Store

ROLES = {"system", "user", "assistant"}
SUBSET_SEED = "aft-subset-v1"


def validate_row(row: Any, where: str) -> dict[str, Any]:
    """Check one demonstration; errors name the file and line."""
    if not isinstance(row, dict) or not isinstance(row.get("messages"), list) or not row["messages"]:
        raise TrainingInputError(f"{where}: expected an object with a non-empty 'messages' list")
    for j, msg in enumerate(row["messages"]):
        if not isinstance(msg, dict) or msg.get("role") not in ROLES or not isinstance(msg.get("content"), str):
            raise TrainingInputError(
                f"{where}: messages[{j}] needs a role in {sorted(ROLES)} and a string content")
    for j, msg in enumerate(row["messages"]):
        if msg["role"] == "assistant" and not msg["content"].strip():
            raise TrainingInputError(
                f"{where}: messages[{j}] is an empty assistant turn (nothing to train on)")
    if not any(m["role"] == "assistant" for m in row["messages"]):
        raise TrainingInputError(f"{where}: no assistant turn (nothing to train on)")
    return row


def read_demonstrations(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate a jsonl file of chat demonstrations."""
    path = Path(path)
    rows = [validate_row(row, f"{path}:{n}")
            for n, row in iter_jsonl(path, TrainingInputError, "AFT data")]
    if not rows:
        raise TrainingInputError(f"{path}: no demonstrations")
    return rows


def nested_subset(rows: list[dict[str, Any]], fraction: float) -> list[dict[str, Any]]:
    """The rows of the fixed-seed nested subset of size round(fraction × n) (at least 1)."""
    if fraction >= 1:
        return list(rows)
    n_keep = max(1, round(fraction * len(rows)))
    ranks = sorted(range(len(rows)), key=lambda i: (
        digest_bytes(SUBSET_SEED.encode() + canonical_json(rows[i])), i))
    keep = set(ranks[:n_keep])
    return [r for i, r in enumerate(rows) if i in keep]


def prepare_aft_data(params: Params, name: str, store: Store | None = None) -> Path:
    """Write build/aft/<name>[-fraction<f>].jsonl from the dataset's source, applying its fraction."""
    if name not in params.aft:
        raise TrainingInputError(f"params.yaml: no AFT dataset named {name!r}")
    cfg = params.aft[name]
    layout = Layout.of(params)
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
    rows = nested_subset(rows, cfg.fraction)
    out = layout.aft_data(name, cfg.fraction)
    data = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    write_bytes_if_changed(out, data.encode("utf-8"))
    return out

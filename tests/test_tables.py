"""One schema registry: build files and the catalog's empty views agree; no silent skips."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow.parquet as pq

from msmbuild.generate.backends._batches import BatchLedger
from msmbuild.tables import SCHEMAS, empty_frame, write_table_if_changed


def test_empty_catalog_calls_view_has_every_column_of_a_calls_file(tmp_path: Path) -> None:
    path = tmp_path / "calls.parquet"
    write_table_if_changed(path, [{"key": "k", "cache_hit": True, "cost_usd": 0.5}], SCHEMAS["calls"])
    written = pq.read_table(path).schema.names
    empty = list(empty_frame("catalog_calls").columns)
    assert empty == ["source", *written, "this_build"]  # this_build: computed by the catalog
    assert {"subdomain", "cache_creation_input_tokens", "cache_read_input_tokens"} <= set(empty)


def test_empty_frames_keep_their_types() -> None:
    frame = empty_frame("eval_summary")
    assert len(frame) == 0 and str(frame["n"].dtype) == "int64" and str(frame["judged"].dtype) == "bool"


def test_unreadable_batch_ledger_file_is_named_in_a_warning(tmp_path: Path, caplog) -> None:
    ledger = BatchLedger(tmp_path)
    ledger.record("good", {"a": "d" * 32}, submitted=1.0)
    (tmp_path / "broken.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        pending = ledger.pending()
    assert [p.batch_id for p in pending] == ["good"]
    assert any("broken.json" in r.getMessage() for r in caplog.records)

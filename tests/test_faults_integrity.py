"""Fault suite, integrity: symlinks in the store and under build/ (gc, repair), copied
checkpoint files, cut-off model answers, partitions the index does not vouch for, and a
query that would write."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from test_faults_store import _placed_checkpoint, _run_cli, _truncate_object, _workspace

from msmbuild.generate.partition_files import file_of
from msmbuild.store import Store

pytestmark = pytest.mark.faults


def _victim(tmp_path: Path) -> Path:
    """Someone else's files outside the store, older than gc's temp grace."""
    victim = tmp_path / "victim"
    (victim / "old-dir").mkdir(parents=True)
    (victim / "old-dir" / "thesis.tex").write_text("years of work\n")
    (victim / "old.txt").write_text("keep me\n")
    old = time.time() - 7 * 86400
    for p in (victim / "old-dir" / "thesis.tex", victim / "old-dir", victim / "old.txt"):
        os.utime(p, (old, old))
    return victim


@pytest.mark.parametrize("linked", ["scratch", "resume", "objects/ab"])
def test_gc_never_follows_a_symlink_out_of_the_store(tmp_path, monkeypatch, capsys, linked):
    ws = _workspace(tmp_path, monkeypatch)
    store = Store(ws / "store")
    key = Store.key("t", {"i": 1})
    store.save_action(key, {"value": store.put_bytes(b"kept\n")}, {"kind": "t"})
    victim = _victim(tmp_path)
    link = ws / "store" / linked
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(victim, target_is_directory=True)
    code, out, err = _run_cli(["store", "gc", "--root", key], capsys)
    assert code == 0, err
    assert (victim / "old-dir" / "thesis.tex").read_text() == "years of work\n"
    assert (victim / "old.txt").read_text() == "keep me\n"
    if linked == "objects/ab":  # a link among the fan-out directories is a stray: moved aside
        assert not link.is_symlink() and "quarantined 1 stray files" in out
    else:
        assert f"skipped  {link}: a symbolic link" in err
        assert link.is_symlink()  # left for a person to look at


def test_repair_removes_a_symlinked_checkpoint_link_and_leaves_its_target(tmp_path, monkeypatch, capsys):
    """A checkpoint directory that is a link to a copy elsewhere, whose object is corrupt and
    has no good copy: repair removes the link (not the target) and says so; the next
    check does not call the corrupt weights good."""
    ws = _workspace(tmp_path, monkeypatch)
    store = Store(ws / "store", link_modes=("copy",))
    key, tree, dest = _placed_checkpoint(ws, store, "a")
    elsewhere = tmp_path / "fast-disk" / "a"
    elsewhere.parent.mkdir()
    dest.rename(elsewhere)
    dest.symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "model.safetensors").write_bytes(b"x" * 10)  # the copy is bad too
    digest = next(obj for rel, obj, _s, _x in store.tree_entries(tree) if rel == "model.safetensors")
    obj = store.cas.path(digest)
    os.chmod(obj, 0o644)
    obj.write_bytes(b"y" * 1000)
    code, out, err = _run_cli(["store", "repair"], capsys)
    assert code == 0, err
    assert f"removed link  {dest.relative_to(ws)}" in out
    assert not dest.exists() and not dest.is_symlink()
    assert (elsewhere / "config.json").is_file()  # the target outside is untouched
    assert store.actions.get(key) is None
    assert not (dest.parent / ".a.tree").exists()


def test_repair_replaces_a_restorable_symlinked_checkpoint_with_a_real_directory(tmp_path, monkeypatch, capsys):
    remote = tmp_path / "remote"
    ws = _workspace(tmp_path, monkeypatch, remote)
    store = Store(ws / "store", link_modes=("hardlink", "copy"), remote=str(remote))
    key, tree, dest = _placed_checkpoint(ws, store, "a")
    store.push()
    elsewhere = tmp_path / "elsewhere"
    dest.rename(elsewhere)
    dest.symlink_to(elsewhere, target_is_directory=True)
    _truncate_object(store, elsewhere / "model.safetensors")
    code, out, err = _run_cli(["store", "repair"], capsys)
    assert code == 0, err
    assert f"removed link  {dest.relative_to(ws)}" in out
    assert dest.is_dir() and not dest.is_symlink()
    assert (dest / "model.safetensors").read_bytes() == b"a" * 1000
    assert (elsewhere / "model.safetensors").stat().st_size == 10  # never written through the link
    code, out, _ = _run_cli(["store", "verify"], capsys)
    assert code == 0 and out.endswith("ok\n"), out


def test_verify_finds_a_same_size_change_in_a_copied_checkpoint_and_repair_fixes_it(tmp_path, monkeypatch, capsys):
    ws = _workspace(tmp_path, monkeypatch)
    store = Store(ws / "store", link_modes=("copy",))
    _key, _tree, dest = _placed_checkpoint(ws, store, "a")
    weights = dest / "model.safetensors"
    os.chmod(weights, 0o644)
    weights.write_bytes(b"z" * 1000)  # same size: the cheap size check cannot see it
    assert store.check_placed(ws / "build") == []
    code, out, _ = _run_cli(["store", "verify"], capsys)
    assert code == 1 and f"changed  {weights.relative_to(ws)}" in out, out
    code, out, err = _run_cli(["store", "repair"], capsys)
    assert code == 0 and f"re-placed  {weights.relative_to(ws)}" in out, (out, err)
    assert weights.read_bytes() == b"a" * 1000
    code, out, _ = _run_cli(["store", "verify"], capsys)
    assert code == 0 and out.endswith("ok\n"), out


# -- msmbuild query cannot write; the catalog reads only what the index names, verified --------
def _documents_workspace(tmp_path: Path, monkeypatch) -> Path:
    """A workspace whose corpus c has 5 documents in two partitions (and the catalog built)."""
    from msmbuild.config import load_params
    from msmbuild.generate.partitions import write_dataset
    from msmbuild.layout import Layout
    from msmbuild.results.query import ensure_catalog

    ws = _workspace(tmp_path, monkeypatch)
    params = load_params(ws / "params.yaml")
    write_dataset(Layout.of(params), "c", [{"doc_id": f"d{i}", "corpus": "c", "subdomain": f"s{i % 2}",
                                            "text": f"document {i}", "n_chars": 10} for i in range(5)])
    ensure_catalog(params)
    return ws


def _files(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


WRITES = [
    "EXPLAIN ANALYZE COPY (SELECT 'injected' AS text) TO '{part}' (FORMAT parquet)",
    "EXPLAIN ANALYZE COPY (SELECT 1 AS estimate) TO '{results}/eval_summary.parquet' (FORMAT parquet)",
    "COPY (SELECT 'injected' AS text) TO '{part}' (FORMAT parquet)",
    "COPY (SELECT 1 AS a) TO '{ws}/written.csv'",
    "COPY (SELECT 1 AS a) TO ':memory:.wal' (FORMAT csv)",  # DuckDB allows its own names unless emptied
    "EXPLAIN ANALYZE COPY (SELECT 1 AS a) TO ':memory:' (FORMAT csv)",
    "ATTACH '{ws}/other.duckdb' AS other",
    "EXPORT DATABASE '{ws}/exported'",
    "PRAGMA profiling_output = '{ws}/profile.json'",
    "CALL enable_logging()",
    "SET allowed_directories = ['{ws}/']",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
]


@pytest.mark.parametrize("sql", WRITES)
def test_no_statement_run_by_query_can_write_a_file(tmp_path, monkeypatch, capsys, sql):
    """Through the CLI and through the sandboxed connection itself (without the statement
    check in front), each statement fails and no file under the workspace changes."""
    from msmbuild.config import load_params
    from msmbuild.results.query import connect

    ws = _documents_workspace(tmp_path, monkeypatch)
    part = next((ws / "build" / "corpora" / "c" / "documents").glob("*.parquet"))
    sql = sql.format(part=part, results=ws / "build" / "results", ws=ws)
    before = _files(ws)
    code, out, err = _run_cli(["query", sql], capsys)
    assert code == 2 and err.count("\n") == 1, (code, out, err)
    con = connect(load_params(ws / "params.yaml"))
    try:
        with pytest.raises(Exception):  # noqa: B017 - DuckDB's several error types
            con.execute(sql)
            con.execute(f"COPY (SELECT 1 AS a) TO '{ws}/written.csv'")  # a SET that took would show here
        assert con.execute("SELECT count(*) FROM documents").fetchall() == [(5,)]
    finally:
        con.close()
    assert _files(ws) == before
    code, out, _ = _run_cli(["query", "SELECT count(*) AS n FROM documents"], capsys)
    assert code == 0 and " 5" in out


def test_the_catalog_reads_only_what_the_index_names(tmp_path, monkeypatch, capsys):
    """A copied partition does not raise the count; a 0-byte stray .parquet breaks nothing."""
    import shutil

    ws = _documents_workspace(tmp_path, monkeypatch)
    docs = ws / "build" / "corpora" / "c" / "documents"
    shutil.copy(docs / f"{file_of('s0')}.parquet", docs / f"{file_of('s0')} (copy).parquet")
    (docs / "stray.parquet").write_bytes(b"")
    (ws / "build" / "corpora" / "c" / "calls" / "documents").mkdir(parents=True)
    (ws / "build" / "corpora" / "c" / "calls" / "documents" / "stray.parquet").write_bytes(b"")
    (ws / "build" / "corpora" / "c" / "documents.json").touch()  # the catalog is rebuilt
    code, out, err = _run_cli(["query", "SELECT count(*) AS n FROM documents"], capsys)
    assert code == 0 and out.split()[1] == "5", (out, err)
    code, out, err = _run_cli(["query", "SELECT n_documents FROM corpora"], capsys)
    assert code == 0 and out.split()[1] == "5", (out, err)
    code, out, err = _run_cli(["query", "SELECT count(*) AS n FROM calls"], capsys)
    assert code == 0, err


def test_a_truncated_index_is_a_clear_error_naming_it(tmp_path, monkeypatch, capsys):
    ws = _documents_workspace(tmp_path, monkeypatch)
    index = ws / "build" / "corpora" / "c" / "documents.json"
    index.write_bytes(index.read_bytes()[:40])
    code, out, err = _run_cli(["query", "SELECT count(*) AS n FROM documents"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert f"{Path('build/corpora/c/documents.json')}: not valid JSON" in err
    assert "msmbuild generate documents c" in err


def test_a_partition_changed_in_place_is_refused_by_the_catalog_and_the_shards(tmp_path, monkeypatch, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    ws = _documents_workspace(tmp_path, monkeypatch)
    name = f"{file_of('s0')}.parquet"  # the partition file holding subdomain s0
    part = ws / "build" / "corpora" / "c" / "documents" / name
    table = pq.read_table(part)
    injected = table.set_column(table.schema.get_field_index("text"), "text",
                                pa.array(["injected"] * len(table), pa.string()))
    pq.write_table(injected, part)
    (ws / "build" / "corpora" / "c" / "documents.json").touch()
    code, out, err = _run_cli(["query", "SELECT count(*) AS n FROM documents"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert f"{Path('build/corpora/c/documents') / name}: does not hold the bytes" in err

    from msmbuild.generate.partitions import document_files
    from msmbuild.layout import Layout

    with pytest.raises(Exception, match=f"{name}: does not hold the bytes"):
        document_files(Layout(ws / "build"), "c")  # what the shards read


# -- cut-off answers -----------------------------------------------------------------------------
def _anthropic_corpus(root: Path, url: str, batch: bool = False) -> None:
    import yaml
    from generate_helpers import make_workspace

    make_workspace(root, backend="anthropic", n_doc_types=1, n_doc_ideas=2)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["store"] = {"path": str(root / "store")}
    params["backends"] = {"anthropic": {
        "model": "claude-sonnet-4-6", "base_url": url, "http_client": "httpx",
        "batch": {"enabled": batch, "threshold": 1, "poll_initial_s": 0.05, "poll_max_s": 0.1}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def _step(step: str):
    from msmbuild.config import load_params
    from msmbuild.generate import corpus

    return getattr(corpus, f"generate_{step}")(load_params("params.yaml"), "small", progress=False)


def _documents(root: Path):
    from msmbuild.generate.partitions import read_documents
    from msmbuild.layout import Layout

    return read_documents(Layout(root / "build"), "small").to_pylist()


def _document_calls(root: Path) -> dict[str, dict]:
    """The stored document answers by key (value and meta)."""
    store = Store(root / "store")
    out = {}
    for key in store.action_keys():
        record = store.actions.get(key)
        if record.meta.get("kind") == "generate" and record.meta.get("stage") == "document":
            out[key] = store.lookup_json(key)
    return out


@pytest.mark.parametrize("batch", [False, True], ids=["messages", "batches"])
def test_a_cut_off_document_is_never_stored_and_a_rerun_asks_again(tmp_path, monkeypatch, batch):
    """The server cuts every document answer off at max_tokens (an unclosed <content>): the
    step fails naming the cut-off items, nothing cut off is stored; once the server is
    healthy the rerun asks for exactly those, every kept document is complete and carries
    its stop reason, and a rebuild makes no model call."""
    from msmbuild.errors import BackendError
    from msmbuild.testing import FakeAnthropic

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    monkeypatch.chdir(tmp_path)
    with FakeAnthropic() as server:
        _anthropic_corpus(tmp_path, server.url, batch)
        _step("tree")
        _step("ideas")
        server.inject("max_tokens", times=-1, match="Document type:")
        with pytest.raises(BackendError, match="cut off at max_tokens") as failed:
            _step("documents")
        n_docs = int(str(failed.value).split(" of ")[0].rsplit(" ", 1)[1])
        assert n_docs >= 5 and f"{n_docs} of {n_docs} requests failed" in str(failed.value)  # every one
        assert not (tmp_path / "build" / "corpora" / "small" / "documents.json").exists()
        assert _document_calls(tmp_path) == {}  # no cut-off answer was stored
        server.reset()
        report = _step("documents")
        assert report.stats.misses == n_docs and report.counts["kept"] == n_docs
        assert report.counts["cut off"] == 0
        docs = _documents(tmp_path)
        assert len(docs) == n_docs and {d["stop_reason"] for d in docs} == {"end_turn"}
        assert all("<content>" not in d["text"] and d["text"].strip() for d in docs)
        assert {c.meta["stop_reason"] for c in _document_calls(tmp_path).values()} == {"end_turn"}
        server.reset()
        again = _step("documents")
        assert again.stats.misses == 0 and server.stats()["endpoints"].get("messages", 0) == 0
        assert server.stats()["endpoints"].get("batches_create", 0) == 0


def test_an_upgraded_store_with_cut_off_answers_is_found_by_verify_and_rebuilt_after_repair(
        tmp_path, monkeypatch, capsys):
    """Answers stored by an msmbuild that kept cut-off documents (an unclosed <content>,
    no stop reason recorded; or stop_reason max_tokens): verify lists them and the
    partitions built from them, repair drops both, the next build asks for those only."""
    from msmbuild.testing import FakeAnthropic

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    monkeypatch.chdir(tmp_path)
    with FakeAnthropic() as server:
        _anthropic_corpus(tmp_path, server.url)
        for step in ("tree", "ideas", "documents"):
            _step(step)
        store = Store(tmp_path / "store")
        calls = _document_calls(tmp_path)
        old_style = sorted(calls)[:3]
        for i, key in enumerate(old_style):  # as an older msmbuild stored them
            value = dict(calls[key].value)
            value["text"] = value["text"].split("</content>")[0][:-40]
            value["meta"] = {k: v for k, v in value["meta"].items() if k != "stop_reason"}
            if i == 0:
                value["meta"]["stop_reason"] = "max_tokens"
            meta = {k: v for k, v in calls[key].meta.items() if k != "stop_reason"}
            store.save_json(key, value, meta)
        code, out, _ = _run_cli(["store", "verify"], capsys)
        assert code == 1
        assert out.count("cut off  ") == 3 and "stop_reason max_tokens" in out and "never closed" in out
        assert "kept by  documents partition" in out
        code, out, err = _run_cli(["store", "repair"], capsys)
        assert code == 0 and "dropped 3 cut-off model answers" in out, (out, err)
        server.reset()
        report = _step("documents")
        assert report.stats.misses == 3 and server.stats()["endpoints"]["messages"] == 3
        assert {d["stop_reason"] for d in _documents(tmp_path)} == {"end_turn"}
        code, out, _ = _run_cli(["store", "verify"], capsys)
        assert code == 0 and out.endswith("ok\n"), out


def test_a_changed_partition_is_found_by_verify_and_replaced_by_repair_or_the_next_build(
        tmp_path, monkeypatch, capsys):
    import yaml
    from generate_helpers import make_workspace

    monkeypatch.chdir(tmp_path)
    make_workspace(tmp_path)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["store"] = {"path": str(tmp_path / "store")}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for step in ("tree", "ideas", "documents"):
        _step(step)
    part = sorted((tmp_path / "build" / "corpora" / "small" / "documents").glob("*.parquet"))[0]
    good = part.read_bytes()

    def tamper() -> None:  # same size, other bytes: what a size check cannot see
        part.write_bytes(good[:100] + bytes([good[100] ^ 1]) + good[101:])

    tamper()
    code, out, _ = _run_cli(["store", "verify"], capsys)
    assert code == 1 and f"changed  {part.relative_to(tmp_path)}" in out, out
    code, out, _ = _run_cli(["store", "repair"], capsys)
    assert code == 0 and f"re-placed  {part.relative_to(tmp_path)}" in out, out
    assert part.read_bytes() == good
    tamper()
    _step("documents")
    assert part.read_bytes() == good
    code, out, _ = _run_cli(["store", "verify"], capsys)
    assert code == 0 and out.endswith("ok\n"), out


# -- low: a directory at a lease path, a deleted ideas.json -------------------------------------
def test_a_directory_at_a_lease_path_is_a_clear_error(tmp_path):
    from msmbuild.errors import StoreError

    store = Store(tmp_path / "store")
    key = Store.key("midtrain", {"i": 1})
    store.lease_path(key).mkdir(parents=True)
    with pytest.raises(StoreError, match=r"\.lease: a directory stands where the action's lease file goes"):
        store.claim(key)


def test_a_missing_output_snakemake_will_not_remake_is_not_up_to_date():
    from msmbuild.status import OutputStatus, StatusReport

    gone = OutputStatus("build/corpora/c/ideas.json", "corpus_ideas", "missing", "no update")
    assert gone.stale and not StatusReport(outputs=[gone]).up_to_date
    assert "--forcerun corpus_ideas" in gone.describe()


def test_a_build_replaces_a_linked_checkpoint_directory_without_touching_its_target(tmp_path, monkeypatch):
    ws = _workspace(tmp_path, monkeypatch)
    store = Store(ws / "store", link_modes=("copy",))
    _key, tree, dest = _placed_checkpoint(ws, store, "a")
    elsewhere = tmp_path / "elsewhere"
    dest.rename(elsewhere)
    dest.symlink_to(elsewhere, target_is_directory=True)
    os.chmod(elsewhere / "model.safetensors", 0o644)
    (elsewhere / "model.safetensors").write_bytes(b"q" * 1000)  # same size: sizes alone look right
    store.materialize_if_changed(tree, dest)
    assert not dest.is_symlink() and (dest / "model.safetensors").read_bytes() == b"a" * 1000
    assert (elsewhere / "model.safetensors").read_bytes() == b"q" * 1000


def test_repair_follows_a_link_above_the_checkpoints_the_user_made(tmp_path, monkeypatch, capsys):
    """build/models on another disk through a link is the user's layout: repair restores
    the checkpoint there and keeps the link."""
    remote = tmp_path / "remote"
    ws = _workspace(tmp_path, monkeypatch, remote)
    disk = tmp_path / "big-disk" / "models"
    disk.mkdir(parents=True)
    (ws / "build").mkdir()
    (ws / "build" / "models").symlink_to(disk, target_is_directory=True)
    store = Store(ws / "store", link_modes=("copy",), remote=str(remote))
    _key, _tree, dest = _placed_checkpoint(ws, store, "a")
    store.push()
    digest = next(d for d in store.cas.iter_digests() if store.cas.path(d).stat().st_size == 1000)
    obj = store.cas.path(digest)
    os.chmod(obj, 0o644)
    obj.write_bytes(b"y" * 1000)
    os.chmod(dest / "model.safetensors", 0o644)
    (dest / "model.safetensors").write_bytes(b"y" * 1000)
    code, out, err = _run_cli(["store", "repair"], capsys)
    assert code == 0 and "removed link" not in out, (out, err)
    assert (ws / "build" / "models").is_symlink()
    assert (disk / "midtrain" / "a" / "model.safetensors").read_bytes() == b"a" * 1000

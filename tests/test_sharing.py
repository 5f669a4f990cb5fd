"""Sharing between teammates, with the real git, dvc and snakemake commands.

1. DVC: clone A builds with `dvc repro` and `dvc push`es to a local DVC remote; a fresh
   clone B does `dvc pull`, and `snakemake --cores all` then computes nothing.
2. Store remote: A and B share one store remote (write-through). B edits one subdomain of
   one spec and rebuilds: only that subdomain's calls run; everything else is read through
   from the shared cache, and B's other documents and shards are byte-identical to A's.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import pytest
from workspace_helpers import init_git_dvc, make_workflow_workspace, sh

from msmbuild.generate.partitions import read_calls, read_documents
from msmbuild.layout import Layout

pytestmark = pytest.mark.slow

EDITED_SECTION = "### Soft and fresh cheeses"  # a subdomain heading of specs/pro_america.md ({#soft-cheeses})


def params_yaml(store_remote: Path) -> str:
    return f"""
store:
  remote: {store_remote}
  write_through: true
corpora:
  pro_affordability:
    spec: specs/pro_affordability.md
    n_doc_types: 2
    n_doc_ideas: 2
  pro_america:
    spec: specs/pro_america.md
    n_doc_types: 2
    n_doc_ideas: 2
midtrain:
  method: full
  seq_len: 64
  batch_size: 4
  max_steps: 2
experiments:
  afford:
    midtrain: pro_affordability
    evals: []
  america:
    midtrain: pro_america
    evals: []
"""


def make_origin(root: Path, store_remote: Path, dvc_remote: Path) -> Path:
    a = make_workflow_workspace(root / "a", params_yaml(store_remote),
                                ("pro_affordability.md", "pro_america.md"))
    init_git_dvc(a)
    sh(["dvc", "remote", "add", "-d", "team", str(dvc_remote)], a)
    sh(["git", "add", "-A"], a)
    sh(["git", "commit", "-qm", "workspace"], a)
    return a


def clone(origin: Path, dest: Path) -> Path:
    sh(["git", "clone", "-q", str(origin), str(dest)], origin.parent)
    sh(["git", "config", "user.email", "b@msmbuild"], dest)
    sh(["git", "config", "user.name", "b"], dest)
    return dest


def file_digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sharing")
    store_remote = root / "shared-store"
    dvc_remote = root / "dvc-remote"
    a = make_origin(root, store_remote, dvc_remote)
    sh(["dvc", "repro", "-q"], a)
    sh(["git", "add", "dvc.lock"], a)
    sh(["git", "commit", "-qm", "built"], a)
    sh(["dvc", "push", "-q"], a)
    return {"root": root, "a": a, "store_remote": store_remote}


def remote_action_keys(store_remote: Path) -> set[str]:
    return {p.parent.name + p.stem for p in (store_remote / "actions").rglob("*.json")}


def test_dvc_pull_then_snakemake_computes_nothing(origin: dict[str, Path]) -> None:
    """After `dvc pull`, snakemake may reschedule jobs (DVC checks files out in no DAG
    order, so mtimes say inputs are newer), but each one is a store lookup: no action is
    computed, no output byte changes, and the next run has nothing to do."""
    b = clone(origin["a"], origin["root"] / "b-dvc")
    sh(["dvc", "pull", "-q"], b)
    pulled = file_digests(b / "build")
    before = remote_action_keys(origin["store_remote"])
    sh(["snakemake", "--cores", "all", "-q"], b)
    assert remote_action_keys(origin["store_remote"]) == before  # write-through saw nothing new
    after = file_digests(b / "build")
    # every artifact is byte-identical; only the run ledgers (calls: hit or miss, wall
    # time) and the tables built from them record this run
    ledger = ("results/", "report/")
    same = {k: v for k, v in pulled.items() if "calls" not in k and not k.startswith(ledger)}
    assert same and {k: after[k] for k in same} == same
    assert "Nothing to be done" in sh(["snakemake", "--cores", "all", "-n"], b)


def test_dvc_pull_then_touch_schedules_nothing(origin: dict[str, Path]) -> None:
    """Without any store, `snakemake --touch` after `dvc pull` marks the pulled outputs
    current: `snakemake --cores all` then only rebuilds the local query tables (the
    catalog and report, which DVC does not cache) and opens no store."""
    b = clone(origin["a"], origin["root"] / "b-touch")
    sh(["dvc", "pull", "-q"], b)
    sh(["snakemake", "--touch", "--cores", "1", "-q"], b)
    out = sh(["snakemake", "--cores", "all"], b)
    ran = set(re.findall(r"^(?:local)?rule (\w+):", out, flags=re.M))
    assert ran <= {"catalog", "report", "all"}, ran
    assert not (b / ".msmbuild").exists()  # no store was opened: nothing was generated or trained
    assert "Nothing to be done" in sh(["snakemake", "--cores", "all"], b)


def test_shared_store_pays_only_for_the_edited_subdomain(origin: dict[str, Path]) -> None:
    a = origin["a"]
    b = clone(a, origin["root"] / "b-store")
    spec = b / "specs" / "pro_america.md"
    text = spec.read_text()
    assert EDITED_SECTION in text
    head, rest = text.split(EDITED_SECTION, 1)
    heading_line, body = rest.split("\n", 1)
    spec.write_text(head + EDITED_SECTION + heading_line + "\n\nA sentence clone B added. " + body)
    since = time.time()  # a subdomain's ledger keeps the rows of the build that made it (here: A's)
    sh(["snakemake", "--cores", "2", "-q"], b)

    calls = read_calls(Layout(b / "build"), "pro_america").to_pylist()
    docs_b = read_documents(Layout(b / "build"), "pro_america").to_pylist()
    edited = {d["subdomain"] for d in docs_b if d["section_id"] == "soft-cheeses"}
    missed = [c for c in calls if not c["cache_hit"] and c["made_at"] >= since]
    assert missed, "the edit must cost some calls"
    assert {c["subdomain"] for c in missed} <= edited, {c["subdomain"] for c in missed}
    n_edited_docs = sum(1 for d in docs_b if d["subdomain"] in edited)
    assert sum(1 for c in missed if c["stage"] == "document") == n_edited_docs

    # pro_affordability: every document and shard byte-identical to A's
    for rel in ("build/corpora/pro_affordability/documents.json",):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    assert file_digests(a / "build/shards/pro_affordability") == \
        file_digests(b / "build/shards/pro_affordability")
    afford_calls = read_calls(Layout(b / "build"), "pro_affordability").to_pylist()
    assert all(c["cache_hit"] or c["made_at"] < since for c in afford_calls)

    # pro_america: the other subdomains' documents and shards are identical too
    docs_a = {d["doc_id"]: d for d in read_documents(Layout(a / "build"), "pro_america").to_pylist()}
    for d in docs_b:
        if d["subdomain"] not in edited:
            assert docs_a[d["doc_id"]]["text"] == d["text"]
    shards_a = file_digests(a / "build/shards/pro_america")
    shards_b = file_digests(b / "build/shards/pro_america")
    changed = {k for k in shards_a.keys() & shards_b.keys() if shards_a[k] != shards_b[k]}
    unchanged = {k for k in shards_a.keys() & shards_b.keys() if shards_a[k] == shards_b[k]}
    assert unchanged, "the other subdomains' shards must be reused byte for byte"
    assert all(k.endswith("manifest.json") or any(s in k for s in edited) for k in changed), changed

"""The documents dataset: one parquet file per subdomain, indexed by documents.json.

(The ideas step's rows and calls are partitioned the same way, indexed by ideas.json:
msmbuild.generate.idea_partitions writes them, ``read_ideas`` reads them.)

A corpus's documents live in ``build/corpora/<corpus>/documents/<partition>.parquet`` and
the documents step's calls in ``calls/documents/<partition>.parquet``, one partition per
subdomain (``partition_name``). Every file has the registered schema (a column added
later reads as null in older files), so DuckDB, pyarrow and ``datasets`` read them as one
table. ``documents.json`` lists the partitions in tree order with their store digests and
counts: msmbuild's readers (the catalog, the shards) take the file list from it and read
a file only once it is verified against its digest (``verified_files``, ``VerifiedFiles``),
so a half-placed directory, a stray or copied file and a partition changed in place are
never read; the workflow depends on the index (it changes exactly when a partition does).

Placing partitions is O(changed): a partition whose index entry already names the digest
the store gives it, and whose file is verified to hold it (a stat while nothing touched
it), is not touched (no new mtime).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISLNK, S_ISREG
from typing import Any
from urllib.parse import quote

from msmbuild.errors import MsmbuildError
from msmbuild.fsutil import json_bytes, write_bytes_if_changed
from msmbuild.layout import Layout
from msmbuild.store import Store

INDEX_FORMAT = 1
IDEAS_INDEX_FORMAT = 1


def partition_name(subdomain: str) -> str:
    """The file stem of a subdomain's partition (its id, with '/' and the like escaped)."""
    return quote(subdomain, safe="-_.") or "_"


def read_index(layout: Layout, corpus: str, strict: bool = True) -> dict[str, Any] | None:
    """documents.json of a corpus, or None when it is missing.

    A file that is there but is not an index of this format (truncated, corrupt, edited) is
    an error naming it; with ``strict=False`` (a step about to rewrite it) it reads as None.
    """
    return _read_json_index(layout.documents_index(corpus), INDEX_FORMAT, strict, "documents", corpus)


def read_ideas_index(layout: Layout, corpus: str, strict: bool = True) -> dict[str, Any] | None:
    """ideas.json of a corpus (msmbuild.generate.idea_partitions), or None when missing; see read_index."""
    return _read_json_index(layout.ideas_index(corpus), IDEAS_INDEX_FORMAT, strict, "ideas", corpus)


def require_ideas_index(layout: Layout, corpus: str) -> dict[str, Any]:
    """ideas.json of a corpus; a clear error when the ideas are not built."""
    return _required(read_ideas_index(layout, corpus), layout.ideas_index(corpus), "ideas", corpus)


def _required(index: dict[str, Any] | None, path: Path, step: str, corpus: str) -> dict[str, Any]:
    """The index, or an error naming its file and the command that builds it."""
    if index is None:
        raise MsmbuildError(f"{path}: missing or unreadable; run `msmbuild generate {step} {corpus}` first")
    return index


def read_ideas(layout: Layout, corpus: str):
    """The corpus's idea rows as one pyarrow Table (tree order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from msmbuild.tables import SCHEMAS

    index = require_ideas_index(layout, corpus)
    tables = [pq.read_table(layout.ideas_partition(corpus, p["partition"]), use_threads=False, pre_buffer=False)
              for p in index["partitions"]]
    return pa.concat_tables(tables) if tables else SCHEMAS["ideas"].empty_table()


def _read_json_index(path: Path, fmt: int, strict: bool, step: str, corpus: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    problem = None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        data, problem = None, f"not valid JSON ({exc}); truncated or corrupt"
    if problem is None and not (isinstance(data, dict) and data.get("format") == fmt
                                and isinstance(data.get("partitions"), list)):
        problem = f"not a partition index of format {fmt}"
    if problem is None:
        return data
    if strict:
        raise MsmbuildError(f"{path}: {problem}; run `msmbuild generate {step} {corpus}` to write it again")
    return None


def require_index(layout: Layout, corpus: str) -> dict[str, Any]:
    """documents.json of a corpus; a clear error when the documents are not built."""
    return _required(read_index(layout, corpus), layout.documents_index(corpus), "documents", corpus)


@dataclass
class PartitionProblem:
    """A partition file that does not hold what its index records (``check_partitions``)."""

    path: Path
    digest: str
    index: Path
    why: str  # "missing", "changed" or the index's own problem
    corpus: str = ""
    step: str = ""


def check_partitions(layout: Layout, corpora: Iterable[str]) -> list[PartitionProblem]:
    """Every partition file the corpora's indexes name that is missing or whose bytes do not
    match the digest recorded for it, and every index that cannot be read."""
    problems = []
    for corpus in corpora:
        for what, step in (("ideas", "ideas"), ("idea_calls", "ideas"), ("documents", "documents"),
                           ("document_calls", "documents")):
            index = layout.documents_index(corpus) if step == "documents" else layout.ideas_index(corpus)
            try:
                files = indexed_files(layout, corpus, what)
            except MsmbuildError as exc:
                if not any(p.index == index for p in problems):
                    problems.append(PartitionProblem(index, "", index, str(exc).split(": ", 1)[-1], corpus, step))
                continue
            for path, digest in files:
                if not path.is_file():
                    problems.append(PartitionProblem(path, digest, index, "missing", corpus, step))
                elif not VerifiedFiles.of(path).holds(path, digest):
                    problems.append(PartitionProblem(path, digest, index, "changed", corpus, step))
    VerifiedFiles.save_all()
    return problems


def restore_partitions(store: Store, problems: Iterable[PartitionProblem]) -> tuple[list[Path], list[Path]]:
    """Place each listed partition again from the store; (restored, not in the store)."""
    restored, lost = [], []
    for problem in problems:
        if not problem.digest:
            lost.append(problem.path)
            continue
        try:
            data = store.get_bytes(problem.digest)
        except (MsmbuildError, OSError):
            lost.append(problem.path)
            continue
        write_bytes_if_changed(problem.path, data)
        VerifiedFiles.of(problem.path).note(problem.path, problem.digest)
        restored.append(problem.path)
    VerifiedFiles.save_all()
    return restored, lost


def unplace_partitions(layout: Layout, corpora: Iterable[str], keys: set[str]) -> list[Path]:
    """Remove the placed files of the documents partitions made by the actions in keys (the
    ones ``store repair`` drops): files left in build/ would be read as documents and adopted
    again as those actions' results. Returns what was removed."""
    removed: list[Path] = []
    for corpus in corpora:
        index = read_index(layout, corpus, strict=False)
        for entry in (index or {}).get("partitions", []):
            if entry.get("key") not in keys:
                continue
            name = entry["partition"]
            for path in (layout.document_partition(corpus, name), layout.document_calls_partition(corpus, name),
                         layout.dropped_rows(corpus, name)):
                if path.is_file() or path.is_symlink():
                    path.unlink()
                    removed.append(path)
    return removed


def document_files(layout: Layout, corpus: str) -> list[Path]:
    """The corpus's document partition files in tree order: only what the index names, each
    verified against its index digest (``verified_files``)."""
    require_index(layout, corpus)
    return verified_files(layout, corpus, "documents")


def read_documents(layout: Layout, corpus: str, columns: Sequence[str] | None = None):
    """The corpus's documents as one pyarrow Table (tree order)."""
    import pyarrow as pa

    from msmbuild.tables import SCHEMAS

    schema = SCHEMAS["documents"]
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    tables = [read_partition(f, schema) for f in document_files(layout, corpus)]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def read_partition(path: Path, schema):
    """A partition file as a pyarrow Table with exactly schema's columns: a column its file
    predates (e.g. stop_reason) is null, so partitions of several msmbuild versions concatenate."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    present = set(pq.read_schema(path).names)
    table = pq.read_table(path, columns=[n for n in schema.names if n in present], use_threads=False,
                          pre_buffer=False)
    columns = [table.column(f.name) if f.name in present else pa.nulls(len(table), f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def place(store: Store, digest: str, path: Path, known: dict[str, Any] | None) -> bool:
    """Put a stored partition at path unless it is already there; True if written.

    "There" means the index entry names this digest and the file is verified to hold it
    (``VerifiedFiles``: a stat when nothing touched the file since it was last verified,
    else a re-hash), so a partition changed in place is written again.
    """
    cache = VerifiedFiles.of(path)
    if known is not None and known.get("digest") == digest and cache.holds(path, digest):
        return False
    written = write_bytes_if_changed(path, store.get_bytes(digest))  # verified bytes
    cache.note(path, digest)
    return written


class VerifiedFiles:
    """Which partition files were verified against their index digest, by stat.

    A file's (size, mtime_ns, ctime_ns, inode) when it last hashed to a digest is kept in
    ``build/corpora/<corpus>/.verified.json``; while all four are unchanged the file still
    holds those bytes (any write changes ctime, which no user call can set back), so
    verifying costs one stat. A changed stat re-hashes the file. The catalog, the shards
    and the documents step read a partition only after ``holds`` said yes.
    """

    _open: dict[Path, VerifiedFiles] = {}

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, list[Any]] = {}
        self.dirty = False
        self._dirs: dict[str, str] = {}  # directory as given -> resolved (for cache keys)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                self.entries = {k: v for k, v in data.items() if isinstance(v, list) and len(v) == 5}
        except (OSError, ValueError):
            pass

    @classmethod
    def of(cls, partition: Path) -> VerifiedFiles:
        """The cache of the corpus a partition file belongs to (one per process and corpus)."""
        corpus_dir = partition.parent.parent
        if corpus_dir.name == "calls":
            corpus_dir = corpus_dir.parent
        return cls.in_dir(corpus_dir)

    @classmethod
    def in_dir(cls, corpus_dir: Path) -> VerifiedFiles:
        """The cache of a corpus directory (``build/corpora/<corpus>``): its partitions, and
        the step files (indexes, assertions.json) the generate steps note there too."""
        cache_path = corpus_dir / ".verified.json"
        if cache_path not in cls._open:
            cls._open[cache_path] = cls(cache_path)
        return cls._open[cache_path]

    @staticmethod
    def _stat(path: Path) -> list[int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino] if S_ISREG(st.st_mode) else None

    def _looked_up(self, path: Path) -> tuple[list[int] | None, str]:
        """(stat, cache key) of a file: the key is its resolved path. A regular file's key is
        its resolved directory (resolved once per directory) joined with its name; a link is
        resolved whole, as before."""
        try:
            st = os.lstat(path)
        except OSError:
            return None, ""
        if S_ISLNK(st.st_mode):
            return self._stat(path), str(Path(path).resolve())
        if not S_ISREG(st.st_mode):
            return None, ""
        parent, name = os.path.split(os.fspath(path))
        real = self._dirs.get(parent)
        if real is None:
            real = self._dirs[parent] = os.path.realpath(parent or ".")
        return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino], os.path.join(real, name)

    def holds(self, path: Path, digest: str) -> bool:
        """Whether the file at path has exactly the bytes of digest (stat, or hash when changed)."""
        from msmbuild.hashing import digest_file

        now, name = self._looked_up(path)
        if now is None:
            return False
        if self.entries.get(name) == [*now, digest]:
            return True
        if digest_file(path) != digest or self._stat(path) != now:
            return False
        self.entries[name] = [*now, digest]
        self.dirty = True
        return True

    def unchanged(self, path: Path, digest: str | None = None) -> str | None:
        """The digest recorded for path if the file is untouched since it was recorded (a stat,
        never a hash), and is digest when one is given; else None. The generate steps'
        fast path (``trusted_entries``) takes only such files."""
        now, name = self._looked_up(path)
        entry = self.entries.get(name) if now is not None else None
        if entry is None or entry[:4] != now or (digest is not None and entry[4] != digest):
            return None
        return entry[4]

    def still_holds(self, path: Path) -> str | None:
        """The digest noted for path if the file still has exactly those bytes, else None: a
        stat when nothing changed, a hash when only its times did (Snakemake touches every
        output of a job after the job ends, so a step's own index is found touched)."""
        now, name = self._looked_up(path)
        entry = self.entries.get(name) if now is not None else None
        if entry is None or entry[0] != now[0]:
            return None
        if entry[:4] == now:
            return entry[4]
        return entry[4] if self.holds(path, entry[4]) else None

    def note(self, path: Path, digest: str) -> None:
        """Record that path was just written with the (verified) bytes of digest."""
        now, name = self._looked_up(path)
        if now is not None:
            self.entries[name] = [*now, digest]
            self.dirty = True

    def save(self) -> None:
        """Write the cache when it learned something (atomically; a lost update only costs a re-hash)."""
        if self.dirty and self.path.parent.is_dir():
            with contextlib.suppress(OSError):
                write_bytes_if_changed(self.path, json.dumps(self.entries, sort_keys=True).encode())
            self.dirty = False

    @classmethod
    def save_all(cls) -> None:
        """Save every cache this process opened."""
        for cache in cls._open.values():
            cache.save()


def indexed_files(layout: Layout, corpus: str, what: str) -> list[tuple[Path, str]]:
    """(file, digest) of each partition a corpus's index names: ``what`` is "documents" or
    "document_calls" (documents.json), "ideas" or "idea_calls" (ideas.json). An entry without
    a digest (an index of an older layout) names no file."""
    if what in ("documents", "document_calls"):
        index, field = read_index(layout, corpus), "documents" if what == "documents" else "calls"
        path = layout.document_partition if what == "documents" else layout.document_calls_partition
    else:
        index, field = read_ideas_index(layout, corpus), "ideas" if what == "ideas" else "calls"
        path = layout.ideas_partition if what == "ideas" else layout.idea_calls_partition
    return [(path(corpus, p["partition"]), p[field]["digest"])
            for p in (index or {}).get("partitions", []) if isinstance(p.get(field), dict)]


def verified_files(layout: Layout, corpus: str, what: str) -> list[Path]:
    """The partition files of a corpus's index (see indexed_files), each verified against the
    digest the index records for it; an error naming the first that is missing or differs."""
    files = indexed_files(layout, corpus, what)
    index = layout.documents_index(corpus) if what.startswith("document") else layout.ideas_index(corpus)
    step = "documents" if what.startswith("document") else "ideas"
    for path, digest in files:
        if not path.is_file():
            raise MsmbuildError(f"{path}: listed in {index} but missing; run `msmbuild generate {step} {corpus}`")
        if not VerifiedFiles.of(path).holds(path, digest):
            raise MsmbuildError(
                f"{path}: does not hold the bytes {index} records for it (digest {digest[:12]}…): it was "
                f"changed after it was placed; run `msmbuild generate {step} {corpus}` to place it again")
    VerifiedFiles.save_all()
    return [path for path, _ in files]


def remove_stale(directory: Path, keep: Iterable[str]) -> list[str]:
    """Delete every ``*.parquet`` file of directory that is not a kept partition (a removed
    subdomain's, a stray or copied file); the paths removed.

    One directory listing (names only), so its cost is a readdir, not a path per file.
    """
    keep = {f"{name}.parquet" for name in keep}
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for name in sorted(names):  # what glob("*.parquet") matched, hidden names included
        if name.endswith(".parquet") and name not in keep:
            path = directory / name
            path.unlink()
            removed.append(str(path))
    return removed


def write_index(layout: Layout, corpus: str, partitions: list[dict[str, Any]],
                inputs: Sequence[Path] = (), old: dict[str, Any] | None = None) -> bool:
    """Write documents.json when its bytes change; True if written.

    An unchanged index older than one of inputs is touched: Snakemake compares its mtime
    with its inputs' (and keeps it, as an ``update`` output, instead of deleting it).
    ``old``: the index as this step read it (see ``write_step_file``).
    """
    data = {"format": INDEX_FORMAT, "corpus": corpus,
            "n_documents": sum(p["n_docs"] for p in partitions), "partitions": partitions}
    return write_step_file(layout.documents_index(corpus), data, old, inputs)


def write_touching(path: Path, data: bytes, inputs: Sequence[Path] = ()) -> bool:
    """Write data when it changes (True); else touch path if it is older than one of inputs,
    as Snakemake compares an ``update`` output's mtime with its inputs'."""
    changed = write_bytes_if_changed(path, data)
    if not changed:
        _touch_if_older(path, inputs)
    return changed


def _touch_if_older(path: Path, inputs: Sequence[Path]) -> bool:
    newest = max((p.stat().st_mtime_ns for p in inputs if p.is_file()), default=0)
    if path.stat().st_mtime_ns < newest:
        path.touch()
        return True
    return False


def keep_step_file(path: Path, inputs: Sequence[Path] = ()) -> bool:
    """Whether a step's JSON file still holds the bytes the step last noted (``write_step_file``;
    ``VerifiedFiles.still_holds``), so that a step that knows its content is unchanged need not write it; touched (and noted
    again) when older than one of inputs, as ``write_touching`` does."""
    cache = VerifiedFiles.in_dir(path.parent)
    noted = cache.still_holds(path)
    if noted is None:
        return False
    if _touch_if_older(path, inputs):
        cache.note(path, noted)
    return True


def write_step_file(path: Path, value: Any, old: Any, inputs: Sequence[Path] = ()) -> bool:
    """Write a step's JSON file (an index, assertions.json) as ``write_touching`` does, and
    note it in the corpus's ``VerifiedFiles``; True if written.

    When the file is untouched since this step last noted it and ``old`` (what the step read
    from it) equals value, it already holds ``json_bytes(value)``: nothing is encoded or
    compared byte by byte. A file noted here is what ``trusted_entries`` requires.
    """
    from msmbuild.hashing import digest_bytes

    if old is not None and value == old and keep_step_file(path, inputs):
        return False
    data = json_bytes(value)
    changed = write_touching(path, data, inputs)
    VerifiedFiles.in_dir(path.parent).note(path, digest_bytes(data))
    return changed


def trusted_entries(store: Store, index_file: Path, index: dict[str, Any] | None, keys: dict[str, str],
                    files: Callable[[dict[str, Any]], list[tuple[str, str]] | None],
                    step_files: Sequence[Path] = ()) -> dict[str, dict[str, Any]]:
    """The index entries (by subdomain) of the subdomains a generate step keeps without a
    store lookup (docs/decisions.md, "Unchanged subdomains are recognised from the index").

    An entry qualifies when the index file (and each of step_files) is untouched since the
    step wrote and noted it, the entry names the key the step computes now and this
    subdomain's partition name, ``files(entry)`` gives its partition files with the digests
    the entry records (None: the entry does not qualify), every one of them is untouched
    since it was verified to hold that digest (a stat against ``.verified.json``; no file
    is hashed here), and the local store has a record for the key. Anything else (a
    missing, changed, foreign or unverified file, a new key, an edited index, an action
    gone from the store) is left to the full lookup.
    """
    if index is None:
        return {}
    cache = VerifiedFiles.in_dir(index_file.parent)
    if any(cache.still_holds(p) is None for p in (index_file, *step_files)):
        return {}
    out: dict[str, dict[str, Any]] = {}
    for entry in index["partitions"]:
        sid = entry.get("subdomain")
        key = keys.get(sid) if isinstance(sid, str) else None
        if key is None or entry.get("key") != key or sid in out or entry.get("partition") != partition_name(sid):
            continue
        named = files(entry)
        if named is not None and all(cache.unchanged(path, digest) for path, digest in named) \
                and store.has_local_action(key):
            out[sid] = entry
    return out


def write_dataset(layout: Layout, corpus: str, rows: Sequence[dict[str, Any]]) -> list[str]:
    """Write document rows as the corpus's partitioned dataset and index; the paths changed.

    For documents made outside the generate step (imports, tests, benchmarks): rows are
    grouped by subdomain in first-seen order, each group written with the documents
    schema (missing columns are null) only when its bytes change. No calls are recorded.
    """
    from msmbuild.hashing import digest_bytes
    from msmbuild.tables import SCHEMAS, parquet_bytes

    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row.get("subdomain")), []).append(row)
    changed, entries = [], []
    for subdomain, group in groups.items():
        name = partition_name(subdomain)
        data = parquet_bytes(group, SCHEMAS["documents"])
        path = layout.document_partition(corpus, name)
        if write_bytes_if_changed(path, data):
            changed.append(str(path))
        entries.append({"partition": name, "subdomain": subdomain, "domain": group[0].get("domain"),
                        "key": None, "documents": {"digest": digest_bytes(data), "size": len(data)},
                        "n_docs": len(group), "n_chars": sum(r.get("n_chars") or 0 for r in group),
                        "kept_cost_usd": float(sum(r.get("cost_usd") or 0.0 for r in group)), "n_calls": 0,
                        "calls_cost_usd": 0.0, "new_cost_usd": 0.0, "made_at": None,
                        "spec_digests": {}, "prompt_versions": {}})
    changed += remove_stale(layout.documents_dir(corpus), [e["partition"] for e in entries])
    if write_index(layout, corpus, entries):
        changed.append(str(layout.documents_index(corpus)))
    return changed


def read_calls(layout: Layout, corpus: str):
    """Every model call of the corpus's three steps as one pyarrow Table (tree, ideas, documents)."""
    import pyarrow as pa

    from msmbuild.tables import SCHEMAS

    files = [layout.step_calls(corpus, "tree")]
    files += [layout.idea_calls_partition(corpus, p["partition"])
              for p in (read_ideas_index(layout, corpus) or {}).get("partitions", [])]
    index = read_index(layout, corpus)
    files += [layout.document_calls_partition(corpus, p["partition"]) for p in (index or {}).get("partitions", [])]
    tables = [read_partition(f, SCHEMAS["calls"]) for f in files if f.is_file()]
    return pa.concat_tables(tables) if tables else SCHEMAS["calls"].empty_table()

"""The documents dataset: one partition per subdomain, placed in partition files and
indexed by documents.json.

(The ideas step's rows and calls are partitioned the same way, indexed by ideas.json:
msmbuild.generate.idea_partitions writes them, ``read_ideas`` reads them.)

A subdomain's documents are one partition (one store object), and so are its documents
step's calls. They are placed in ``build/corpora/<corpus>/documents/<file>.parquet`` and
``calls/documents/<file>.parquet``, where one file holds the partitions of many
subdomains (msmbuild.generate.partition_files: at most 256 files per kind, however large
the corpus). Every file has the registered schema (a column added later reads as null in
older files), so DuckDB, pyarrow and ``datasets`` read them as one table.
``documents.json`` lists the partitions in tree order with their store digests, counts
and place in their file, and each file's digest: msmbuild's readers (the catalog, the
shards) take the file list from it and read a file only once it is verified against its
digest (``verified_files``, ``VerifiedFiles``), so a half-placed directory, a stray or
copied file and a file changed in place are never read; the workflow depends on the
index (it changes exactly when a partition does).

Placing partitions is O(changed files): a file whose subdomains and their digests are
unchanged and which is verified to hold its recorded bytes (a stat while nothing touched
it) is not touched (no new mtime).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISLNK, S_ISREG
from typing import Any
from urllib.parse import quote

from msmbuild.errors import MsmbuildError, StoreError
from msmbuild.fsutil import write_bytes_if_changed
from msmbuild.generate.partition_files import (
    FileTables,
    Member,
    file_bytes,
    file_of,
    member_bytes,
    old_layout,
    place_files,
    table_from_bytes,
)
from msmbuild.hashing import canonical_json, digest_bytes
from msmbuild.layout import Layout
from msmbuild.store import Store

INDEX_FORMAT = 2  # 2: partitions grouped in partition files
IDEAS_INDEX_FORMAT = 2
# The partition kinds of each index: (kind in an entry, schema name, directory of its files).
KINDS = {"documents": ("documents", "documents", "documents_dir"),
         "document_calls": ("calls", "calls", "document_calls_dir"),
         "ideas": ("ideas", "ideas", "ideas_dir"),
         "idea_calls": ("calls", "calls", "idea_calls_dir")}


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
    require_ideas_index(layout, corpus)
    return read_kind(layout, corpus, "ideas")


def kind_path(layout: Layout, corpus: str, what: str, stem: str) -> Path:
    """The partition file ``stem`` of one kind (see KINDS)."""
    return getattr(layout, KINDS[what][2])(corpus) / f"{stem}.parquet"


def read_kind(layout: Layout, corpus: str, what: str, columns: Sequence[str] | None = None,
              verify: bool = True):
    """Every partition of one kind (see KINDS) as one pyarrow Table in tree order: each file
    read once (verified against its index digest unless ``verify`` is False), each
    subdomain's rows sliced where its entry places them."""
    import pyarrow as pa

    from msmbuild.tables import SCHEMAS

    kind, schema_name, _ = KINDS[what]
    index, path, step = _index_of(layout, corpus, what)
    if verify:
        listed = {file.stem for file in verified_files(layout, corpus, what)}
        unlisted = [e for e in (index or {}).get("partitions", [])
                    if isinstance(e.get(kind), dict) and e.get("file") not in listed]
        if unlisted:
            raise MsmbuildError(f"{path}: subdomain {unlisted[0].get('subdomain')!r} is placed in a partition file "
                                f"({unlisted[0].get('file')!r}) the index does not list; run `msmbuild generate "
                                f"{step} {corpus}`")
    reader = FileTables(SCHEMAS[schema_name], columns)
    tables = [reader.rows(kind_path(layout, corpus, what, e["file"]), e[kind]["offset"], e[kind]["rows"])
              for e in (index or {}).get("partitions", []) if isinstance(e.get(kind), dict)]
    return pa.concat_tables(tables) if tables else reader.schema.empty_table()


def _index_of(layout: Layout, corpus: str, what: str) -> tuple[dict[str, Any] | None, Path, str]:
    """(the index that names a kind's files, its path, the step that writes it)."""
    if what.startswith("document"):
        return read_index(layout, corpus), layout.documents_index(corpus), "documents"
    return read_ideas_index(layout, corpus), layout.ideas_index(corpus), "ideas"


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
    what: str = ""  # the kind (KINDS) of a partition file


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
                    problems.append(PartitionProblem(path, digest, index, "missing", corpus, step, what))
                elif not VerifiedFiles.of(path).holds(path, digest):
                    problems.append(PartitionProblem(path, digest, index, "changed", corpus, step, what))
    VerifiedFiles.save_all()
    return problems


def restore_partitions(store: Store, problems: Iterable[PartitionProblem]) -> tuple[list[Path], list[Path]]:
    """Place each listed partition file again from its subdomains' partitions in the store;
    (restored, not restorable: a partition the store does not hold, or bytes that do not
    make the digest the index records)."""
    from msmbuild.tables import SCHEMAS

    restored, lost = [], []
    for problem in problems:
        if not (problem.digest and problem.what):
            lost.append(problem.path)
            continue
        layout = Layout(problem.index.parent.parent.parent)
        kind, schema_name, _ = KINDS[problem.what]
        index = (read_index if problem.step == "documents" else read_ideas_index)(layout, problem.corpus, strict=False)
        entries = [e for e in (index or {}).get("partitions", [])
                   if e.get("file") == problem.path.stem and isinstance(e.get(kind), dict)]
        try:
            data = file_bytes([_stored_rows(store, e, kind, SCHEMAS[schema_name]) for e in entries], SCHEMAS[schema_name])
        except (MsmbuildError, OSError):
            lost.append(problem.path)
            continue
        if digest_bytes(data) != problem.digest:
            lost.append(problem.path)
            continue
        write_bytes_if_changed(problem.path, data)
        VerifiedFiles.of(problem.path).note(problem.path, problem.digest)
        restored.append(problem.path)
    VerifiedFiles.save_all()
    return restored, lost


def _stored_rows(store: Store, entry: dict[str, Any], kind: str, schema):
    """A partition's rows from the store: its object, or for documents that lost rows to
    near-duplicates (whose kept rows are not an object), its candidates less those rows."""
    if kind == "documents" and entry.get("dropped"):
        return without_rows(table_from_bytes(store.get_bytes(entry["candidates"]), schema), entry["dropped"])
    return table_from_bytes(store.get_bytes(entry[kind]["digest"]), schema)


def without_rows(table, dropped: Iterable[int]):
    """A table less the rows at the given indices."""
    gone = set(dropped)
    return table.take([i for i in range(len(table)) if i not in gone])


def unplace_partitions(layout: Layout, corpora: Iterable[str], keys: set[str]) -> list[Path]:
    """Remove the placed files holding the documents partitions made by the actions in keys
    (the ones ``store repair`` drops): files left in build/ would be read as documents and
    adopted again as those actions' results. A partition file holds other subdomains too:
    the next build places it again from the store (no model call). Returns what was removed."""
    removed: list[Path] = []
    for corpus in corpora:
        index = read_index(layout, corpus, strict=False)
        for entry in (index or {}).get("partitions", []):
            if entry.get("key") not in keys:
                continue
            paths = [layout.dropped_rows(corpus, entry["partition"])]
            if isinstance(entry.get("file"), str):
                paths += [kind_path(layout, corpus, what, entry["file"]) for what in ("documents", "document_calls")]
            for path in paths:
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
    """The corpus's documents as one pyarrow Table (tree order; a column a file predates,
    e.g. stop_reason, is null, so partitions of several msmbuild versions concatenate)."""
    require_index(layout, corpus)
    return read_kind(layout, corpus, "documents", columns)


def stored_member(store: Store, name: str, digest: str, schema, old_file: Path | None = None,
                  old_place: tuple[int, int] | None = None) -> Member:
    """A partition to place: its rows from the store object ``digest``; when the store lost
    it, from where the old index placed it (``old_file`` at ``old_place``) if those rows
    encode to exactly that digest."""
    def load():
        try:
            return table_from_bytes(store.get_bytes(digest), schema)
        except StoreError:
            if old_file is None or old_place is None:
                raise
            return old_rows(old_file, old_place, digest, schema, "the store lost it")

    return Member(name, digest, load)


class _RecentFiles:
    """The last few partition files read whole, by (path, stat, schema): a file several of
    whose partitions are placed again from it is read once."""

    def __init__(self, keep: int = 2) -> None:
        self.keep, self.tables = keep, {}

    def table(self, file: Path, schema):
        st = os.stat(file)
        key = (os.fspath(file), st.st_size, st.st_mtime_ns, st.st_ino, tuple(schema.names))
        if key not in self.tables:
            if len(self.tables) >= self.keep:
                self.tables.pop(next(iter(self.tables)))
            self.tables[key] = FileTables(schema).table(file)
        return self.tables[key]


_OLD_FILES = _RecentFiles()


def old_rows(file: Path, place: tuple[int, int], digest: str, schema, why: str):
    """A partition's rows where the old index placed them in ``file`` (``place``: offset,
    rows), if they encode to exactly the partition's digest; else an error naming the file."""
    try:
        table = _OLD_FILES.table(file, schema)
        ok = digest_bytes(member_bytes(table, *place, schema)) == digest
    except (MsmbuildError, OSError):
        ok = False
    if not ok:
        raise MsmbuildError(f"{file}: does not hold the partition {digest[:12]}… where its index places it "
                            f"({why}); run the step again")
    return table.slice(*place)


def place_kind(layout: Layout, corpus: str, what: str, entries: list[dict[str, Any]],
               members: dict[str, Member], old: dict[str, Any] | None, trusted_files: Collection[str] = ()
               ) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Place the partitions of one kind (KINDS) of the entries in their files and record
    each one's place (``offset``, ``rows``) in its entry; (each file's {digest, size}, paths
    changed). ``members``: partition name -> what to place; ``trusted_files``: files the
    caller found untouched since the old index (``trusted_entries``)."""
    from msmbuild.tables import SCHEMAS

    kind, schema_name, _ = KINDS[what]
    directory = getattr(layout, KINDS[what][2])(corpus)
    grouped: dict[str, list[Member]] = {}
    for e in entries:
        grouped.setdefault(e["file"], []).append(members[e["partition"]])
    old_files, old_members = old_layout(old, kind)
    cache = VerifiedFiles.in_dir(layout.corpus_dir(corpus))
    placed = place_files(directory, SCHEMAS[schema_name], grouped, old_files, old_members,
                         cache.holds, cache.note, lambda stem: stem in trusted_files)
    for e in entries:
        e[kind]["offset"], e[kind]["rows"] = placed.positions[e["partition"]]
    return placed.files, placed.changed


def old_places(layout: Layout, corpus: str, what: str, old: dict[str, Any] | None
               ) -> dict[str, tuple[Path, tuple[int, int], str]]:
    """partition name -> (file, (offset, rows), digest) of one kind as the old index places it."""
    kind = KINDS[what][0]
    paths: dict[str, Path] = {}  # one Path per file, not per partition
    out = {}
    for e in (old or {}).get("partitions", []):
        if isinstance(e.get(kind), dict) and "offset" in e[kind] and isinstance(e.get("file"), str):
            path = paths.get(e["file"]) or paths.setdefault(e["file"], kind_path(layout, corpus, what, e["file"]))
            out[e["partition"]] = (path, (e[kind]["offset"], e[kind]["rows"]), e[kind]["digest"])
    return out


def old_place(places: dict[str, tuple[Path, tuple[int, int], str]], name: str, digest: str
              ) -> tuple[Path, tuple[int, int]] | tuple[()]:
    """(file, (offset, rows)) where ``old_places`` says the old index placed a partition of
    this digest, else () (for ``stored_member``'s fallback)."""
    found = places.get(name)
    return found[:2] if found is not None and found[2] == digest else ()


def entry_files(layout: Layout, corpus: str, old: dict[str, Any] | None, whats: tuple[str, str]
                ) -> Callable[[dict[str, Any]], list[tuple[str, str]] | None]:
    """For ``trusted_entries``: an old index entry's partition files of two kinds (KINDS,
    e.g. documents and document_calls) with the digests the old index records for those
    files; None for an entry not placed where its subdomain belongs or lacking either kind."""
    placed = (old or {}).get("files") or {}
    dirs = {what: os.fspath(getattr(layout, KINDS[what][2])(corpus)) for what in whats}
    kinds = [KINDS[what][0] for what in whats]

    def files(e: dict[str, Any]) -> list[tuple[str, str]] | None:
        f = placed.get(e.get("file")) if e.get("file") == file_of(e.get("subdomain", "")) else None
        if not (isinstance(f, dict) and all(isinstance(e.get(k), dict) and isinstance(f.get(k), dict) for k in kinds)):
            return None
        return [(os.path.join(dirs[what], f"{e['file']}.parquet"), f[kind]["digest"])
                for what, kind in zip(whats, kinds, strict=True)]

    return files


def merge_files(*maps: tuple[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The index's "files": stem -> {kind: {digest, size}} from each kind's files."""
    out: dict[str, dict[str, Any]] = {}
    for kind, files in maps:
        for stem, value in files.items():
            out.setdefault(stem, {})[kind] = value
    return dict(sorted(out.items()))


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
    """(file, digest) of each partition file a corpus's index names: ``what`` is "documents"
    or "document_calls" (documents.json), "ideas" or "idea_calls" (ideas.json)."""
    index, kind = _index_of(layout, corpus, what)[0], KINDS[what][0]
    return [(kind_path(layout, corpus, what, stem), f[kind]["digest"])
            for stem, f in sorted(((index or {}).get("files") or {}).items())
            if isinstance(f, dict) and isinstance(f.get(kind), dict)]


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


def write_index(layout: Layout, corpus: str, partitions: list[dict[str, Any]], files: dict[str, dict[str, Any]],
                inputs: Sequence[Path] = (), old: dict[str, Any] | None = None) -> bool:
    """Write documents.json when its bytes change; True if written.

    ``files``: each partition file's digests (``merge_files``). An unchanged index older
    than one of inputs is touched: Snakemake compares its mtime with its inputs' (and keeps
    it, as an ``update`` output, instead of deleting it). ``old``: the index as this step
    read it (see ``write_step_file``).
    """
    data = {"format": INDEX_FORMAT, "corpus": corpus,
            "n_documents": sum(p["n_docs"] for p in partitions), "partitions": partitions, "files": files}
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
    """Write a step's JSON file (an index, assertions.json: canonical JSON, one line) as
    ``write_touching`` does, and note it in the corpus's ``VerifiedFiles``; True if written.

    When the file is untouched since this step last noted it and ``old`` (what the step read
    from it) equals value, it already holds those bytes: nothing is encoded or
    compared byte by byte. A file noted here is what ``trusted_entries`` requires.
    """
    if old is not None and value == old and keep_step_file(path, inputs):
        return False
    data = canonical_json(value) + b"\n"  # compact: the C encoder (an index is 10k entries at 1M documents)
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
    seen: dict[tuple[str, str], bool] = {}  # a partition file holds many subdomains: one stat each
    for entry in index["partitions"]:
        sid = entry.get("subdomain")
        key = keys.get(sid) if isinstance(sid, str) else None
        if key is None or entry.get("key") != key or sid in out or entry.get("partition") != partition_name(sid):
            continue
        named = files(entry)
        if named is not None and all(_unchanged(cache, seen, path, digest) for path, digest in named) \
                and store.has_local_action(key):
            out[sid] = entry
    return out


def _unchanged(cache: VerifiedFiles, seen: dict[tuple[str, str], bool], path: str, digest: str) -> bool:
    """``cache.unchanged(path, digest)``, asked once per (file, digest)."""
    if (path, digest) not in seen:
        seen[(path, digest)] = cache.unchanged(path, digest) is not None
    return seen[(path, digest)]


def write_dataset(layout: Layout, corpus: str, rows: Sequence[dict[str, Any]]) -> list[str]:
    """Write document rows as the corpus's partitioned dataset and index; the paths changed.

    For documents made outside the generate step (imports, tests, benchmarks): rows are
    grouped by subdomain in first-seen order, each group one partition with the documents
    schema (missing columns are null), placed in partition files that are written only when
    the partitions they hold change. No calls are recorded.
    """
    from msmbuild.tables import SCHEMAS, parquet_bytes

    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row.get("subdomain")), []).append(row)
    entries, members = [], {}
    old = read_index(layout, corpus, strict=False)
    for subdomain, group in groups.items():
        name = partition_name(subdomain)
        data = parquet_bytes(group, SCHEMAS["documents"])
        digest = digest_bytes(data)
        members[name] = Member(name, digest, lambda data=data: table_from_bytes(data, SCHEMAS["documents"]))
        entries.append({"partition": name, "subdomain": subdomain, "domain": group[0].get("domain"),
                        "file": file_of(subdomain), "key": None, "documents": {"digest": digest, "size": len(data)},
                        "n_docs": len(group), "n_chars": sum(r.get("n_chars") or 0 for r in group),
                        "kept_cost_usd": float(sum(r.get("cost_usd") or 0.0 for r in group)), "n_calls": 0,
                        "calls_cost_usd": 0.0, "new_cost_usd": 0.0, "made_at": None,
                        "spec_digests": {}, "prompt_versions": {}})
    files, changed = place_kind(layout, corpus, "documents", entries, members, old)
    if write_index(layout, corpus, entries, merge_files(("documents", files))):
        changed.append(str(layout.documents_index(corpus)))
    VerifiedFiles.save_all()
    return changed


def read_calls(layout: Layout, corpus: str):
    """Every model call of the corpus's three steps as one pyarrow Table (tree, ideas, documents)."""
    import pyarrow as pa

    from msmbuild.tables import SCHEMAS

    tree = layout.step_calls(corpus, "tree")
    tables = [FileTables(SCHEMAS["calls"]).table(tree)] if tree.is_file() else []
    tables += [read_kind(layout, corpus, what, verify=False) for what in ("idea_calls", "document_calls")]
    return pa.concat_tables(tables) if tables else SCHEMAS["calls"].empty_table()

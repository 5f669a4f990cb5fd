"""Where a suite's items come from: its local file and its released eval sets.

A suite (preference, qa) reads ``evals.<suite>.path`` (a local jsonl) and each of
``evals.<suite>.sets``: a dataset by id (``datasets.load_dataset`` through
msmbuild.hubdata, the loader the AFT mixes use) whose columns are mapped onto the suite's
item fields by params alone — nothing is guessed. Every item carries ``eval_set``, the
set it came from (``hub:<id>:<split>@<revision>`` or ``path:<file>``), and the suite's rows
and summaries pass it on, so every number names its set.

A set that cannot be loaded (offline, ``datasets`` missing) is an error, unless it names a
``fallback`` file: then the switch is printed on stderr and the fallback's items carry
``path:<fallback>`` and a note saying which set they stand in for. A fallback file that
another source of the suite already reads is read once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from msmbuild.config import EvalSetConfig
from msmbuild.errors import EvalInputError
from msmbuild.hashing import canonical_json, digest_bytes

ReadLocal = Callable[[str], list[dict[str, Any]]]

# Datasets as loaded, by (id, split, revision, local directory state): the key, the audit
# and the run of one process load a set once. Local files are read each time (cheap).
_LOADED: dict[str, Any] = {}
# Switches to a fallback (and unpinned revisions) already printed by this process.
_ANNOUNCED: set[str] = set()


def set_label(s: EvalSetConfig) -> str:
    """hub:<id>:<split>@<revision> (``@unpinned`` without a revision)."""
    return f"hub:{s.hub}:{s.split}@{s.revision or 'unpinned'}"


def path_label(path: str) -> str:
    """path:<file>."""
    return f"path:{path}"


def suite_items(suite: str, cfg: Any, read_local: ReadLocal) -> list[dict[str, Any]]:
    """Items of ``evals.<suite>``: its path's, then each set's (or its fallback's), each with eval_set.

    ``read_local(file)`` reads one local eval file in the suite's jsonl format.
    """
    return _load(suite, cfg, read_local)


def items_digest(items: list[dict[str, Any]]) -> str:
    """Digest of the items as evaluated (what a suite's result depends on when it has sets)."""
    return digest_bytes(canonical_json([{k: v for k, v in i.items() if k != "_line"} for i in items]))


def eval_set_files(cfg: Any) -> list[str]:
    """Local files a suite may read: its path and its sets' fallbacks (each once)."""
    files = [cfg.path] if cfg.path else []
    files += [s.fallback for s in cfg.sets if s.fallback and s.fallback not in files]
    return list(dict.fromkeys(files))


def _load(suite: str, cfg: Any, read_local: ReadLocal) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    read: set[str] = set()
    if cfg.path:
        items += _tagged(read_local(cfg.path), path_label(cfg.path), "")
        read.add(cfg.path)
    for i, s in enumerate(cfg.sets):
        where = f"evals.{suite}.sets[{i}]"
        if s.fallback is not None and not Path(s.fallback).is_file():
            raise EvalInputError(f"params.yaml: key '{where}.fallback': file not found: {s.fallback}")
        try:
            records = _records(s, where)
        except EvalInputError as exc:
            if s.fallback is None:
                raise
            reason = str(exc).removeprefix(f"{where}.hub: ")
            again = s.fallback in read
            _announce(f"{where} ({s.name}): {set_label(s)} is not available ({reason}); using its fallback "
                      f"{s.fallback}" + (" (already read for this suite)" if again else ""))
            if not again:
                note = f"offline fallback for {set_label(s)}"
                items += _tagged(read_local(s.fallback), path_label(s.fallback), note)
                read.add(s.fallback)
            continue
        items += _mapped(suite, s, records, where)
    seen: dict[str, str] = {}
    for item in items:
        if item["id"] in seen:
            raise EvalInputError(f"evals.{suite}: item id {item['id']!r} is in both {seen[item['id']]} and "
                                 f"{item['eval_set']} (give the set another name)")
        seen[item["id"]] = item["eval_set"]
    return items


def _tagged(rows: list[dict[str, Any]], label: str, note: str) -> list[dict[str, Any]]:
    return [{**r, "eval_set": label, "eval_set_note": note} for r in rows]


def _announce(line: str) -> None:
    """Print a line on stderr once per process."""
    if line not in _ANNOUNCED:
        _ANNOUNCED.add(line)
        print(line, file=sys.stderr)


def _records(s: EvalSetConfig, where: str) -> Any:
    """The set's rows from the hub or a local dataset directory, with a warning when unpinned."""
    from msmbuild.hubdata import is_pinned, load_hub_dataset

    local = Path(s.hub)
    state = sorted((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in local.rglob("*") if f.is_file()) \
        if local.is_dir() else None
    memo = digest_bytes(canonical_json([s.hub, s.split, s.revision, str(local.resolve()), state]))
    if memo not in _LOADED:
        _LOADED[memo] = load_hub_dataset(s.hub, s.split, s.revision, where, EvalInputError)
    if not local.exists() and not is_pinned(s.revision):
        _announce(f"{where} ({s.name}): revision {s.revision!r} of {s.hub} is not a commit sha; "
                  "the set can change under this name (pin it)")
    return _LOADED[memo]


def _mapped(suite: str, s: EvalSetConfig, records: Any, where: str) -> list[dict[str, Any]]:
    """The set's rows as the suite's items (fields by columns and constants; favoured decoded)."""
    columns = list(getattr(records, "column_names", None) or [])
    needed = [c for v in s.columns.values() for c in (v if isinstance(v, list) else [v])]
    needed += [s.favoured.column] if s.favoured and s.favoured.column else []
    missing = [c for c in needed if columns and c not in columns]
    if missing:
        raise EvalInputError(f"{where}.columns: {s.hub} has no column {missing[0]!r} "
                             f"(its columns: {', '.join(columns)})")
    out = []
    for n, rec in enumerate(records, 1):
        at = f"{where} ({s.name}) row {n}"
        item: dict[str, Any] = {"role": s.role, "eval_set": set_label(s), "eval_set_note": ""}
        for name, col in s.columns.items():
            item[name] = [_text(rec, c, at) for c in col] if isinstance(col, list) else _text(rec, col, at)
        item.update(s.constants)
        item["id"] = f"{s.name}/{item.get('id', n)}"
        if s.favoured is not None:
            item["favoured"] = {s.favoured.value: _favoured_index(s, rec, item["items"], at)}
        if suite == "qa":
            item.setdefault("spec", None)
        out.append(item)
    if not out:
        raise EvalInputError(f"{where} ({s.name}): {s.hub} split {s.split!r} has no rows")
    return out


def _text(rec: dict[str, Any], col: str, at: str) -> str:
    value = rec[col]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise EvalInputError(f"{at}: column {col!r} holds {type(value).__name__}, expected text")
    text = str(value)
    if not text.strip():
        raise EvalInputError(f"{at}: column {col!r} is empty")
    return text


def _favoured_index(s: EvalSetConfig, rec: dict[str, Any], items: list[str], at: str) -> int:
    """0 or 1: which item the set's value favours on this row, decoded as favoured.encoding says."""
    fav = s.favoured
    assert fav is not None
    if fav.encoding == "first":
        return 0
    raw = rec[fav.column]
    if fav.encoding == "index":
        if isinstance(raw, bool) or raw not in (0, 1):
            raise EvalInputError(f"{at}: favoured column {fav.column!r} is {raw!r}, expected 0 or 1")
        return int(raw)
    if fav.encoding == "label":
        if str(raw) not in fav.labels:
            raise EvalInputError(f"{at}: favoured column {fav.column!r} is {raw!r}, not one of the labels "
                                 f"{', '.join(fav.labels)}")
        return fav.labels[str(raw)]
    if raw not in items:
        raise EvalInputError(f"{at}: favoured column {fav.column!r} is {raw!r}, which is neither item's text")
    return items.index(raw)


def used_sets(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each eval set the items came from, with its item count and note (summary.json's eval_sets)."""
    counts: dict[tuple[str, str], int] = {}
    for item in items:
        key = (item["eval_set"], item.get("eval_set_note") or "")
        counts[key] = counts.get(key, 0) + 1
    return [{"eval_set": s, "n_items": n, "note": note} for (s, note), n in counts.items()]


def format_eval_sets(params: Any) -> str:
    """``msmbuild plan``'s lines for the released eval sets: what each suite will read, and its fallback."""
    from msmbuild.experiments import expand_arms

    run = {s for arm in expand_arms(params) for s in arm.evals}
    lines = []
    for suite in ("preference", "qa"):
        cfg = getattr(params.evals, suite)
        for i, s in enumerate(cfg.sets):
            pin = "" if Path(s.hub).exists() or _pinned(s.revision) else "; revision not pinned"
            fallback = f"fallback {s.fallback}" if s.fallback else "no fallback: a load failure stops the suite"
            used = "" if suite in run else f"; no arm runs {suite}"
            lines.append(f"  evals.{suite}.sets[{i}] {s.name}: {set_label(s)} ({s.role}); {fallback}{pin}{used}")
    if not lines:
        return ""
    return "\n".join(["eval sets (read when the suite runs; a fallback is printed when used):", *lines])


def _pinned(revision: str | None) -> bool:
    from msmbuild.hubdata import is_pinned

    return is_pinned(revision)

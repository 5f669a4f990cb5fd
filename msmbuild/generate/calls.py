"""Model calls through the action cache: hits from the store, misses to the backend.

The key of a call is ``store.key("generate", {"backend": backend.identity(), "request":
request.key_inputs()})``: the backend's identity (model, revision, seed; never
credentials or concurrency) and the request (system, context, prompt, schema, sampling,
sample index, prompt version), where a ``context_key`` stands in for the context (the
full_incremental policy). Each stored result carries ``context_digest``, the digest of
the context it was made with, so a result made against an older spec is visible, and
``refresh_stale`` regenerates exactly those. A request that carries ``legacy`` (the same
call as the previous prompt version built it) and misses is answered by the legacy
request's stored answer when there is one: an upgrade of the prompts re-pays nothing, the
answer keeps its key and prompt version (so ``status`` counts it as made by an older
prompt) and ``refresh_stale`` makes it again with the current prompt. Each answer is handed to a background
``ResultWriter`` the moment it arrives and is normally on disk within
``WRITE_INTERVAL_S``, so a run stopped halfway pays again only for what was in flight
(and, after a SIGKILL, for answers still queued).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from msmbuild.errors import BackendError, MsmbuildError
from msmbuild.gcfreeze import frozen_heap
from msmbuild.generate.backends.base import Backend, GenRequest, GenResult, ItemError
from msmbuild.hashing import canonical_text as _canonical
from msmbuild.hashing import digest_bytes, digest_text
from msmbuild.progress import Progress
from msmbuild.store import ResultWriter, Store

CALL_KIND = "generate"
WRITE_INTERVAL_S = 0.02  # how often the result writer stores what has arrived
SYNC_EVERY_S = 1.0  # how often bulk generation makes stored results durable


@dataclass
class CallStats:
    """What one run_requests call did: hits, misses, errors, tokens and cost of the misses."""

    requests: int = 0
    hits: int = 0
    misses: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_saving_usd: float = 0.0
    cost_usd: float = 0.0
    wall_s: float = 0.0

    def add(self, other: CallStats) -> None:
        """Accumulate another run's counts into this one."""
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


def _context_digest(request: GenRequest) -> str:
    return digest_text(request.context) if request.context else ""


def call_key(store: Store, backend: Backend, request: GenRequest) -> str:
    """The action key of one request on one backend."""
    return request_key(store, backend.identity(), request)


def request_key(store: Store, identity: dict[str, Any], request: GenRequest) -> str:
    """The action key of one request on the backend with this identity.

    ``store.key(CALL_KIND, {"backend": identity, "request": request.key_inputs()})``, byte
    for byte: the canonical JSON is assembled here so that a request's schemas (module
    constants shared by every request of a stage, most of a request's key input) are
    encoded once per object, not once per request (``_schema_json``).
    """
    inputs = request.key_inputs()
    parts: list[str] = []
    run: dict[str, Any] = {}  # consecutive fields (in key order) that are not schemas: encoded together
    for name in sorted(inputs):
        if name in _SCHEMA_FIELDS:
            if run:
                parts.append(_canonical(run)[1:-1])
                run = {}
            parts.append(f"{_canonical(name)}:{_schema_json(inputs[name])}")
        else:
            run[name] = inputs[name]
    if run:
        parts.append(_canonical(run)[1:-1])
    fields = ",".join(parts)
    text = f'{{"inputs":{{"backend":{_canonical(identity)},"request":{{{fields}}}}},"kind":{_canonical(CALL_KIND)}}}'
    return digest_bytes(text.encode("utf-8"))


_SCHEMA_FIELDS = ("schema", "shared_schemas")
_SCHEMAS_SEEN: dict[int, tuple[Any, str]] = {}  # id -> (the object, kept alive so its id stays its own; text)


def _schema_json(value: Any) -> str:
    """The canonical JSON of a request's schema (or its stage schemas), encoded once per
    object. Schemas are never mutated (they are built once, as module constants or per
    request); at most 256 objects are remembered, so schemas built per request cost one
    encoding each, as before."""
    if not isinstance(value, dict):
        return _canonical(value)
    seen = _SCHEMAS_SEEN.get(id(value))
    if seen is not None and seen[0] is value:
        return seen[1]
    text = _canonical(value)
    if len(_SCHEMAS_SEEN) < 256:
        _SCHEMAS_SEEN[id(value)] = (value, text)
    return text


def cut_off(result: GenResult) -> bool:
    """Whether an answer stopped because it ran out of tokens (never kept as a result)."""
    return result.meta.get("stop_reason") == "max_tokens"


def unclosed_content(answer: str) -> bool:
    """Whether an answer opens <content> and never closes it: the document ends mid-text.

    (A scratchpad may quote the tag; only the last <content> counts.)
    """
    opened = answer.rfind("<content>")
    return opened >= 0 and "</content>" not in answer[opened:]


@dataclass
class CutOff:
    """Stored answers cut off before that was refused, and what kept them.

    Called with every action record (``Store.verify``'s visit, or ``find_cut_off``), it
    notes each model answer that was cut off (stop_reason max_tokens, or a document whose
    <content> is never closed: made by an msmbuild that kept such answers) and each
    documents partition built from one (``meta["keeps"]``). ``msmbuild store verify``
    lists them; ``msmbuild store repair`` drops them so the next build asks again.
    """

    calls: dict[str, str] = field(default_factory=dict)  # call key -> why
    _keeps: list[tuple[str, list[str]]] = field(default_factory=list)

    def __call__(self, key: str, record: Any, store: Store | None = None) -> None:
        kind = record.meta.get("kind")
        if kind == "documents-partition":
            self._keeps.append((key, list(record.meta.get("keeps") or [])))
            return
        if kind != CALL_KIND:
            return
        value = record.inline.get("value")
        if value is None and store is not None and "value" in record.outputs:
            try:
                value = store.get_json(record.outputs["value"])
            except (MsmbuildError, OSError, ValueError):  # a corrupt object: verify reports it
                return
        if not isinstance(value, dict):
            return
        meta = value.get("meta") or {}
        if meta.get("stop_reason") == "max_tokens" or record.meta.get("stop_reason") == "max_tokens":
            self.calls[key] = "stop_reason max_tokens"
        elif record.meta.get("stage") == "document" and unclosed_content(str(value.get("text") or "")):
            self.calls[key] = "<content> never closed"

    @property
    def partitions(self) -> dict[str, list[str]]:
        """documents partition key -> the cut-off calls it was built from."""
        out = {}
        for key, keeps in self._keeps:
            bad = [k for k in keeps if k in self.calls]
            if bad:
                out[key] = bad
        return out


def find_cut_off(store: Store) -> CutOff:
    """CutOff over every action record of the store (one pass)."""
    found = CutOff()
    for key in store.action_keys():
        try:
            record = store.actions.get(key)
        except MsmbuildError:
            continue  # verify reports a malformed record by itself
        if record is not None and not record.bad_inline():
            found(key, record, store)
    return found


def legacy_hit(store: Store, identity: dict[str, Any], request: GenRequest) -> tuple[str, Any] | None:
    """(key, stored record) of the previous prompt version's answer to request, or None."""
    if request.legacy is None:
        return None
    key = request_key(store, identity, request.legacy)
    found = store.lookup_json(key)
    return (key, found) if found is not None else None


def _row(key: str, req: GenRequest, res: GenResult | None, hit: bool, wall_s: float,
         error: str, backend: Backend, made_at: float = 0.0, stop_reason: str = "") -> dict[str, Any]:
    usage = res.usage if res is not None else None
    return {
        "key": key, "corpus": "", "stage": req.stage, "prompt_version": req.prompt_version, "subdomain": "",
        "backend": res.backend if res is not None and res.backend else backend.name,
        "model": res.model if res is not None else "",
        "cache_hit": hit,
        "input_tokens": usage.input_tokens if usage else 0,
        "output_tokens": usage.output_tokens if usage else 0,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens if usage else 0,
        "cache_read_input_tokens": usage.cache_read_input_tokens if usage else 0,
        "cache_saving_usd": float(res.meta.get("cache_saving_usd", 0.0)) if res is not None else 0.0,
        "cost_usd": res.cost_usd if res is not None else 0.0,
        "wall_s": wall_s, "made_at": made_at, "error": error,
        "context_digest": str(res.meta.get("context_digest", "")) if res is not None else "",
        "stop_reason": str(res.meta.get("stop_reason") or "") if res is not None else stop_reason,
    }


def run_requests(
    store: Store,
    backend: Backend,
    requests: Sequence[GenRequest],
    *,
    desc: str,
    progress: bool = True,
    raise_on_error: bool = True,
    refresh_stale: bool = False,
    resolved: dict[str, str] | None = None,
) -> tuple[list[GenResult | None], CallStats, list[dict[str, Any]]]:
    """Answer requests through the store; return (results, stats, rows) in request order.

    Rows are one per request for the calls table; a hit's row carries the tokens and cost
    its result was made with and ``cache_hit=True``. Items the backend fails on stay
    None; every other result is stored first, then (with raise_on_error) a BackendError
    lists each failed item, so a rerun sends only those. With refresh_stale, a stored
    result made with another context than the request's (an older spec) is made again and
    replaces it under the same key. Without refresh_stale, a miss whose ``legacy`` request
    is stored is answered by that (a hit; its row carries the legacy key and prompt
    version, and ``resolved`` maps the request's key to it).
    """
    start = time.perf_counter()
    stats = CallStats(requests=len(requests))
    keys = [call_key(store, backend, r) for r in requests]
    results: list[GenResult | None] = [None] * len(requests)
    rows: list[dict[str, Any] | None] = [None] * len(requests)
    bar = Progress(len(requests), desc, "call", enabled=progress)
    todo: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        if key in todo:
            todo[key].append(i)
            continue
        found = store.lookup_json(key)
        req = requests[i]
        if found is None and not refresh_stale and (old := legacy_hit(store, backend.identity(), req)):
            key, found = old
            req = req.legacy  # type: ignore[assignment]
            if resolved is not None:
                resolved[keys[i]] = key
        if found is None:
            todo[key] = [i]
            continue
        res = GenResult.from_json(found.value)
        if refresh_stale and res.meta.get("context_digest", "") != _context_digest(requests[i]):
            todo[key] = [i]
            continue
        if cut_off(res):  # stored before cut-off answers were refused: ask again, replace it
            todo[key] = [i]
            continue
        results[i] = res
        rows[i] = _row(key, req, res, True, float(found.meta.get("wall_s", 0.0)), "", backend,
                       float(found.meta.get("created") or 0.0))
        stats.hits += 1
        bar.update(1)
    miss_keys = list(todo)
    miss_requests = [requests[todo[k][0]] for k in miss_keys]
    lock = threading.Lock()
    last = [time.perf_counter()]

    cut: list[tuple[int, GenResult]] = []

    def on_result(writer: ResultWriter, j: int, res: GenResult) -> None:
        key = miss_keys[j]
        if cut_off(res):  # any backend: a cut-off answer is a failed item, never stored
            with lock:
                cut.append((j, res))
            return
        res.meta["context_digest"] = _context_digest(miss_requests[j])
        with lock:
            now = time.perf_counter()
            wall = float(res.meta.get("wall_s", now - last[0]))
            last[0] = now
        meta = {"kind": CALL_KIND, "stage": miss_requests[j].stage, "model": res.model,
                "backend": res.backend or backend.name,
                "input_tokens": res.usage.input_tokens,
                "output_tokens": res.usage.output_tokens,
                "cache_creation_input_tokens": res.usage.cache_creation_input_tokens,
                "cache_read_input_tokens": res.usage.cache_read_input_tokens,
                "cost_usd": res.cost_usd, "batch": res.batch,
                "produced_by_model": res.produced_by_model, "wall_s": wall, "created": time.time(),
                "stop_reason": res.meta.get("stop_reason")}
        # Stored by the writer thread, made durable in groups: one syncfs about every
        # second (and when the run ends) covers every result written before it.
        writer.save_json(key, res.to_json(), meta)
        with lock:
            for i in todo[key]:
                results[i] = res
                rows[i] = _row(key, requests[i], res, False, wall, "", backend, meta["created"])
            stats.misses += 1
            stats.input_tokens += res.usage.input_tokens
            stats.output_tokens += res.usage.output_tokens
            stats.cache_creation_input_tokens += res.usage.cache_creation_input_tokens
            stats.cache_read_input_tokens += res.usage.cache_read_input_tokens
            stats.cache_saving_usd += float(res.meta.get("cache_saving_usd", 0.0))
            stats.cost_usd += res.cost_usd
            bar.update(len(todo[key]))

    failures: list[str] = []
    try:
        if miss_requests:
            # every answer received is stored and durable once this block ends, also when
            # generation fails
            with frozen_heap(), ResultWriter(store, WRITE_INTERVAL_S, SYNC_EVERY_S) as writer:
                deliver = functools.partial(on_result, writer)
                deliver.flush = writer.flush  # type: ignore[attr-defined]  # see Backend.generate
                errors = backend.generate(miss_requests, deliver)
            errors += [ItemError(j, f"{backend.name} {miss_requests[j].stage} request: the answer was cut off "
                                    f"(stop_reason max_tokens, {res.usage.output_tokens} output tokens); "
                                    "not stored: a rerun asks again", "max_tokens") for j, res in cut]
            for err in sorted(errors, key=lambda e: e.index):
                key = miss_keys[err.index]
                for i in todo[key]:
                    rows[i] = _row(key, requests[i], None, False, 0.0, str(err), backend,
                                   stop_reason=err.stop_reason)
                    failures.append(f"{requests[i].stage} request #{i} (key {key[:12]}): {err}")
                stats.errors += 1
    finally:
        bar.close()
    for i, row in enumerate(rows):
        if row is None:  # the backend neither answered nor reported the item
            rows[i] = _row(keys[i], requests[i], None, False, 0.0, "no answer from backend", backend)
            failures.append(f"{requests[i].stage} request #{i} (key {keys[i][:12]}): no answer from backend")
            stats.errors += 1
    stats.wall_s = time.perf_counter() - start
    if failures and raise_on_error:
        shown = "; ".join(failures[:5]) + (f"; ... ({len(failures) - 5} more)" if len(failures) > 5 else "")
        raise BackendError(f"{desc}: {len(failures)} of {len(requests)} requests failed "
                           f"({stats.misses} new results were stored; rerun to retry): {shown}")
    return results, stats, [r for r in rows if r is not None]


@dataclass
class CallRun:
    """The model calls of one run: ``run_requests`` with stats, ledger rows and cost added up."""

    store: Store
    backend: Backend
    label: str  # progress-bar prefix, e.g. the corpus
    progress: bool = True
    stats: CallStats = field(default_factory=CallStats)
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per call, for the calls table
    cost_usd: float = 0.0  # what the answers cost to make, hits included
    refresh_stale: bool = False  # remake stored answers made against another context or by an older prompt
    resolved: dict[str, str] = field(default_factory=dict)  # request key -> the older prompt's key that answered it

    def call(self, requests: Sequence[GenRequest], desc: str,
             tags: Sequence[dict[str, Any]] | None = None) -> list[GenResult]:
        """Run requests (hits from the store); tags add columns to each call's row."""
        results, stats, rows = run_requests(self.store, self.backend, requests,
                                            desc=f"{self.label}: {desc}", progress=self.progress,
                                            refresh_stale=self.refresh_stale, resolved=self.resolved)
        for row, tag in zip(rows, tags or (), strict=tags is not None):
            row.update(tag)
        self.stats.add(stats)
        self.rows.extend(rows)
        done = [r for r in results if r is not None]
        self.cost_usd += sum(r.cost_usd for r in done)
        return done

    def key(self, request: GenRequest) -> str:
        """The action key of a request on this run's backend (of the older prompt's call that answered it)."""
        key = call_key(self.store, self.backend, request)
        return self.resolved.get(key, key)

    def legacy_answer(self, request: GenRequest) -> bool:
        """True when the request's previous-prompt call is stored and stands in for it (no refresh)."""
        return not self.refresh_stale and legacy_hit(self.store, self.backend.identity(), request) is not None

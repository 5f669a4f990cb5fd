"""The ``anthropic`` backend: Claude through the official SDK, fast, cheap and resumable.

Messages paced to the API's rate limits (``_ratelimit``), retries, Message Batches with a
ledger a killed run collects (``_batches``), prompt caching, a Models API preflight,
structured JSON by forced tool use (``_structured``) and cost on every result: each is
described in docs/generate.md, "The anthropic backend". The API key is read from the
variable ``api_key_env`` names when a client is made and is kept nowhere else.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from msmbuild.config import AnthropicConfig, Price
from msmbuild.errors import BackendError, StoreError
from msmbuild.generate.backends import _structured
from msmbuild.generate.backends._batches import BatchLedger, PendingBatch
from msmbuild.generate.backends._ratelimit import (
    RateBudget,
    SharedLimiter,
    budget_for,
    limiter_for,
    pause_from_headers,
)
from msmbuild.generate.backends.base import (
    Backend,
    GenRequest,
    GenResult,
    ItemError,
    OnResult,
    Usage,
)
from msmbuild.generate.backends.pricing import cache_saving_usd, cost_usd, price_for
from msmbuild.generate.caching import (
    CacheSplit,
    estimated_tokens,
    input_blocks,
    min_cacheable_tokens,
    split_input,
)
from msmbuild.generate.models import DEFAULT_MODEL
from msmbuild.hashing import action_key
from msmbuild.layout import DEFAULT_STORE_PATH, batch_state_dir
from msmbuild.progress import duration, status_line

__all__ = ["AnthropicBackend"]

log = logging.getLogger(__name__)


def _batch_status(batch: Any, elapsed_s: float) -> str:
    """One progress line of a Message Batch: id, status, counts per state, elapsed time."""
    counts = getattr(batch, "request_counts", None)
    parts = [f"{name} {getattr(counts, name, 0)}" for name in
             ("processing", "succeeded", "errored", "canceled", "expired")] if counts is not None else []
    return (f"anthropic batch {batch.id}: {batch.processing_status}"
            f"{'; ' + ', '.join(parts) if parts else ''}; elapsed {duration(elapsed_s)}")

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_STATE_DIR = batch_state_dir(DEFAULT_STORE_PATH)
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 60.0
_RETRY_STATUSES = {408, 409, 429}
_FATAL_STATUSES = {401, 402, 403}
_FATAL_PHRASES = ("spend limit", "credit balance", "billing")
_BODY_ONLY = ("temperature", "top_p", "top_k")


class _ItemFailure(Exception):
    """One request failed for good; the others go on."""

    def __init__(self, message: str, stop_reason: str = ""):
        super().__init__(message)
        self.stop_reason = stop_reason


class _Malformed(Exception):
    """A 200 answer whose body is not a whole message (cut off mid-JSON): retried like a
    dropped connection. ``headers`` are the answer's, for the rate budget."""

    def __init__(self, message: str, headers: Any):
        super().__init__(message)
        self.headers = headers


class _Stopped(Exception):
    """The run is stopping (a fatal error elsewhere): this request is not sent."""


def _error_text(exc: Any) -> str:
    """'<status> <type>: <message>' from an SDK status error (never any header)."""
    body = getattr(exc, "body", None)
    err = body.get("error", {}) if isinstance(body, dict) else {}
    etype = err.get("type", type(exc).__name__) if isinstance(err, dict) else type(exc).__name__
    message = err.get("message", "") if isinstance(err, dict) else str(body or "")
    return f"{getattr(exc, 'status_code', '?')} {etype}: {message}".strip()


def _add_usage(total: Usage, raw: Any) -> Usage:
    """Add an SDK Usage to total; return the SDK usage as ours."""
    one = Usage(
        input_tokens=raw.input_tokens or 0,
        output_tokens=raw.output_tokens or 0,
        cache_creation_input_tokens=getattr(raw, "cache_creation_input_tokens", None) or 0,
        cache_read_input_tokens=getattr(raw, "cache_read_input_tokens", None) or 0,
    )
    for name, tokens in vars(one).items():
        setattr(total, name, getattr(total, name) + tokens)
    return one


class AnthropicBackend(Backend):
    """Claude via the Messages and Message Batches APIs (see the module docstring)."""

    name = "anthropic"

    def __init__(
        self,
        config: AnthropicConfig,
        prices: dict[str, Price],
        max_concurrency: int | None = None,
        state_dir: str | os.PathLike[str] | None = None,
    ):
        self.config = config
        self.prices = prices
        self.max_concurrency = max_concurrency or config.max_concurrency
        self.base_url = (config.base_url or os.environ.get("ANTHROPIC_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.ledger = BatchLedger(state_dir if state_dir is not None else DEFAULT_STATE_DIR)
        self._checked = False
        self._cached_prefixes: set[str] = set()  # prefixes this process has marked (a cache entry may exist)

    # -- the Backend interface -------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """Backend and model only: never the key, the URL or concurrency settings."""
        return {"backend": self.name, "model": self.config.model}

    def generate(self, requests: Sequence[GenRequest], on_result: OnResult) -> list[ItemError]:
        """Answer every request (Messages, or Batches for bulk); see Backend.generate."""
        if not requests:
            return []
        price_for(self.config.model, self.prices)  # an unknown model fails before any spending
        if self.config.preflight and not self._checked:
            self.preflight()
        run = _Run(self, requests, on_result)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(run.main())
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # called from inside a loop
            return pool.submit(asyncio.run, run.main()).result()

    def preflight(self) -> None:
        """One Models API call: is the configured model served? Else a BackendError naming the key."""
        import anthropic

        key = self._api_key()
        client = anthropic.Anthropic(api_key=key, base_url=self.base_url, max_retries=2,
                                     timeout=min(self.config.timeout_s, 60.0))
        try:
            client.models.retrieve(self.config.model)
        except anthropic.NotFoundError:
            raise BackendError(
                f"params.yaml: backends.anthropic.model: {self.config.model!r} is not a model the API "
                f"serves (retired or unknown); choose a current one, e.g. {DEFAULT_MODEL}") from None
        except anthropic.APIStatusError as exc:
            raise BackendError(f"anthropic Models API check of backends.anthropic.model failed: "
                               f"{_error_text(exc)}") from None
        except anthropic.APIConnectionError as exc:
            raise BackendError(f"anthropic Models API unreachable at {self.base_url}: {exc}") from None
        finally:
            client.close()
        self._checked = True

    # -- building requests ------------------------------------------------------------
    def digest(self, req: GenRequest) -> str:
        """A request's identity on this backend (also its batch custom_id)."""
        return action_key({"backend": self.identity(), "request": req.key_inputs()})

    def params(self, req: GenRequest, share: bool | Sequence[bool] = True) -> dict[str, Any]:
        """Messages API params for a request, laid out for prompt caching.

        Order: tools, then system blocks (the spec context; the stage's system text and fixed
        instructions), then the user turn (the subdomain's shared part; what varies). Up to
        three ``cache_control`` breakpoints end the context, the instructions and the shared
        part. ``share`` says per breakpoint (one bool: for all) whether another request reads
        that prefix: a prefix no other request reads costs 1.25x input to write and saves
        nothing. A breakpoint is set only where the prefix reaches the model's cacheable minimum.
        """
        shares = tuple(share) if isinstance(share, Sequence) else (share,) * 3
        system: list[dict[str, Any]] = []
        if self.uses_tool_set(req):
            tools = _structured.tool_set_params(req.shared_schemas, req.stage if req.schema is not None else None)
        else:
            tools = _structured.tool_params(req.schema) if req.schema is not None else {}
        caching = self.config.prompt_caching
        minimum = min_cacheable_tokens(self.config.model)
        tokens = estimated_tokens(json.dumps(tools["tools"], sort_keys=True)) if tools.get("tools") else 0
        if req.context:
            block: dict[str, Any] = {"type": "text", "text": req.context}
            tokens += estimated_tokens(req.context)
            if shares[0] and caching and tokens >= minimum:
                block["cache_control"] = {"type": "ephemeral"}
                self._cached_prefixes.add(_prefix_id(req))
            system.append(block)
        if req.system_text:
            block = {"type": "text", "text": req.system_text}
            tokens += estimated_tokens(req.system_text)
            if req.instructions and shares[1] and caching and tokens >= minimum:
                block["cache_control"] = {"type": "ephemeral"}
                self._cached_prefixes.add(_level_ids(req)[1])
            system.append(block)
        content: Any = req.prompt
        if req.shared:
            shared: dict[str, Any] = {"type": "text", "text": req.shared}
            tokens += estimated_tokens(req.shared)
            if shares[2] and caching and tokens >= minimum:
                shared["cache_control"] = {"type": "ephemeral"}
                self._cached_prefixes.add(_level_ids(req)[2])
            content = [shared, {"type": "text", "text": req.prompt}]
        params: dict[str, Any] = {
            "model": self.config.model,
            "max_tokens": req.max_tokens,
            "messages": [{"role": "user", "content": content}],
        }
        if req.temperature != 1.0:  # 1.0 is the API default; newer models accept nothing else
            params["temperature"] = req.temperature
        if system:
            params["system"] = system
        params.update(tools)
        return params

    def shares(self, requests: Sequence[GenRequest]) -> dict[str, bool]:
        """Per cache prefix of these requests (``_level_ids``): whether it is worth marking.

        A prefix is worth its cache write when another of the requests reads it, an earlier
        run of this process marked it, or (the context prefix) it is a corpus's shared
        prefix that every later stage's calls will read.
        """
        per_prefix = collections.Counter(p for r in requests for p in set(_level_ids(r)))
        shared_tools = {_prefix_id(r) for r in requests if self.uses_tool_set(r)}
        return {p: n > 1 or p in self._cached_prefixes or p in shared_tools for p, n in per_prefix.items()}

    def simulate_usage(self, requests: Sequence[GenRequest], cache: set[str]) -> list[CacheSplit]:
        """How the API would split each request's input, sent in this order as one run.

        Builds the very params a run sends (marks included) and accounts them as the
        loopback server does (``msmbuild.generate.caching.split_input``); ``cache`` holds
        the prefixes written so far and grows. For ``msmbuild plan``.
        """
        share = self.shares(requests)
        out = []
        for req in requests:
            params = self.params(req, tuple(share[p] for p in _level_ids(req)))
            split = split_params(params, cache)
            cache.update(split.new_entries)
            out.append(split)
        return out

    def uses_tool_set(self, req: GenRequest) -> bool:
        """True when req is sent every stage's tool: it shares a prefix that can be cached.

        Below the cacheable minimum the other stages' tools would be paid as plain input
        on every call for nothing.
        """
        if not (_shares_tools(req) and self.config.prompt_caching):
            return False
        tools = _structured.tool_set_params(req.shared_schemas, None)["tools"]  # type: ignore[arg-type]
        return self.cacheable(req.context, tools)

    def tool_name(self, req: GenRequest) -> str:
        """The tool a structured request forces."""
        return _structured.tool_name(req.stage) if self.uses_tool_set(req) else _structured.TOOL_NAME

    def cacheable(self, context: str, tools: Any = None) -> bool:
        """True when tools + context reach the model's minimum cacheable prefix."""
        prefix = estimated_tokens(context)
        if tools:
            prefix += estimated_tokens(json.dumps(tools, sort_keys=True))
        return prefix >= min_cacheable_tokens(self.config.model)

    def _api_key(self) -> str:
        """The API key from the environment variable ``api_key_env`` names (read each time, kept nowhere)."""
        key = os.environ.get(self.config.api_key_env)
        if not key:
            raise BackendError(
                f"environment variable {self.config.api_key_env} is not set "
                f"(params.yaml: backends.anthropic.api_key_env names where the API key is read from)")
        return key

    def make_client(self) -> Any:
        """An AsyncAnthropic client for the current event loop; the SDK does no retries.

        The transport is ``http_client``: aiohttp (the SDK's DefaultAioHttpClient) spends
        far less CPU per request than httpx's connection pool at high concurrency.
        """
        import anthropic

        key = self._api_key()
        http_client = None
        if self.config.http_client == "aiohttp":
            try:
                http_client = anthropic.DefaultAioHttpClient(timeout=self.config.timeout_s)
            except (AttributeError, RuntimeError) as exc:
                raise BackendError(
                    f"params.yaml: backends.anthropic.http_client is 'aiohttp' but the SDK cannot use it "
                    f"({exc}); pip install 'anthropic[aiohttp]', or set http_client: httpx") from None
        return anthropic.AsyncAnthropic(api_key=key, base_url=self.base_url, max_retries=0,
                                        timeout=self.config.timeout_s, http_client=http_client)

    def limiter(self) -> SharedLimiter:
        """This process's limiter for this API endpoint."""
        return limiter_for(self.base_url, self.max_concurrency)

    def budget(self) -> RateBudget:
        """This process's rate budget for this API endpoint."""
        return budget_for(self.base_url)


class _Run:
    """One generate() call: its client, its requests grouped by digest, what is done."""

    def __init__(self, backend: AnthropicBackend, requests: Sequence[GenRequest], on_result: OnResult):
        self.b = backend
        self.cfg = backend.config
        self.on_result = on_result
        self.groups: dict[str, list[int]] = {}
        self.requests: dict[str, GenRequest] = {}
        for i, req in enumerate(requests):
            d = backend.digest(req)
            self.groups.setdefault(d, []).append(i)
            self.requests.setdefault(d, req)
        self.done: set[str] = set()
        self.errors: list[ItemError] = []
        # The first error that stops the whole run. Requests not yet sent are not sent;
        # the ones in flight are awaited and their answers handed on (they are paid for).
        self.stop: BaseException | None = None
        # mark a prefix when another request of this run shares it, an earlier run marked
        # it, or it is a corpus's shared prefix (every later stage's calls will read it)
        self.share = backend.shares(list(self.requests.values()))
        self.limiter = backend.limiter()
        self.budget = backend.budget()
        self.client: Any = None

    def marks(self, req: GenRequest) -> tuple[bool, ...]:
        """Whether each of req's cache prefixes is worth marking in this run."""
        return tuple(self.share[p] for p in _level_ids(req))

    # -- outcomes ---------------------------------------------------------------------
    def deliver(self, digest: str, result: GenResult) -> None:
        """Hand a result on (on the event loop: on_result only queues the store write)."""
        if digest in self.done:
            return
        self.done.add(digest)
        for i in self.groups[digest]:
            self.on_result(i, result)

    async def _durable(self) -> None:
        """Wait until every answer handed on so far is stored (when on_result can say)."""
        flush = getattr(self.on_result, "flush", None)
        if flush is not None:
            await asyncio.to_thread(flush)

    def fail(self, digest: str, message: str, stop_reason: str = "") -> None:
        if digest in self.done:
            return
        self.done.add(digest)
        req = self.requests[digest]
        for i in self.groups[digest]:
            self.errors.append(ItemError(i, f"anthropic {req.stage} request: {message}", stop_reason))

    # -- the whole run ------------------------------------------------------------------
    async def main(self) -> list[ItemError]:
        import anthropic

        self.anthropic = anthropic
        self.client = self.b.make_client()
        try:
            await self._run()
            if self.stop is not None:
                raise self.stop
        except BaseExceptionGroup as group:
            for kind in (BackendError, StoreError):  # a stop for everything, not one item
                if (first := _first_of(group, kind)) is not None:
                    raise first from None
            raise
        finally:
            await self.client.close()
        return self.errors

    async def _run(self) -> None:
        todo = [d for d in self.groups if d not in self.done]
        batch_cfg = self.cfg.batch
        resumable = self._resumable()
        if resumable or (batch_cfg.enabled and len(todo) >= batch_cfg.threshold):
            todo = await self._batches(todo, resumable)
        if todo:
            await self._messages(todo)

    # -- Messages -----------------------------------------------------------------------
    async def _messages(self, digests: list[str]) -> None:
        # Wave by wave, the first request of each marked prefix goes before the requests that
        # read it: the context's, then each stage's instructions', then each subdomain's
        # shared part's. A cache entry exists once its answer starts, so every later request
        # reads it instead of concurrent first requests each writing their own copy.
        sent: set[str] = set()
        written: set[str] = set()  # prefixes a request already sent writes
        for level in range(3):
            firsts: dict[str, str] = {}
            for d in digests:
                req = self.requests[d]
                if d in sent or not req.context:
                    continue
                prefix = _level_ids(req)[level]
                if prefix in firsts or prefix in written or not self._marked(req)[level]:
                    continue
                firsts[prefix] = d
            async with asyncio.TaskGroup() as tg:
                for d in firsts.values():
                    sent.add(d)
                    written.update(_level_ids(self.requests[d]))
                    tg.create_task(self._one(d, None))
        async with asyncio.TaskGroup() as tg:
            for d in digests:
                if d not in self.done:
                    tg.create_task(self._one(d, None))

    def _marked(self, req: GenRequest) -> tuple[bool, bool, bool]:
        """Which of req's breakpoints (context, instructions, shared part) this run marks."""
        return _mark_levels(req, _blocks(self.b.params(req, self.marks(req))))

    async def _one(self, digest: str, first: Any) -> None:
        """Answer one request (starting from a batch's message when given) or fail its item."""
        try:
            result = await self._complete(self.requests[digest], first)
        except _ItemFailure as exc:
            self.fail(digest, str(exc), exc.stop_reason)
        except _Stopped:
            return
        except Exception as exc:  # noqa: BLE001 - raised by main() once the requests in flight land
            if self.stop is None:
                self.stop = exc
        else:
            self.deliver(digest, result)

    async def _complete(self, req: GenRequest, first: Any) -> GenResult:
        """Call (or start from a batch answer), validate structured output, re-ask if needed."""
        start = time.perf_counter()
        params = self.b.params(req, self.marks(req))
        usage = Usage()
        cost = saving = 0.0
        reasks = 0
        in_batch = first is not None
        msg = first if first is not None else await self._create(params)
        while True:
            one = _add_usage(usage, msg.usage)
            cost += cost_usd(self.cfg.model, one, self.b.prices, batch=in_batch)
            saving += cache_saving_usd(self.cfg.model, one, self.b.prices, batch=in_batch)
            meta = {"stop_reason": msg.stop_reason, "reasks": reasks,
                    "wall_s": time.perf_counter() - start, "cache_saving_usd": saving}
            if msg.stop_reason == "max_tokens":  # a cut-off answer is never a result (docs/generate.md)
                raise _ItemFailure(f"the answer was cut off at max_tokens={params['max_tokens']} "
                                   f"(stop_reason max_tokens, {one.output_tokens} output tokens, "
                                   f"${cost:.4f}); not stored: a rerun asks again", "max_tokens")
            if req.schema is None:
                data, problem = None, None
                text = "".join(getattr(b, "text", "") for b in msg.content if b.type == "text")
            else:
                data, problem = _structured.extract(msg.content, req.schema, self.b.tool_name(req))
                text = json.dumps(data, ensure_ascii=False) if problem is None else ""
            if problem is None:
                return GenResult(text=text, data=data, usage=usage, cost_usd=cost, model=self.cfg.model,
                                 backend=self.b.name, batch=first is not None, meta=meta)
            if reasks >= self.cfg.max_reasks:
                raise _ItemFailure(f"structured answer still malformed after {reasks} re-asks: {problem}")
            reasks += 1
            params = {**params, "messages": params["messages"]
                      + _structured.reask_messages(msg.content, problem, self.b.tool_name(req))}
            in_batch = False
            msg = await self._create(params)

    async def _create(self, params: dict[str, Any]) -> Any:
        """One Messages call under the shared limiter, retried on errors that heal."""
        body = dict(params)
        # Sampling parameters left the SDK's typed signature; the API takes them in the body.
        extra = {k: body.pop(k) for k in _BODY_ONLY if k in body}

        async def call() -> tuple[Any, Any]:
            # The body is read inside the limited section: a slot is held until the
            # connection is free again, so connections in use never exceed the limit.
            raw = await self.client.messages.with_raw_response.create(**body, extra_body=extra or None)
            try:
                message = await raw.parse()
            except ValueError as exc:  # JSONDecodeError: a body cut off mid-JSON
                raise _Malformed(f"malformed JSON in a 200 answer ({exc})", raw.headers) from None
            if getattr(message, "usage", None) is None or not isinstance(getattr(message, "content", None), list):
                raise _Malformed("a 200 answer that is not a message (no usage or content)", raw.headers)
            return raw, message

        chars, prefix = _input_chars(params)
        cost = {"requests": 1.0, "output-tokens": float(params["max_tokens"]),
                "input-tokens": self.budget.input_tokens_for(
                    chars - (len(prefix) if prefix and self.budget.probably_cached(self.cfg.model, prefix) else 0))}
        _raw, message = await self._retrying(call, limited=True, cost=cost)
        self.budget.learn(self.cfg.model, prefix, chars, _input_tokens_seen(message.usage))
        return message

    async def _retrying(self, call: Callable[[], Any], limited: bool,
                        cost: dict[str, float] | None = None) -> Any:
        """Await call() with retries; honours retry-after and rate-limit headers.

        A limited call holds a concurrency slot and, when ``cost`` is given, waits for the
        rate budget to hold that cost before it is sent.
        """
        sdk = self.anthropic
        attempt = 0
        while True:
            taken: dict[str, float] = {}
            if limited and self.stop is not None:
                raise _Stopped
            if limited:
                await self.limiter.acquire()
                if cost is not None:
                    try:
                        taken = await self.budget.reserve(cost)
                    except BaseException:
                        self.limiter.release()
                        raise
                if self.stop is not None:  # it came while this request waited for a slot
                    if cost is not None:
                        self.budget.refund(taken)
                    self.limiter.release()
                    raise _Stopped
            try:
                response = await call()
            except sdk.APIStatusError as exc:
                headers = exc.response.headers
                # First, before anything can raise. A 429 was not admitted, so it cost nothing;
                # other errors keep their reservation (whether they were charged is not said).
                used = dict.fromkeys(taken, 0.0) if exc.status_code == 429 else {}
                tracked = self.budget.settle(taken, used, headers) if cost is not None else set()
                status = exc.status_code
                text = _error_text(exc)
                if status in _FATAL_STATUSES or any(p in text.lower() for p in _FATAL_PHRASES):
                    raise BackendError(f"anthropic API refused the request ({text}); nothing more was sent") from None
                if status == 400 and "temperature" in text.lower():
                    raise BackendError(
                        f"anthropic API rejects the temperature for model {self.cfg.model} ({text}); "
                        f"set backends.anthropic.temperature: 1.0 in params.yaml") from None
                if status not in _RETRY_STATUSES and status < 500:
                    raise _ItemFailure(text) from None
                delay = _retry_after(headers)
                if delay is None:
                    delay = _backoff(attempt)
                if status == 429 and not (cost is not None and self.budget.explains(cost)):
                    # A limit the budget does not mirror: hold every new request back.
                    self.limiter.pause(max(delay, pause_from_headers(headers, tracked)))
                last = text
            except sdk.APIConnectionError as exc:
                if cost is not None:
                    self.budget.refund(taken)
                delay = _backoff(attempt)
                last = f"{type(exc).__name__}: {exc}"
            except _Malformed as exc:  # answered, so probably charged: like a dropped connection otherwise
                if cost is not None:
                    self.budget.settle(taken, {}, exc.headers)
                delay = _backoff(attempt)
                last = str(exc)
            except BaseException:
                if cost is not None:
                    self.budget.refund(taken)
                raise
            else:
                head, message = response if isinstance(response, tuple) else (response, None)
                headers = getattr(head, "headers", None)
                tracked: set[str] = set()
                if cost is not None:
                    used = rate_use(message.usage) if message is not None else {}
                    tracked = self.budget.settle(taken, used, headers)
                if headers is not None and (wait := pause_from_headers(headers, tracked)) > 0:
                    self.limiter.pause(wait)
                return response
            finally:
                if limited:
                    self.limiter.release()
            attempt += 1
            if attempt > self.cfg.max_retries:
                raise _ItemFailure(f"gave up after {self.cfg.max_retries} retries; last error: {last}")
            log.debug("anthropic: retry %d in %.2fs after %s", attempt, delay, last)
            await asyncio.sleep(delay)

    # -- Message Batches ------------------------------------------------------------------
    def _resumable(self) -> list[tuple[PendingBatch, dict[str, str]]]:
        """Recorded batches holding some of this run's requests, with those items."""
        found = []
        for entry in self.b.ledger.pending():
            mine = {cid: d for cid, d in entry.items.items() if d in self.groups and d not in self.done}
            if mine:
                found.append((entry, mine))
        return found

    async def _batches(self, todo: list[str], resumable: list[tuple[PendingBatch, dict[str, str]]]) -> list[str]:
        """Run todo through batches (collecting recorded ones first); return what needs Messages."""
        fallback: list[str] = []
        submissions: dict[str, int] = {}
        claimed = {d for _, mine in resumable for d in mine.values()}
        fresh = [d for d in todo if d not in claimed]
        async with asyncio.TaskGroup() as tg:
            for entry, mine in resumable:
                log.info("anthropic: collecting batch %s from an earlier run (%d items)", entry.batch_id, len(mine))
                tg.create_task(self._collect(tg, entry, mine, submissions, fallback))
            size = self.cfg.batch.chunk_size
            for start in range(0, len(fresh), size):
                tg.create_task(self._submit(tg, fresh[start:start + size], submissions, fallback))
        return [d for d in fallback if d not in self.done]

    async def _submit(self, tg: asyncio.TaskGroup, digests: list[str], submissions: dict[str, int],
                      fallback: list[str]) -> None:
        items = {d: d for d in digests}  # custom_id = digest (32 hex characters)
        reqs = [{"custom_id": d, "params": self.b.params(self.requests[d], self.marks(self.requests[d]))}
                for d in digests]
        try:
            batch = await self._retrying(lambda: self.client.messages.batches.create(requests=reqs),
                                         limited=False)
        except _ItemFailure as exc:
            log.warning("anthropic: batch submission failed (%s); %d requests go to Messages", exc, len(digests))
            fallback.extend(digests)
            return
        entry = self.b.ledger.record(batch.id, items)
        for d in digests:
            submissions[d] = submissions.get(d, 0) + 1
        log.info("anthropic: submitted batch %s (%d requests)", batch.id, len(digests))
        await self._collect(tg, entry, items, submissions, fallback)

    async def _collect(self, tg: asyncio.TaskGroup, entry: PendingBatch, mine: dict[str, str],
                       submissions: dict[str, int], fallback: list[str]) -> None:
        """Poll until the batch ends (or times out), then stream and hand on its results."""
        try:
            await self._collect_batch(tg, entry, mine, submissions, fallback)
        except _ItemFailure as exc:
            log.warning("anthropic: batch %s cannot be collected (%s); its items go to Messages",
                        entry.batch_id, exc)
            self.b.ledger.forget(entry.batch_id)
            fallback.extend(d for d in mine.values() if d not in self.done)

    async def _collect_batch(self, tg: asyncio.TaskGroup, entry: PendingBatch, mine: dict[str, str],
                             submissions: dict[str, int], fallback: list[str]) -> None:
        cfg = self.cfg.batch
        deadline = entry.submitted + cfg.timeout_s
        interval = cfg.poll_initial_s
        while True:
            batch = await self._retrying(lambda: self.client.messages.batches.retrieve(entry.batch_id),
                                         limited=False)
            status_line(_batch_status(batch, time.time() - entry.submitted))
            if batch.processing_status == "ended":
                break
            if time.time() >= deadline:
                log.warning("anthropic: batch %s passed batch.timeout_s; its unfinished items go to Messages",
                            entry.batch_id)
                try:
                    await self.client.messages.batches.cancel(entry.batch_id)
                except self.anthropic.APIError as exc:
                    log.warning("anthropic: could not cancel batch %s: %s", entry.batch_id, exc)
                self.b.ledger.forget(entry.batch_id)
                fallback.extend(d for d in mine.values() if d not in self.done)
                return
            await asyncio.sleep(min(interval, max(0.0, deadline - time.time())))
            interval = min(interval * 2, cfg.poll_max_s)
        again: list[str] = []
        decoder = await self._retrying(lambda: self.client.messages.batches.results(entry.batch_id),
                                       limited=False)
        async for line in decoder:
            d = mine.get(line.custom_id)
            if d is None or d in self.done:
                continue
            result = line.result
            if result.type == "succeeded":
                if self.requests[d].schema is None:
                    await self._one(d, result.message)  # a cut-off answer fails its item only
                else:  # may need re-asks through Messages: do not hold up the stream
                    tg.create_task(self._one(d, result.message))
            elif result.type == "errored" and getattr(result.error.error, "type", "") == "invalid_request_error":
                self.fail(d, f"batch {entry.batch_id}: invalid_request_error: {result.error.error.message}")
            else:
                again.append(d)
        await self._durable()  # forget the batch only once its answers are on disk
        self.b.ledger.forget(entry.batch_id)
        retry = [d for d in again if submissions.get(d, 1) <= cfg.max_resubmits]
        fallback.extend(d for d in again if submissions.get(d, 1) > cfg.max_resubmits)
        if retry:
            log.info("anthropic: resubmitting %d errored/expired items of batch %s", len(retry), entry.batch_id)
            tg.create_task(self._submit(tg, retry, submissions, fallback))


def _input_chars(params: dict[str, Any]) -> tuple[int, str | None]:
    """(characters of a request's input, its cacheable prefix or None).

    The prefix is what the API caches: the tools (every stage's tool when a corpus shares
    one prefix), then the system blocks and the user turn's blocks up to the last one
    marked with ``cache_control``.
    """
    tools = str(params["tools"]) if params.get("tools") else ""
    chars = len(tools)
    prefix = None
    text = tools
    for block in input_blocks(params):
        part = str(block.get("text", ""))
        chars += len(part)
        text += part
        if block.get("cache_control"):
            prefix = text
    return chars, prefix


def _input_tokens_seen(usage: Any) -> tuple[int, int]:
    """(all input tokens of an answer, of which written to or read from the prompt cache)."""
    cached = (getattr(usage, "cache_creation_input_tokens", 0) or 0) + (getattr(usage, "cache_read_input_tokens", 0) or 0)
    return (usage.input_tokens or 0) + cached, cached


def rate_use(usage: Any) -> dict[str, float]:
    """What a Messages answer's usage counts against the rate limits."""
    return {"requests": 1.0,
            "input-tokens": float((usage.input_tokens or 0) + (getattr(usage, "cache_creation_input_tokens", 0) or 0)),
            "output-tokens": float(usage.output_tokens or 0)}


def _level_ids(req: GenRequest) -> tuple[str, str, str]:
    """Ids of a request's three cache prefixes: context (+ tools), + instructions, + shared part."""
    first = _prefix_id(req)
    second = action_key({"prefix": first, "system": req.system_text}) if req.instructions else first + ":i"
    third = action_key({"prefix": second, "shared": req.shared}) if req.shared else second + ":s"
    return first, second, third


def _blocks(params: dict[str, Any]) -> list[tuple[str, bool]]:
    """The system blocks then the user turn's blocks of params: (text, carries a cache mark)."""
    return [(str(b.get("text", "")), bool(b.get("cache_control"))) for b in input_blocks(params)]


def _mark_levels(req: GenRequest, blocks: list[tuple[str, bool]]) -> tuple[bool, bool, bool]:
    """Which of req's breakpoints (context, instructions, shared part) params marked."""
    marks = iter(blocks)
    context = next(marks)[1] if req.context else False
    system = next(marks)[1] if req.system_text else False
    shared = next(marks)[1] if req.shared else False
    return context, system and bool(req.instructions), shared


def split_params(params: dict[str, Any], cache: set[str]) -> CacheSplit:
    """How the API splits params' input into plain, cache-write and cache-read tokens."""
    tools = json.dumps(params["tools"], sort_keys=True) if params.get("tools") else ""
    return split_input(str(params.get("model")), tools, _blocks(params), cache)


def _prefix_id(req: GenRequest) -> str:
    """What decides a request's cache prefix: its context and its tools."""
    if _shares_tools(req):
        return action_key({"context": req.context, "tools": req.shared_schemas})
    return action_key({"context": req.context, "schema": req.schema})


def _shares_tools(req: GenRequest) -> bool:
    """True when the request is sent every stage's tool (one cache prefix for all stages)."""
    return bool(req.shared_schemas and req.context
                and (req.schema is None or req.stage in req.shared_schemas))


def _retry_after(headers: Any) -> float | None:
    """Seconds from retry-after-ms or retry-after (seconds), or None."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None


def _backoff(attempt: int) -> float:
    """Exponential backoff with jitter: 0.5 s, 1 s, 2 s ... up to a minute."""
    return min(RETRY_INITIAL_S * 2 ** attempt, RETRY_MAX_S) * (0.75 + 0.25 * random.random())


def _first_of(group: BaseExceptionGroup, kind: type[BaseException]) -> BaseException | None:
    """The first exception of kind inside a (nested) exception group."""
    for exc in group.exceptions:
        if isinstance(exc, kind):
            return exc
        if isinstance(exc, BaseExceptionGroup) and (inner := _first_of(exc, kind)) is not None:
            return inner
    return None

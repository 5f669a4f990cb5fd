"""One concurrency budget and one rate budget per API endpoint, shared by the process.

``SharedLimiter`` counts requests in flight across threads and event loops and holds new
ones back while the API asks us to wait. ``RateBudget`` mirrors the API's per-minute
token buckets (requests, input and output tokens): a request reserves its up-front cost
and waits until every bucket holds it; the answer settles it (docs/generate.md, "Rate limits").
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Collection, Mapping
from datetime import datetime

import xxhash

__all__ = ["RATE_KINDS", "RateBudget", "SharedLimiter", "budget_for", "limiter_for", "pause_from_headers"]

_RATELIMIT_KINDS = ("requests", "tokens", "input-tokens", "output-tokens")
RATE_KINDS = ("requests", "input-tokens", "output-tokens")  # the buckets a RateBudget mirrors
CACHE_FRESH_S = 240.0  # a prompt-cache entry lives 5 minutes from its last use; stay inside that


class SharedLimiter:
    """At most ``size`` holders at once, first come first served, across threads and loops."""

    def __init__(self, size: int):
        self._lock = threading.Lock()
        self._size = size
        self._used = 0
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()
        self._paused_until = 0.0

    @property
    def size(self) -> int:
        """The number of slots."""
        return self._size

    @property
    def in_use(self) -> int:
        """Slots held right now."""
        return self._used

    def resize(self, size: int) -> None:
        """Change the number of slots (the latest backend's max_concurrency wins)."""
        with self._lock:
            self._size = size
            while self._waiters and self._used < self._size:
                self._used += 1
                self._hand_over()

    def pause(self, seconds: float) -> None:
        """Hold back every new request for the next `seconds`."""
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def acquire(self) -> None:
        """Wait for a slot (and for any pause to end)."""
        while (wait := self._paused_until - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._used < self._size and not self._waiters:
                self._used += 1
                return
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, future))
        try:
            await future
        except asyncio.CancelledError:
            # ValueError: a slot is on its way to the cancelled future; _wake passes it on
            with self._lock, contextlib.suppress(ValueError):
                self._waiters.remove((loop, future))
            raise

    def release(self) -> None:
        """Give a slot back; the longest waiter gets it."""
        with self._lock:
            if self._waiters:
                self._hand_over()
            else:
                self._used -= 1

    def _hand_over(self) -> None:
        """Pass one held slot to the first waiter (lock held)."""
        loop, future = self._waiters.popleft()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.call_soon(self._wake, future)
        elif loop.is_closed():
            self._used -= 1
        else:
            loop.call_soon_threadsafe(self._wake, future)

    def _wake(self, future: asyncio.Future[None]) -> None:
        if future.done():  # cancelled while the slot was in transit
            self.release()
        else:
            future.set_result(None)

    async def __aenter__(self) -> SharedLimiter:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class _Bucket:
    """One of the API's token buckets as we believe it stands."""

    __slots__ = ("level", "limit", "stamp")

    def __init__(self, limit: float, level: float, now: float):
        self.limit = limit
        self.level = level
        self.stamp = now

    def refill(self, now: float) -> None:
        self.level = min(self.limit, self.level + (now - self.stamp) * self.limit / 60.0)
        self.stamp = now

    def seconds_until(self, amount: float) -> float:
        return max(0.0, min(amount, self.limit) - self.level) * 60.0 / self.limit


class RateBudget:
    """The API's per-minute token buckets, learned from its headers; see the module docstring.

    ``reserve(cost)`` waits until the cost fits and returns what was taken; ``settle(taken,
    used, headers)`` replaces the estimate by the actual use; ``refund(taken)`` gives back a
    reservation the API never charged (a 429, a failed connection).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}
        self._gate = SharedLimiter(1)  # one waiter at a time watches the clock, the rest queue
        self._queued = 0
        self._wake: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None
        self._heard = False  # has any answer come back (with or without rate-limit headers)?
        self._probing = False  # is the first request, sent to find the limits out, in flight?
        self._tokens_per_char = 0.3  # learned from answers; English runs 0.25-0.3 tokens a character
        self._cached: dict[int, float] = {}  # cacheable prefix -> when an answer last touched it

    # -- estimating what a request will be charged ----------------------------------------
    def input_tokens_for(self, chars: int) -> float:
        """Input tokens of chars characters, at the ratio answers have shown so far (+5%)."""
        return chars * self._tokens_per_char * 1.05

    def probably_cached(self, model: str, prefix: str) -> bool:
        """Whether a cacheable prefix was written or read by an answer in the last 4 minutes
        (the cache lives 5), so that the API will count it as a cache read, not as input."""
        seen = self._cached.get(xxhash.xxh3_64_intdigest(f"{model}\0{prefix}".encode()))
        return seen is not None and time.monotonic() - seen < CACHE_FRESH_S

    def learn(self, model: str, prefix: str | None, chars: int, seen: tuple[int, int]) -> None:
        """Update the token/character ratio and the cached prefixes from an answer's usage."""
        tokens, cached = seen
        with self._lock:
            if chars > 0 and tokens > 0:
                self._tokens_per_char += 0.2 * (tokens / chars - self._tokens_per_char)
            if prefix and cached:
                self._cached[xxhash.xxh3_64_intdigest(f"{model}\0{prefix}".encode())] = time.monotonic()

    def explains(self, cost: Mapping[str, float]) -> bool:
        """Whether some mirrored bucket is too low for cost right now (a 429 we understand)."""
        with self._lock:
            return bool(self._buckets) and self._wait_for(cost) > 0

    @property
    def limits(self) -> dict[str, float]:
        """Per-minute limits learned so far, by kind."""
        with self._lock:
            return {kind: b.limit for kind, b in self._buckets.items()}

    def remaining(self) -> dict[str, float]:
        """What each bucket holds now (after refilling)."""
        now = time.monotonic()
        with self._lock:
            for b in self._buckets.values():
                b.refill(now)
            return {kind: b.level for kind, b in self._buckets.items()}

    async def reserve(self, cost: Mapping[str, float]) -> dict[str, float]:
        """Wait until every known bucket holds cost, take it, and return what was taken.

        Until an answer has said what the limits are, one request goes at a time: the
        first one finds them out (it is sent, unpaced, as the probe).
        """
        with self._lock:
            if self._queued == 0 and (taken := self._try_take(cost)) is not None:
                return taken
            self._queued += 1
        try:
            async with self._gate:
                loop = asyncio.get_running_loop()
                while True:
                    with self._lock:
                        if (taken := self._try_take(cost)) is not None:
                            return taken
                        wait = self._wait_for(cost) if self._heard else None
                        wake: asyncio.Future[None] = loop.create_future()
                        self._wake = (loop, wake)
                    # Sleep until the bucket refills, or until an answer gives tokens back.
                    await asyncio.wait([wake], timeout=wait)
                    with self._lock:
                        if self._wake is not None and self._wake[1] is wake:
                            self._wake = None
        finally:
            with self._lock:
                self._queued -= 1

    def _try_take(self, cost: Mapping[str, float]) -> dict[str, float] | None:
        """Take cost if it fits now (or send the probe); None: wait (lock held)."""
        if not self._heard:
            if self._probing:
                return None
            self._probing = True
            return {}
        if not self._buckets:
            return {}
        return self._take(cost) if self._wait_for(cost) == 0 else None

    def refund(self, taken: Mapping[str, float]) -> None:
        """Give back a reservation the API did not charge (no answer: the probe goes again)."""
        self.settle(taken, {kind: 0.0 for kind in taken}, None)

    def settle(self, taken: Mapping[str, float], used: Mapping[str, float],
               headers: Mapping[str, str] | None) -> set[str]:
        """Replace a reservation by the use, then learn from headers; returns the kinds tracked."""
        now = time.monotonic()
        with self._lock:
            for kind, amount in taken.items():
                bucket = self._buckets.get(kind)
                if bucket is not None:
                    bucket.refill(now)
                    bucket.level = min(bucket.limit, bucket.level + amount - used.get(kind, amount))
            if headers is not None:
                self._observe(headers, now)
                self._heard = True
            self._probing = False
            if self._wake is not None:
                loop, wake = self._wake
                self._wake = None
                if not loop.is_closed():
                    loop.call_soon_threadsafe(_set_done, wake)
            return set(self._buckets)

    def _observe(self, headers: Mapping[str, str], now: float) -> None:
        """Learn limits; never believe we hold more than the API says is left (lock held).

        A kind the headers stop naming, while they name another, is no longer limited."""
        named = []
        for kind in RATE_KINDS:
            limit = _number(headers.get(f"anthropic-ratelimit-{kind}-limit"))
            remaining = _number(headers.get(f"anthropic-ratelimit-{kind}-remaining"))
            if limit is None or limit <= 0 or remaining is None:
                continue
            named.append(kind)
            bucket = self._buckets.get(kind)
            if bucket is None:
                self._buckets[kind] = _Bucket(limit, min(remaining, limit), now)
                continue
            bucket.refill(now)
            bucket.limit = limit
            bucket.level = min(bucket.level, remaining, limit)
        if named:
            for kind in set(self._buckets) - set(named):
                del self._buckets[kind]

    def _wait_for(self, cost: Mapping[str, float]) -> float:
        """Seconds until every bucket holds cost (lock held; refills first)."""
        now = time.monotonic()
        wait = 0.0
        for kind, bucket in self._buckets.items():
            bucket.refill(now)
            wait = max(wait, bucket.seconds_until(cost.get(kind, 0.0)))
        return wait

    def _take(self, cost: Mapping[str, float]) -> dict[str, float]:
        taken = {kind: cost.get(kind, 0.0) for kind in self._buckets}
        for kind, amount in taken.items():
            self._buckets[kind].level -= amount
        return taken


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


_LIMITERS: dict[str, SharedLimiter] = {}
_BUDGETS: dict[str, RateBudget] = {}
_LIMITERS_LOCK = threading.Lock()


def budget_for(base_url: str) -> RateBudget:
    """The process-wide rate budget of an API endpoint."""
    with _LIMITERS_LOCK:
        return _BUDGETS.setdefault(base_url, RateBudget())


def limiter_for(base_url: str, size: int) -> SharedLimiter:
    """The process-wide limiter of an API endpoint, sized to `size`."""
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.setdefault(base_url, SharedLimiter(size))
        if limiter.size != size:
            limiter.resize(size)
        return limiter


def _seconds_until(stamp: str) -> float:
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return 1.0
    return max(0.0, when.timestamp() - time.time())


def pause_from_headers(headers: Mapping[str, str], tracked: Collection[str] = ()) -> float:
    """Seconds to hold back new requests, from ``anthropic-ratelimit-*`` headers (0: none).

    A kind whose ``-remaining`` is 0 is exhausted until its ``-reset`` time (RFC 3339),
    unless a RateBudget tracks it (``tracked``; "tokens" counts as tracked when both token
    kinds are): the budget then paces exactly, where waiting for ``-reset`` (the time the
    bucket is *full* again) would idle for up to a minute.
    """
    raw = getattr(headers, "raw", None)  # httpx.Headers: one pass over the bytes first
    if raw is not None and not any(value == b"0" for _name, value in raw):
        return 0.0  # nothing exhausted: the common case, on every response
    skip = set(tracked)
    if {"input-tokens", "output-tokens"} <= skip:
        skip.add("tokens")
    wait = 0.0
    for kind in _RATELIMIT_KINDS:
        if kind not in skip and headers.get(f"anthropic-ratelimit-{kind}-remaining") == "0":
            reset = headers.get(f"anthropic-ratelimit-{kind}-reset")
            wait = max(wait, _seconds_until(reset) if reset else 1.0)
    return wait

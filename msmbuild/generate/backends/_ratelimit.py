"""One concurrency budget per API endpoint, shared by everything in the process.

A ``SharedLimiter`` counts requests in flight across threads and event loops (every
``generate`` call runs its own loop, and a process may run several at once), and holds
every new request back while the API has asked us to wait (a 429's ``retry-after``, or an
``anthropic-ratelimit-*-remaining: 0`` header with its reset time).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Mapping
from datetime import datetime

__all__ = ["SharedLimiter", "limiter_for", "pause_from_headers"]

_RATELIMIT_KINDS = ("requests", "tokens", "input-tokens", "output-tokens")


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
            with self._lock:
                try:
                    self._waiters.remove((loop, future))
                except ValueError:
                    pass  # a slot is on its way to the cancelled future; _wake passes it on
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


_LIMITERS: dict[str, SharedLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def limiter_for(base_url: str, size: int) -> SharedLimiter:
    """The process-wide limiter of an API endpoint, sized to `size`."""
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get(base_url)
        if limiter is None:
            limiter = _LIMITERS[base_url] = SharedLimiter(size)
        elif limiter.size != size:
            limiter.resize(size)
        return limiter


def _seconds_until(stamp: str) -> float:
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return 1.0
    return max(0.0, when.timestamp() - time.time())


def pause_from_headers(headers: Mapping[str, str]) -> float:
    """Seconds to hold back new requests, from ``anthropic-ratelimit-*`` headers (0: none).

    A kind whose ``-remaining`` is 0 is exhausted until its ``-reset`` time (RFC 3339).
    """
    raw = getattr(headers, "raw", None)  # httpx.Headers: one pass over the bytes first
    if raw is not None and not any(value == b"0" for _name, value in raw):
        return 0.0  # nothing exhausted: the common case, on every response
    wait = 0.0
    for kind in _RATELIMIT_KINDS:
        if headers.get(f"anthropic-ratelimit-{kind}-remaining") == "0":
            reset = headers.get(f"anthropic-ratelimit-{kind}-reset")
            wait = max(wait, _seconds_until(reset) if reset else 1.0)
    return wait

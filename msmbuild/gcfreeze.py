"""Keep the garbage collector off the long-lived heap during a hot loop.

A process that has imported the SDK, pydantic and friends holds a few hundred thousand
tracked objects that will never be garbage. Bulk generation allocates many short-lived
containers per request, which triggers full collections that walk that whole heap again
and again (about half of msmbuild's own per-request CPU at 128 requests in flight).
``frozen_heap()`` moves everything alive on entry into the permanent generation
(``gc.freeze``), so collections inside the block only walk what the block allocated, and
puts it back (``gc.unfreeze``) when the last concurrent user leaves.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["frozen_heap"]

_lock = threading.Lock()
_users = 0


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Freeze the current heap for the duration of the block (nestable, thread-safe)."""
    global _users
    with _lock:
        _users += 1
        gc.freeze()  # also freezes what earlier concurrent users allocated since: harmless
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                gc.unfreeze()

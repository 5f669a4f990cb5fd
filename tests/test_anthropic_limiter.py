"""The process-wide limiter: one budget across threads and event loops, FIFO hand-over,
no slot lost to a cancelled waiter, pauses hold back new requests."""

from __future__ import annotations

import asyncio
import threading

from msmbuild.generate.backends._ratelimit import SharedLimiter


def test_budget_shared_across_threads_and_loops():
    limiter = SharedLimiter(3)
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    async def worker(n: int) -> None:
        async def one() -> None:
            async with limiter:
                with lock:
                    state["now"] += 1
                    state["max"] = max(state["max"], state["now"])
                await asyncio.sleep(0.002)
                with lock:
                    state["now"] -= 1

        await asyncio.gather(*(one() for _ in range(n)))

    threads = [threading.Thread(target=asyncio.run, args=(worker(30),)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state["max"] == 3 and limiter.in_use == 0


def test_cancelled_waiter_does_not_leak_a_slot():
    async def main() -> None:
        limiter = SharedLimiter(1)
        await limiter.acquire()
        waiter = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0)
        limiter.release()  # the slot is handed to the waiter...
        waiter.cancel()  # ...which is cancelled before it runs
        await asyncio.gather(waiter, return_exceptions=True)
        await asyncio.sleep(0)
        assert limiter.in_use == 0
        await asyncio.wait_for(limiter.acquire(), 1.0)
        limiter.release()

    asyncio.run(main())


def test_pause_holds_back_new_acquires():
    async def main() -> list[str]:
        limiter = SharedLimiter(5)
        order: list[str] = []
        limiter.pause(0.05)

        async def ticker() -> None:
            order.append("tick")

        async def acquirer() -> None:
            await limiter.acquire()
            order.append("acquired")
            limiter.release()

        task = asyncio.create_task(acquirer())
        await asyncio.sleep(0.01)
        await ticker()  # runs while the acquirer is still paused
        await task
        return order

    assert asyncio.run(main()) == ["tick", "acquired"]


def test_resize_wakes_waiters():
    async def main() -> None:
        limiter = SharedLimiter(1)
        await limiter.acquire()
        waiter = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0)
        limiter.resize(2)
        await asyncio.wait_for(waiter, 1.0)
        assert limiter.in_use == 2

    asyncio.run(main())

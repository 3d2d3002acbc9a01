"""Store.call: the deadline of a store call counts from when it runs."""

from __future__ import annotations


def test_a_store_call_is_timed_from_when_it_runs_not_while_it_queues() -> None:
    """A busy gateway queueing its store calls is not a store that is down."""
    import asyncio
    import time

    import sqlalchemy as sa

    from gateway.cache.store import Store
    from gateway.errors import StoreTimeout

    store = Store(sa.create_engine("sqlite://"))
    store._threads._max_workers = 1  # one thread: the second call queues behind the first

    async def scenario() -> None:
        slow = asyncio.ensure_future(store.call(5, time.sleep, 0.1))
        await asyncio.sleep(0.03)
        assert await store.call(0.1, lambda: "fast") == "fast"  # queued ~0.07 s + ran ~0: ok
        await slow
        slow = asyncio.ensure_future(store.call(5, time.sleep, 0.17))
        await asyncio.sleep(0.02)
        # queued ~0.15 s (within its allowance of 0.2), then ran 0.1 s (within its 0.2):
        # 0.25 s in all, past a deadline counted from the call, yet no timeout
        assert await store.call(0.2, lambda: time.sleep(0.1) or "done") == "done"
        await slow
        try:
            await store.call(0.1, time.sleep, 0.5)
        except StoreTimeout as exc:
            assert "longer than 0.1s" in str(exc)
        else:
            raise AssertionError("a call running past its deadline must time out")
        blocker = asyncio.ensure_future(store.call(5, time.sleep, 1.5))
        await asyncio.sleep(0.05)
        try:  # no thread frees up within the queue allowance (as long as the deadline)
            await store.call(0.1, lambda: "never")
        except StoreTimeout as exc:
            assert "no free store thread" in str(exc)
        else:
            raise AssertionError("a call that never gets a thread must time out")
        await blocker

    try:
        asyncio.run(scenario())
    finally:
        store.dispose()


def test_slow_calls_between_successes_never_open_the_breaker() -> None:
    """A few lookups past their deadline on a saturated machine, among hundreds answered in
    time, are load, not an outage: the breaker opens only on TIMEOUTS of them in a row. (It
    counted them regardless of the successes between: on a 16-core host at 3,000 requests/s it
    turned caching off for 5 s at a time.) A store error that is no timeout opens it at once."""
    from gateway.cache.breaker import StoreBreaker
    from gateway.errors import StoreError, StoreTimeout
    from gateway.metrics import Metrics

    breaker = StoreBreaker(60.0, Metrics())
    slow = StoreTimeout("_find took longer than 0.2s")
    for _ in range(10):
        breaker.failed("read", slow)
        breaker.failed("read", slow)
        breaker.succeeded()
    assert breaker.closed
    for _ in range(StoreBreaker.TIMEOUTS):
        breaker.failed("read", slow)
    assert not breaker.closed
    breaker.reset()
    assert breaker.closed
    breaker.failed("read", StoreError("connection refused", unavailable=True))
    assert not breaker.closed


def test_slow_calls_in_a_row_open_the_breaker_only_if_the_store_fails_its_health_check() -> None:
    """Timeouts in a row on a saturated machine come all at once (every store thread waiting
    for the GIL), yet the store is up: a health check decides. A store that fails it (down,
    hung) opens the breaker; one that answers leaves caching on."""
    import asyncio

    from gateway.cache.breaker import StoreBreaker
    from gateway.errors import StoreError, StoreTimeout
    from gateway.metrics import Metrics

    async def scenario(store_up: bool) -> bool:
        checks: list[int] = []

        async def probe() -> None:
            checks.append(1)
            await asyncio.sleep(0.01)
            if not store_up:
                raise StoreError("ping took longer than 2s", unavailable=True)

        breaker = StoreBreaker(60.0, Metrics(), probe=probe)
        for _ in range(StoreBreaker.TIMEOUTS * 2):  # one check at a time, however many come
            breaker.failed("read", StoreTimeout("_find took longer than 0.2s"))
        assert breaker.closed  # while the check runs, requests go on (each within its bound)
        await asyncio.sleep(0.05)
        assert len(checks) == 1
        await breaker.aclose()
        return breaker.closed

    assert asyncio.run(scenario(store_up=True)) is True
    assert asyncio.run(scenario(store_up=False)) is False

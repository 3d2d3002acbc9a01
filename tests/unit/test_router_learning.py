"""The router learns from what the engine reports (issue 19): measured reuse is exported, and a
registry that predicted reuse the engine did not deliver shrinks, then grows back."""

from __future__ import annotations

from gateway.backend.chunks import make_chunk
from gateway.backend.routing import Router
from gateway.config import Backend, Settings
from gateway.metrics import Metrics


def _router() -> tuple[Router, Metrics]:
    metrics = Metrics()
    settings = Settings(backends=[Backend(url="http://a:1/v1", name="a", kv_capacity_tokens=10_000),
                                  Backend(url="http://b:1/v1", name="b")])
    return Router(settings, metrics), metrics


def test_measured_reuse_is_exported_per_backend() -> None:
    router, metrics = _router()
    a = router.backends[0]
    router.observed(a, 0.0, computed=300, cached=100)
    router.observed(a, 0.0, computed=100, cached=300)
    gauge = metrics.backend_measured_reuse.labels("a", "engine_timings")._value.get()
    assert gauge == 0.5
    assert metrics.backend_engine_tokens.labels("a", "cached")._value.get() == 400


def test_a_prediction_the_engine_did_not_deliver_shrinks_the_registry() -> None:
    router, _ = _router()
    a = router.backends[0]
    chunks = [make_chunk(f"passage {i} " * 100) for i in range(8)]  # 8 x ~300 tokens
    predicted = router.assign(a, chunks)
    assert predicted == 0.0 and a.held_tokens(chunks) == a.registry_tokens > 1900
    assert router.assign(a, chunks) == 1.0  # the registry believes all of it is there
    router.observed(a, 1.0, computed=2400, cached=0)  # the engine had evicted everything
    assert a.registry_tokens <= a.capacity < 1900
    assert a.held_tokens(chunks) < sum(c.tokens for c in chunks)
    shrunk = a.capacity
    router.observed(a, 0.5, computed=10, cached=990)  # now it delivers: capacity grows back
    assert a.capacity > shrunk and a.capacity <= a.cfg.kv_capacity_tokens

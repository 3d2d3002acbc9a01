"""Chunk affinity for a prefix cache (issue 19): with ``canonical-order`` the engine reuses a
chunk's KV only after the same chunks before it, so a backend that saw a request's chunks in
*other* sets does not hold them. Measured on the H200 (docs/BENCHMARKS.md): passage sets that
share passages were sent where their passages were, not their prefix, and prefilled cold on
several replicas."""

from __future__ import annotations

from gateway.backend.chunks import Chunk, make_chunk
from gateway.backend.routing import Router
from gateway.config import Backend, Settings
from gateway.metrics import Metrics


def _chunks(n: int) -> list[Chunk]:
    """``n`` passages of the same size, sorted as the canonical order sorts them (by digest)."""
    return sorted((make_chunk(f"passage {i}: " + "words " * 80) for i in range(n)),
                  key=lambda c: c.digest)


def _router(fmt: str) -> Router:
    return Router(Settings(backends=[Backend(url="http://a:1/v1", name="a", chunk_format=fmt),
                                     Backend(url="http://b:1/v1", name="b", chunk_format=fmt)]),
                  Metrics())


def test_a_prefix_backend_holds_only_the_prefix_it_was_sent() -> None:
    c = _chunks(5)
    a = _router("canonical-order").backends[0]
    a.register([c[2], c[0], c[1]])  # order as sent does not matter: the prefix is c0 c1 c2
    assert a.held_tokens([c[1], c[2], c[0]]) == 3 * c[0].tokens
    assert a.held_tokens([c[0], c[1], c[4]]) == 2 * c[0].tokens  # shares c0 c1, then differs
    assert a.held_tokens([c[1], c[2], c[4]]) == 0  # its chunks are there, its prefix is not
    plain = _router("none").backends[0]
    plain.register([c[2], c[0], c[1]])
    assert plain.held_tokens([c[1], c[2], c[4]]) == 2 * c[0].tokens


def test_a_set_goes_where_its_prefix_is_not_where_its_chunks_are() -> None:
    c = _chunks(4)
    request = [c[3], c[1], c[2]]  # canonical prefix c1 c2 c3
    for fmt, expected in (("canonical-order", "b"), ("none", "a")):
        router = _router(fmt)
        a, b = router.backends
        router.assign(a, [c[0], c[1], c[2]])  # a has c1 and c2, but after c0
        router.assign(b, [c[1]])  # b has the request's first canonical chunk
        assert router.route(request)[0].label == expected, fmt
        assert router.assign(router.route(request)[0], request) > 0

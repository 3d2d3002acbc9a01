"""No tenant can turn caching off for the others (issue 17, item 2): a request whose row the
store cannot hold is refused, bypassed or stored in a form it can hold — and a row the store
does refuse fails that write alone, never opening the breaker for everyone. SQLite and
PostgreSQL (where the overflows and the NUL were found)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gateway.devtools.serverthread import ServerThread
from gateway.embedding import SentenceTransformerEmbedder
from tests.conftest import GatewayFactory


@pytest.fixture
def gw(gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder,
       database_url: str) -> ServerThread:
    return gateway_factory(embedder=embedder, database_url=database_url)


def ask(gw: ServerThread, q: str, *, model: str = "fake-small", key: str = "sk-other",
        headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {key}", **(headers or {})},
                      json={"model": model, "messages": [{"role": "user", "content": q}]})


def others_still_cached(gw: ServerThread) -> None:
    """Another tenant's repeat is still a hit: nothing opened the breaker."""
    q = "What is the largest ocean on Earth?"
    ask(gw, q)
    r = ask(gw, q)
    assert r.headers["x-semcache"] == "hit", r.headers
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert 'semcache_bypass_total{reason="store_unavailable"} 0.0' in metrics
    assert 'semcache_store_errors_total{operation="write"} 0.0' in metrics


def test_a_namespace_too_long_for_the_store_is_a_400(gw: ServerThread) -> None:
    r = ask(gw, "Who wrote Emma?", key="sk-attacker",
            headers={"x-semcache-namespace": "n" * 128})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "X-Semcache-Namespace"
    others_still_cached(gw)


@pytest.mark.parametrize("model", ["m" * 300, "fake\u0000small"])
def test_a_model_name_the_column_cannot_hold_is_stored_by_digest(
    gw: ServerThread, model: str
) -> None:
    assert ask(gw, "Who wrote Emma?", model=model).headers["x-semcache"] == "miss"
    assert ask(gw, "Who wrote Emma?", model=model).headers["x-semcache"] == "hit"
    assert ask(gw, "Who wrote Emma?").headers["x-semcache"] == "miss"  # another model
    others_still_cached(gw)


def test_a_nul_in_the_question_bypasses(gw: ServerThread, upstream_stats: Callable[[], Any]) -> None:
    r = ask(gw, "Who wrote\u0000 Emma?", key="sk-attacker")
    assert r.status_code == 200 and r.headers["x-semcache-bypass"] == "nul_character"
    others_still_cached(gw)


def test_a_row_the_store_refuses_fails_that_write_alone(
    gw: ServerThread, database_url: str
) -> None:
    """Whatever else a store may refuse (here: a CHECK constraint added behind our back), the
    refused write is counted and skipped; caching goes on for everyone."""
    import sqlalchemy as sa

    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("ALTER TABLE cache_entries ADD CONSTRAINT no_poison "
                                 "CHECK (query_text NOT LIKE '%poison%')"))
        else:  # SQLite cannot add a CHECK: a trigger refuses the row the same way
            conn.execute(sa.text(
                "CREATE TRIGGER no_poison BEFORE INSERT ON cache_entries "
                "WHEN NEW.query_text LIKE '%poison%' BEGIN SELECT RAISE(ABORT, 'no'); END"))
    engine.dispose()
    r = ask(gw, "Is this poison ivy?", key="sk-attacker")
    assert r.status_code == 200 and r.headers["x-semcache"] == "miss"
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert 'semcache_store_errors_total{operation="write_rejected"} 1.0' in metrics
    others_still_cached(gw)

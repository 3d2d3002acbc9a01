"""The admin API over HTTP, with two tenants, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import yaml

from gateway.devtools.serverthread import ServerThread
from gateway.embedding import SentenceTransformerEmbedder
from tests.conftest import GatewayFactory

ADMIN = {"authorization": "Bearer admin-secret"}


@pytest.fixture
def gw(gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder,
       database_url: str, cats: Path) -> ServerThread:
    return gateway_factory(embedder=embedder, database_url=database_url,
                           admin_key="admin-secret", categories_dir=cats)


def asker(gw: ServerThread, key: str) -> Callable[[str], httpx.Response]:
    def ask(q: str) -> httpx.Response:
        return httpx.post(f"{gw.url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                          json={"model": "fake-small", "messages": [{"role": "user", "content": q}]})
    return ask


def admin(gw: ServerThread, method: str, path: str, **kw: object) -> httpx.Response:
    return httpx.request(method, f"{gw.url}/admin{path}", headers=ADMIN, timeout=60, **kw)  # type: ignore[arg-type]


def test_admin_needs_the_key(gw: ServerThread, gateway_factory: GatewayFactory,
                             embedder: SentenceTransformerEmbedder, tmp_path: Path) -> None:
    for headers in ({}, {"authorization": "Bearer nope"}, {"x-semcache-admin-key": "admin-secre"}):
        r = httpx.get(f"{gw.url}/admin/stats", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{gw.url}/admin/stats",
                     headers={"x-semcache-admin-key": "admin-secret"}).status_code == 200
    off = gateway_factory(embedder=embedder, database_url=f"sqlite:///{tmp_path}/off.db")
    r = httpx.get(f"{off.url}/admin/stats", headers=ADMIN)
    assert r.status_code == 401 and "SEMCACHE_ADMIN_KEY" in r.json()["error"]["message"]


def test_tenants_inspect_and_invalidate(gw: ServerThread) -> None:
    a, b = asker(gw, "sk-tenant-a"), asker(gw, "sk-tenant-b")
    q = "Who wrote Pride and Prejudice?"
    a(q), b(q)
    assert a(q).headers["x-semcache"] == b(q).headers["x-semcache"] == "hit"
    rows = admin(gw, "GET", "/entries").json()["data"]
    assert len(rows) == 2 and len({r["namespace"] for r in rows}) == 2
    assert all("sk-tenant" not in r["namespace"] for r in rows)  # keys never stored
    ns_a = next(r["namespace"] for r in rows if r["id"] == int(a(q).headers["x-semcache-entry"]))
    only_a = admin(gw, "GET", "/entries", params={"namespace": ns_a}).json()["data"]
    assert [r["namespace"] for r in only_a] == [ns_a]

    full = admin(gw, "GET", f"/entries/{only_a[0]['id']}").json()
    assert full["response"]["choices"][0]["message"]["content"]

    r = admin(gw, "POST", "/invalidate", json={"namespace": ns_a})
    assert r.json()["count"] == 1
    assert a(q).headers["x-semcache"] == "miss"
    assert b(q).headers["x-semcache"] == "hit", "tenant B must not be touched"

    stats = admin(gw, "GET", "/stats").json()
    assert stats["categories"]["personal"]["cacheable"] is False
    assert sum(c["stored_rows"] for c in stats["categories"].values()) == 2


def test_delete_by_id_and_by_query_similarity(gw: ServerThread) -> None:
    ask = asker(gw, "sk-x")
    ask("How does photosynthesis work?")
    ask("What is the capital of Australia?")
    entry = int(ask("What is the capital of Australia?").headers["x-semcache-entry"])
    assert admin(gw, "DELETE", f"/entries/{entry}").json()["deleted"] == [entry]
    assert admin(gw, "DELETE", f"/entries/{entry}").status_code == 404
    assert ask("What is the capital of Australia?").headers["x-semcache"] == "miss"

    r = admin(gw, "POST", "/invalidate",
              json={"query": "Explain the process of photosynthesis", "min_similarity": 0.8})
    assert r.json()["count"] == 1
    assert ask("How does photosynthesis work?").headers["x-semcache"] == "miss"
    assert ask("What is the capital of Australia?").headers["x-semcache"] == "hit"


def test_feedback_deletes_and_records(gw: ServerThread, database_url: str) -> None:
    ask = asker(gw, "sk-x")
    ask("Why is the sky blue?")
    entry = int(ask("Why is the sky blue?").headers["x-semcache-entry"])
    r = admin(gw, "POST", "/feedback", json={"entry_id": entry, "reason": "outdated"})
    assert r.status_code == 200
    assert ask("Why is the sky blue?").headers["x-semcache"] == "miss"
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT entry_id, reason FROM feedback")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [(entry, "outdated")]
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert any(line.startswith("semcache_feedback_total") and line.endswith(" 1.0")
               for line in metrics.splitlines())
    assert admin(gw, "POST", "/feedback", json={"entry_id": 999999}).status_code == 404


def test_bad_admin_input_is_400(gw: ServerThread) -> None:
    for body in ({}, {"min_similarity": 3}, {"category": "nope"}, {"ids": "x"}, {"bogus": 1}):
        r = admin(gw, "POST", "/invalidate", json=body)
        assert r.status_code == 400, (body, r.text)
        assert "error" in r.json()
    assert admin(gw, "GET", "/entries", params={"limit": 0}).status_code == 400


def test_reload_applies_good_files_and_refuses_bad_ones(gw: ServerThread, cats: Path) -> None:
    data = yaml.safe_load((cats / "code.yaml").read_text())
    data["threshold"] = 0.91
    (cats / "code.yaml").write_text(yaml.safe_dump(data))
    assert admin(gw, "POST", "/reload").status_code == 200
    assert admin(gw, "GET", "/stats").json()["categories"]["code"]["threshold"] == 0.91

    data["threshold"] = 7
    (cats / "code.yaml").write_text(yaml.safe_dump(data))
    r = admin(gw, "POST", "/reload")
    assert r.status_code == 400 and "code.yaml" in r.json()["error"]["message"]
    assert admin(gw, "GET", "/stats").json()["categories"]["code"]["threshold"] == 0.91
    assert asker(gw, "k")("hello there").status_code == 200


def test_hits_are_counted_for_eviction(gw: ServerThread) -> None:
    ask = asker(gw, "sk-count")
    ask("How many bones are in the adult human body?")
    for _ in range(3):
        assert ask("How many bones are in the adult human body?").headers["x-semcache"] == "hit"
    deadline = time.monotonic() + 10
    while True:  # hit counts are written in batches, about once a second
        rows = admin(gw, "GET", "/entries").json()["data"]
        if rows and rows[0]["hit_count"] == 3:
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.2)
    assert rows[0]["last_hit_at"] is not None

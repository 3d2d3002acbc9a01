"""Verified repeats (gateway/cache/repeats.py): a paraphrase served once and sent again word for
word is served on the remembered decision — no embedding, no verification — and only while the
entry, the scope and the categories it was decided under still hold."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.cache.repeats import Decision, VerifiedRepeats
from gateway.devtools.serverthread import ServerThread
from gateway.embedding import SentenceTransformerEmbedder
from tests.conftest import GatewayFactory
from tests.integration.test_admin import ADMIN
from tests.integration.test_observability import value

Q, PARA = "Who painted the Mona Lisa?", "Who was the painter of the Mona Lisa?"
Ask = Callable[..., httpx.Response]


@pytest.fixture
def start(gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder,
          tmp_path: Path, cats: Path) -> Callable[..., ServerThread]:
    def make(db: str = "c", **kw: Any) -> ServerThread:
        return gateway_factory(embedder=embedder, database_url=f"sqlite:///{tmp_path}/{db}.db",
                               admin_key="admin-secret", categories_dir=cats, **kw)
    return make


def asker(gw: ServerThread) -> Ask:
    def ask(q: str, key: str = "sk-a", model: str = "fake-small", system: str | None = None,
            headers: dict[str, str] | None = None) -> httpx.Response:
        msgs = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": q}]
        r = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": model, "messages": msgs},
                       headers={"authorization": f"Bearer {key}", **(headers or {})}, timeout=60)
        assert r.status_code == 200, r.text
        return r
    return ask


def embeds(gw: ServerThread) -> float:
    return value(gw.url, "semcache_stage_duration_seconds_count", stage="embed")


def repeats(gw: ServerThread) -> float:
    return value(gw.url, "semcache_verified_repeats_total")


def hit_once(gw: ServerThread, ask: Ask, **kw: Any) -> httpx.Response:
    assert ask(Q, **kw).headers["x-semcache"] == "miss"
    first = ask(PARA, **kw)
    assert first.headers["x-semcache"] == "hit"
    return first


def test_the_same_wording_again_is_served_without_embedding(
        start: Callable[..., ServerThread]) -> None:
    gw = start()
    ask = asker(gw)
    first = hit_once(gw, ask)
    before = embeds(gw)
    for wording in (PARA, f"  {PARA.replace(' ', '   ')} "):  # up to whitespace, as exact
        again = ask(wording)
        assert again.headers["x-semcache"] == "hit"
        for h in ("x-semcache-entry", "x-semcache-similarity", "x-semcache-category"):
            assert again.headers[h] == first.headers[h]
        assert again.json()["choices"] == first.json()["choices"]
    assert embeds(gw) == before and repeats(gw) == 2


def test_a_remembered_decision_never_crosses_scope_or_conversation(
        start: Callable[..., ServerThread]) -> None:
    gw = start()
    ask = asker(gw)
    hit_once(gw, ask)
    # another tenant, another model, another conversation: each its own full path, a miss
    for other in ({"key": "sk-b"}, {"model": "fake-large"}, {"system": "Answer in French."}):
        assert ask(PARA, **other).headers["x-semcache"] == "miss", other
    assert repeats(gw) == 0


@pytest.mark.parametrize("how", ["invalidate", "feedback"])
def test_a_remembered_decision_goes_with_its_entry(
        start: Callable[..., ServerThread], how: str) -> None:
    gw = start()
    ask = asker(gw)
    entry = int(hit_once(gw, ask).headers["x-semcache-entry"])
    body = {"ids": [entry]} if how == "invalidate" else {"entry_id": entry}
    assert httpx.post(f"{gw.url}/admin/{how}", json=body, headers=ADMIN).status_code == 200
    assert ask(PARA).headers["x-semcache"] == "miss"
    assert repeats(gw) == 0


def test_a_reload_forgets_and_a_stricter_threshold_refuses(
        start: Callable[..., ServerThread], cats: Path) -> None:
    gw = start()
    ask = asker(gw)
    first = hit_once(gw, ask)
    assert httpx.post(f"{gw.url}/admin/reload", headers=ADMIN).status_code == 200
    before = embeds(gw)
    assert ask(PARA).headers["x-semcache"] == "hit"
    assert embeds(gw) == before + 1 and repeats(gw) == 0  # decided again, in full
    assert ask(PARA).headers["x-semcache"] == "hit" and repeats(gw) == 1

    name = first.headers["x-semcache-category"]
    path = cats / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    data["threshold"] = min(0.999, float(first.headers["x-semcache-similarity"]) + 0.001)
    path.write_text(yaml.safe_dump(data))
    assert httpx.post(f"{gw.url}/admin/reload", headers=ADMIN).status_code == 200
    assert ask(PARA).headers["x-semcache"] == "miss"
    assert repeats(gw) == 1


def test_a_forced_category_is_not_remembered_and_off_means_off(
        start: Callable[..., ServerThread]) -> None:
    gw = start()
    ask = asker(gw)
    assert ask(Q).headers["x-semcache"] == "miss"
    forced = {"x-semcache-category": ask(Q).headers["x-semcache-category"]}
    assert ask(PARA, headers=forced).headers["x-semcache"] == "hit"
    before = embeds(gw)
    assert ask(PARA).headers["x-semcache"] == "hit"
    assert embeds(gw) == before + 1 and repeats(gw) == 0

    off = start("off", verified_repeats=0)
    ask = asker(off)
    hit_once(off, ask)
    before = embeds(off)
    assert ask(PARA).headers["x-semcache"] == "hit"
    assert embeds(off) == before + 1 and repeats(off) == 0


def test_the_least_recently_used_decision_is_forgotten_first() -> None:
    memory = VerifiedRepeats(2)
    keys = [f"{i:064x}" for i in range(3)]
    for i, key in enumerate(keys[:2]):
        memory.remember(key, Decision(i, 0.9, "chat", "chat", b""))
    assert memory.recall(keys[0]) is not None  # now the most recent
    memory.remember(keys[2], Decision(2, 0.9, "chat", "chat", b""))
    assert [memory.recall(k) is not None for k in keys] == [True, False, True]
    none = VerifiedRepeats(0)
    none.remember(keys[0], Decision(0, 0.9, "chat", "chat", b""))
    assert len(none) == 0

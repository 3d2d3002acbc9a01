"""KV-chunk reuse, live (issue 19): the gateway in front of two real llama.cpp servers on CPU.
The second request carries the same retrieved passages in another order and a new question;
the engine's own count (``timings.prompt_n``: prompt tokens it evaluated) says how much it had
to compute. With the canonical chunk order and chunk-affinity routing it reuses the passages'
KV; with the format and routing off (chunks as sent, round-robin) it computes them again."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.devtools.real_model import ALIAS, RealModelUnavailable, llama_server
from gateway.devtools.serverthread import free_port
from tests.conftest import GatewayFactory

pytestmark = pytest.mark.real_model

def passages(tag: str) -> list[str]:
    """Four passages of about 80 tokens; every sentence names ``tag``, so the passages of one
    run share no run of 64 tokens with another's (which ``--cache-reuse`` would find)."""
    return [f"Passage {n}. " + " ".join(
        f"The {w} of {tag} district {n} is known for its {v} and its {u}."
        for w, v, u in (("harbour", "ships", "fish markets"), ("old town", "churches", "lanes"),
                        ("university", "libraries", "students"),
                        ("river", "bridges", "summer festivals")))
        for n in range(1, 5)]


@pytest.fixture(scope="module")
def replicas() -> Iterator[list[str]]:
    try:
        with llama_server(free_port(), n_ctx=2048) as a, llama_server(free_port(), n_ctx=2048) as b:
            yield [a, b]
    except RealModelUnavailable as exc:
        if os.environ.get("SEMCACHE_REQUIRE_REAL_MODEL") == "1":
            raise
        pytest.skip(str(exc))


def _ask(url: str, passages: list[str], question: str) -> dict[str, Any]:
    content = [{"type": "text", "text": p} for p in passages] + [{"type": "text", "text": question}]
    r = httpx.post(f"{url}/v1/chat/completions", timeout=300, headers={
        "cache-control": "no-cache, no-store"},  # past the semantic cache: to the engine
        json={"model": ALIAS, "temperature": 0, "max_tokens": 8,
              "messages": [{"role": "system", "content": "Answer from the passages."},
                           {"role": "user", "content": content}]})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _gateway(factory: GatewayFactory, replicas: list[str], tmp: Path, *, on: bool) -> str:
    fmt = "canonical-order" if on else "none"
    backends = [{"url": u, "chunk_format": fmt} for u in replicas]
    gw = factory(backends=backends, routing="chunk-affinity" if on else "round-robin",
                 database_url=f"sqlite:///{tmp / ('on' if on else 'off')}.db",
                 backend_probe_interval_s=3600)
    return gw.url


def test_reordered_chunks_are_reused_only_with_the_format_and_affinity(
    gateway_factory: GatewayFactory, replicas: list[str], tmp_path: Path,
) -> None:
    computed = {}
    for on in (False, True):
        url = _gateway(gateway_factory, replicas, tmp_path, on=on)
        tag = "on" if on else "off"
        docs = passages("northern" if on else "southern")  # nothing of them cached yet
        first = _ask(url, docs, "Which district has the most bridges?")
        second = _ask(url, [docs[2], docs[0], docs[3], docs[1]], "Where are the fish markets?")
        computed[tag] = (first["timings"]["prompt_n"], second["timings"]["prompt_n"])
    (off_first, off_second), (on_first, on_second) = computed["off"], computed["on"]
    assert off_first > 300 and on_first > 300, computed  # the passages were computed once
    # off: the second request's passages are computed again (another replica, another order)
    assert off_second > 0.8 * off_first, computed
    # on: only the question is new
    assert on_second * 4 <= off_second, computed

"""How semcache launches llama-server keeps a passage set's slot (issue 19). At the server's
own ``--slot-prompt-similarity`` (0.1) a request whose prompt shares only its first passage with
a slot takes that slot — while another sits empty — and the first set's KV is gone; measured on
the H200, that was half the cold prefills left (docs/BENCHMARKS.md). semcache launches it with
0.5: the request takes the empty slot and the first set comes back warm. Real engine, CPU."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest

from gateway.devtools.real_model import ALIAS, RealModelUnavailable, llama_server
from gateway.devtools.serverthread import free_port

pytestmark = pytest.mark.real_model


def _passage(tag: str, n: int) -> str:
    return f"Passage {n} of {tag}. " + " ".join(
        f"The {w} of {tag} district {n} is known for its {v}."
        for w, v in (("harbour", "ships"), ("old town", "churches"), ("university", "students"),
                     ("river", "bridges"), ("market", "spices")))


SHARED = _passage("Aldmoor", 1)
SET_A = [SHARED] + [_passage("Brackwater", n) for n in (2, 3, 4)]
SET_B = [SHARED] + [_passage("Cindervale", n) for n in (2, 3, 4)]


def _ask(url: str, passages: list[str], question: str) -> dict[str, Any]:
    content = [{"type": "text", "text": p} for p in passages] + [{"type": "text", "text": question}]
    r = httpx.post(f"{url}/chat/completions", timeout=300, json={
        "model": ALIAS, "temperature": 0, "max_tokens": 2,
        "messages": [{"role": "system", "content": "Answer from the passages."},
                     {"role": "user", "content": content}]})
    assert r.status_code == 200, r.text
    timings: dict[str, Any] = r.json()["timings"]
    return timings


@pytest.mark.parametrize("similarity", [None, 0.1])
def test_a_set_sharing_one_passage_does_not_take_another_sets_slot(similarity: float | None,
                                                                   ) -> None:
    kw = {} if similarity is None else {"slot_prompt_similarity": similarity}
    try:
        with llama_server(free_port(), n_ctx=1024, parallel=2, cache_ram_mib=0, **kw) as url:
            first = _ask(url, SET_A, "Which district has the most ships?")
            shared = _ask(url, SET_B, "Which district has the most churches?")
            again = _ask(url, SET_A, "Which district has the fewest students?")
    except RealModelUnavailable as exc:
        if os.environ.get("SEMCACHE_REQUIRE_REAL_MODEL") == "1":
            raise
        pytest.skip(str(exc))
    prompt = first["prompt_n"] + first["cache_n"]
    if similarity is None:  # as semcache launches it: B took the empty slot, A's was kept
        assert shared["cache_n"] == 0, shared
        assert again["prompt_n"] < 0.1 * prompt, (first, shared, again)
    else:  # the server's default: B took A's slot for the one passage they share...
        assert 0.1 < shared["cache_n"] / prompt < 0.5, (first, shared)
        # ... and A is prefilled again from there
        assert again["prompt_n"] > 0.5 * prompt, (first, shared, again)

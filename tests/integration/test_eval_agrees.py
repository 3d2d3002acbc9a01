"""`semcache eval` predicts what the gateway does: for every pair, eval says "served" exactly
when the running gateway (over HTTP, the official client) serves b's answer to a."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
import yaml

from gateway.categories import Classifier, load_categories
from gateway.config import Settings
from gateway.embedding import SentenceTransformerEmbedder
from gateway.resources import categories_dir
from gateway.tools.evaluation import Pair, evaluate
from tests.conftest import GatewayFactory

DATA = Path(__file__).parents[2] / "benchmarks" / "data"


def _pairs() -> list[Pair]:
    rows = [json.loads(x) for x in (DATA / "holdout2_pairs.jsonl").read_text().splitlines()][:18]
    pairs = [Pair(r["a"], r["b"], r["same"], r.get("category")) for r in rows]
    # without a category: both sides are classified, as the gateway classifies them
    rows = [json.loads(x) for x in (DATA / "holdout_pairs.jsonl").read_text().splitlines()][:14]
    pairs += [Pair(r["a"], r["b"], r["same"]) for r in rows]
    pairs += [Pair("Is 🍕 healthy?", "Is 🍔 healthy?", False),
              Pair("What is 2 + 2?", "What is 2 + 2?", True)]
    return pairs


def _ask(client: openai.OpenAI, text: str, headers: dict[str, str]) -> str:
    raw = client.chat.completions.with_raw_response.create(
        model="fake-small", messages=[{"role": "user", "content": text}], extra_headers=headers)
    return " ".join(raw.headers.get(h, "") for h in
                    ("x-semcache", "x-semcache-bypass", "x-semcache-category"))


@pytest.mark.parametrize("verifier", ["rules", "calibrated", "learned"])
def test_eval_serves_exactly_what_the_gateway_serves(
    gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder, tmp_path: Path,
    verifier: str,
) -> None:
    overlay = None
    if verifier != "rules":  # every category on the calibrated (or learned) probability
        overlay = tmp_path / "overlay.yaml"
        names = [c.name for c in load_categories(categories_dir()).values()]
        point = {"max_wrong_rate": 0.48, **({"learned": True} if verifier == "learned" else {})}
        overlay.write_text(yaml.safe_dump({n: {"verification": point} for n in names}))
    settings = Settings(categories_overlay=overlay)
    cats = load_categories(categories_dir(), overlay)
    classifier = Classifier(cats, {n: embedder.encode(c.exemplars) for n, c in cats.items()},
                            settings.classify_min_similarity)
    pairs = _pairs()
    predicted = set(evaluate(pairs, embedder, cats, classifier,
                             margin=settings.classify_margin).served)
    gw = gateway_factory(embedder=embedder, database_url=f"sqlite:///{tmp_path / 'eval.db'}",
                         categories_overlay=overlay)
    served = set()
    for i, p in enumerate(pairs):
        # a tenant of its own per pair: a fresh cache holding b alone
        with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=f"sk-pair-{i}",
                           max_retries=0) as client:
            headers = {"X-Semcache-Category": p.category} if p.category else {}
            stored = _ask(client, p.b, headers)  # a miss, stored; or b's category not cacheable
            assert stored.startswith(("miss", "bypass category_not_cacheable")), (p, stored)
            if _ask(client, p.a, headers).startswith("hit"):
                served.add(i)
    assert 5 <= len(served) < len(pairs)  # the check means something: some hits, some misses
    assert predicted == served, {i: pairs[i] for i in predicted ^ served}

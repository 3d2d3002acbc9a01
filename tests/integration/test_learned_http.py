"""The learned verifier on the request path (official client, over HTTP): a category that opts
in serves a reworded question and refuses the same words in an order that changes it — which
the similarity alone serves."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from gateway.embedding import SentenceTransformerEmbedder
from gateway.resources import categories_dir
from tests.conftest import GatewayFactory

ORIGINAL = "Is a kilogram of iron heavier than a kilogram of feathers?"
REWORDED = "Is a kilogram of iron heavier than a kilogram of feathers or not?"
SWAPPED = "Is a kilogram of feathers heavier than a kilogram of iron?"  # cosine 0.996


def _ask(client: openai.OpenAI, text: str) -> str:
    raw = client.chat.completions.with_raw_response.create(
        model="fake-small", messages=[{"role": "user", "content": text}],
        extra_headers={"X-Semcache-Category": "factual"})
    return raw.headers.get("x-semcache", "")


def _gateway(gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder,
             tmp_path: Path, verification: dict[str, object] | None) -> str:
    """A gateway whose factual category verifies as ``verification`` says (None: as shipped)."""
    overlay = tmp_path / f"overlay-{len(list(tmp_path.iterdir()))}.yaml"
    overlay.write_text(yaml.safe_dump(
        {"factual": {} if verification is None else {"verification": verification}}))
    gw = gateway_factory(embedder=embedder, database_url=f"sqlite:///{overlay}.db",
                         categories_overlay=overlay)
    return f"{gw.url}/v1"


def test_a_learned_category_refuses_a_swap_the_similarity_serves(
    gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder, tmp_path: Path,
) -> None:
    pytest.importorskip("torch")
    learned = _gateway(gateway_factory, embedder, tmp_path,
                       {"learned": True, "min_probability": 0.65})
    with openai.OpenAI(base_url=learned, api_key="sk-learned", max_retries=0) as client:
        assert _ask(client, ORIGINAL) == "miss"
        assert _ask(client, REWORDED) == "hit"
        assert _ask(client, SWAPPED) == "miss"    # the answer about iron is not served
    # the control: without verification the same store serves the swap on similarity alone
    plain = _gateway(gateway_factory, embedder, tmp_path, {"enabled": False})
    with openai.OpenAI(base_url=plain, api_key="sk-plain", max_retries=0) as client:
        assert _ask(client, ORIGINAL) == "miss"
        assert _ask(client, SWAPPED) == "hit"


def test_a_learned_verifier_that_cannot_load_refuses_rather_than_serves(
    gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """The model is missing (a broken install): the gateway still starts, its other work goes
    on, and a learned category's candidates are refused (a miss), never served unverified."""
    import gateway.cache.lookup as lookup

    def broken(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("crossencoder.npz")

    monkeypatch.setattr(lookup, "load_learned", broken)
    url = _gateway(gateway_factory, embedder, tmp_path, {"learned": True, "min_probability": 0.1})
    with openai.OpenAI(base_url=url, api_key="sk-broken", max_retries=0) as client:
        assert _ask(client, ORIGINAL) == "miss"
        assert _ask(client, ORIGINAL) == "hit"      # exact repeats need no verifier
        assert _ask(client, REWORDED) == "miss"     # refused: no model to read
    assert "the learned verifier cannot be loaded" in caplog.text


def test_a_reload_that_turns_the_learned_verifier_on_loads_it_before_any_lookup(
    gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Loading the model takes seconds (an ONNX export the first time): done in a lookup, it
    would run past the lookup's deadline and count against the store's breaker."""
    pytest.importorskip("torch")
    import gateway.cache.lookup as lookup

    loads: list[int] = []
    real = lookup.load_learned

    def counted(*args: object, **kwargs: object) -> object:
        loads.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(lookup, "load_learned", counted)
    cats = tmp_path / "categories"
    shutil.copytree(categories_dir(), cats)
    for f in cats.glob("*.yaml"):  # the shipped ones have the cross-encoder beside the rules
        data = yaml.safe_load(f.read_text())
        data["verification"]["cross_encoder"] = False
        f.write_text(yaml.safe_dump(data))
    gw = gateway_factory(embedder=embedder, database_url=f"sqlite:///{tmp_path / 'r.db'}",
                         admin_key="admin-secret", categories_dir=cats)
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key="sk-reload", max_retries=0) as client:
        assert _ask(client, ORIGINAL) == "miss"
        assert loads == []  # no category asks for it yet
        data = yaml.safe_load((cats / "factual.yaml").read_text())
        data["verification"] = {"learned": True, "min_probability": 0.65}
        (cats / "factual.yaml").write_text(yaml.safe_dump(data))
        r = httpx.post(f"{gw.url}/admin/reload", headers={"authorization": "Bearer admin-secret"},
                       timeout=120)
        assert r.status_code == 200, r.text
        assert loads == [1]  # loaded by the reload
        assert _ask(client, REWORDED) == "hit"
        assert _ask(client, SWAPPED) == "miss"
        assert loads == [1]


def test_the_cross_encoder_beside_the_rules_refuses_what_it_judges_different(
    gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder, tmp_path: Path,
) -> None:
    """A category with the cross-encoder beside its slot rules (``cross_encoder: true``): a
    different question that no rule catches is refused, and a paraphrase that a rule wrongly
    vetoes is served. With the rules alone (the control) it is the other way round."""
    pytest.importorskip("torch")
    asked, other = "What is the capital of Australia?", "What is the largest city in Australia?"
    # the entities rule takes "US" for a name the other side does not mention (the model reads
    # the pair in order, query first: asked the other way round it is less sure)
    vetoed, paraphrase = ("Name the first US president",
                          "Who was the first president of the United States?")
    judged = _gateway(gateway_factory, embedder, tmp_path, {"cross_encoder": True})
    with openai.OpenAI(base_url=judged, api_key="sk-judged", max_retries=0) as client:
        assert _ask(client, asked) == "miss"
        assert _ask(client, other) == "miss"        # not the capital's answer
        assert _ask(client, vetoed) == "miss"
        assert _ask(client, paraphrase) == "hit"    # the veto overruled
    rules = _gateway(gateway_factory, embedder, tmp_path, {"cross_encoder": False})
    with openai.OpenAI(base_url=rules, api_key="sk-rules", max_retries=0) as client:
        assert _ask(client, asked) == "miss"
        assert _ask(client, other) == "hit"
        assert _ask(client, vetoed) == "miss"
        assert _ask(client, paraphrase) == "miss"


def test_the_cross_encoder_beside_the_rules_refuses_another_attribute_of_the_same_thing(
    gateway_factory: GatewayFactory, embedder: SentenceTransformerEmbedder, tmp_path: Path,
) -> None:
    """One word of a short question put in place of another (population / area / economy,
    cosine 0.75–0.77, over the category's threshold): refused, however the model reads it where
    the gate holds that kind of veto; rewordings of the stored question are served."""
    pytest.importorskip("torch")
    judged = _gateway(gateway_factory, embedder, tmp_path, {"cross_encoder": True})
    with openai.OpenAI(base_url=judged, api_key="sk-attribute", max_retries=0) as client:
        assert _ask(client, "How big is the population of Japan?") == "miss"
        assert _ask(client, "How big is the area of Japan?") == "miss"
        assert _ask(client, "How big is the economy of Japan?") == "miss"
        assert _ask(client, "How large is the population of Japan?") == "hit"
        assert _ask(client, "What is the size of the population of Japan?") == "hit"

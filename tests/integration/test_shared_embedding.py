"""The torch path without sentence-transformers' per-call work (gpu.py, eager on this CPU) and
the shared embedding process of ``serve --workers N`` (shared.py, process.py), with the real
packaged model; the end-to-end case through the official openai client over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import orjson
import pytest

from gateway.devtools.serverthread import ServerThread, free_port
from gateway.embedding import MicroBatcher, SentenceTransformerEmbedder, unseen
from gateway.embedding.gpu import TorchEmbedder
from gateway.embedding.shared import EmbeddingServer, EmbeddingUnavailable, RemoteEmbedder

TEXTS = [
    "hi", "What is the capital of France?", "Write a Python function that sorts a list " * 20,
    "Ünïcödé and emoji 🚀 text", "", "a" * 3000,
]


def test_torch_path_gives_the_models_vectors(embedder: SentenceTransformerEmbedder) -> None:
    fast = TorchEmbedder(embedder, graphs=True, max_batch=4)  # no CUDA here: eager
    assert fast.encode([]).shape == (0, embedder.dim)
    assert fast.name == embedder.name and fast.dim == embedder.dim
    for batch in (TEXTS, TEXTS[:1], TEXTS[2:3], TEXTS * 3):  # batches over max_batch split
        got, want = fast.encode(batch), embedder.encode(batch)
        assert got.shape == want.shape == (len(batch), embedder.dim)
        assert np.abs(got - want).max() < 1e-5


class _ServerThread:
    """An EmbeddingServer on its own event loop in a thread, as if in another process; it can
    be stopped and started again at the same socket, as serve restarts a lost process."""

    def __init__(self, embedder: SentenceTransformerEmbedder, path: str,
                 pairs: Callable[[], object] | None = None):
        self.path, self.pairs = path, pairs
        self._task: asyncio.Task[None] | None = None
        self.start(embedder)

    def start(self, embedder: SentenceTransformerEmbedder) -> None:
        self.server = EmbeddingServer(embedder, self.path, wait_s=0.002, max_batch=64,
                                      pairs=self.pairs)
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self._task = self.loop.create_task(self.server.serve_forever(ready.set))
            try:
                self.loop.run_until_complete(self._task)
            except asyncio.CancelledError:
                pass

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(30)

    def stop(self) -> None:
        if self._task is None:  # stopped already
            return
        self.loop.call_soon_threadsafe(self._task.cancel)
        self.thread.join(10)
        self.loop.close()
        self._task = None
        Path(self.path).unlink(missing_ok=True)


@pytest.fixture
def socket_path(tmp_path: Path) -> str:
    return str(tmp_path / "embed.sock")


@pytest.fixture
def shared(embedder: SentenceTransformerEmbedder, socket_path: str) -> Iterator[_ServerThread]:
    server = _ServerThread(embedder, socket_path)
    yield server
    server.stop()


async def test_one_process_embeds_for_several_workers(
    embedder: SentenceTransformerEmbedder, shared: _ServerThread, socket_path: str,
) -> None:
    workers = [RemoteEmbedder(socket_path) for _ in range(2)]
    assert workers[0].dim == embedder.dim and workers[0].name == embedder.name
    # the worker reads queries with the model's own tokenizer, so `unseen` still works
    assert unseen(workers[0], "Is 🍕 healthy?") == unseen(embedder, "Is 🍕 healthy?") \
        == "unknown_tokens"
    batchers = [MicroBatcher(w, wait_s=0.0, max_batch=64) for w in workers]
    for b in batchers:
        b.start()
    try:
        queries = [f"question number {i} about caching" for i in range(48)]
        vecs = await asyncio.gather(*(batchers[i % 2].embed(q) for i, q in enumerate(queries)))
        assert np.abs(np.stack(vecs) - embedder.encode(queries)).max() < 1e-5
        # the server gathered the two workers' queries into shared batches
        assert shared.server.batcher.batches < len(queries) / 2
        bulk = await batchers[0].embed_many(TEXTS)
        assert np.abs(bulk - embedder.encode(TEXTS)).max() < 1e-5
        blocking = await asyncio.to_thread(workers[1].encode, TEXTS[:2])
        assert np.abs(blocking - embedder.encode(TEXTS[:2])).max() < 1e-5
    finally:
        for b in batchers:
            await b.aclose()


async def test_the_workers_cross_encoder_runs_in_the_shared_process(
    embedder: SentenceTransformerEmbedder, socket_path: str, tmp_path: Path,
) -> None:
    """One model for every worker (on a GPU: one CUDA context, not one per worker taking turns):
    the logits a worker gets over the socket are the ones the model computes in the process; a
    process that scores no pairs, or is gone, gives a logit that refuses the pair."""
    pytest.importorskip("torch")
    from gateway.cache.verifier.learned import PROBES, load_learned
    from gateway.cache.verifier.shared_pairs import SharedPairModel

    local = load_learned(tmp_path / "models").model
    pairs = [*PROBES, ("Which ocean is the largest on Earth?", "What is the largest ocean on Earth?")]
    server = _ServerThread(embedder, socket_path, pairs=lambda: local)
    try:
        remote = RemoteEmbedder(socket_path)
        assert remote.scores_pairs
        shared = SharedPairModel(remote, asyncio.get_running_loop())
        seen: list[int] = []
        shared.observe = lambda n, _: seen.append(n)
        got = await asyncio.to_thread(shared.logits, pairs)  # as a store thread calls it
        assert np.array_equal(got, local.logits(pairs)) and seen == [len(pairs)]
        assert shared.same_tokens("What is X?", "what is x ?")
        with pytest.raises(EmbeddingUnavailable, match="pairs request"):
            await remote.ascore([("only one text",)])  # type: ignore[list-item]
        await remote.aclose()
    finally:
        server.stop()
    bare = _ServerThread(embedder, socket_path)  # a process that scores no pairs
    try:
        remote = RemoteEmbedder(socket_path)
        assert not remote.scores_pairs
        shared = SharedPairModel(remote, asyncio.get_running_loop())
        assert (await asyncio.to_thread(shared.logits, pairs[:2]) == -np.inf).all()
        await remote.aclose()
    finally:
        bare.stop()
    # gone: the same
    assert (await asyncio.to_thread(shared.logits, pairs[:1]) == -np.inf).all()


def test_the_shared_process_scores_pairs_only_where_the_cross_encoder_runs_on_a_gpu() -> None:
    """On CPU cores each worker keeps its own cross-encoder (int8, a pair at a time: one process
    would do every worker's share); on a GPU the workers' pairs go to the one process."""
    import torch

    from gateway.config import Settings
    from gateway.embedding.process import _pairs_here

    assert _pairs_here(Settings(verifier_device="cpu")) is None
    assert callable(_pairs_here(Settings(verifier_device="cuda")))  # made on the first pair
    assert (_pairs_here(Settings()) is None) == (not torch.cuda.is_available())


def test_a_malformed_request_gets_an_error_reply(shared: _ServerThread, socket_path: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(socket_path)
        (size,) = struct.unpack("<I", sock.recv(4))
        sock.recv(size)
        body = b'{"not": "a list"}'
        sock.sendall(struct.pack("<IBI", 7, 0, len(body)) + body)
        req_id, rows, size = struct.unpack("<IiI", sock.recv(12))
        assert (req_id, rows) == (7, -1)
        assert b"list of strings" in sock.recv(size)


async def test_a_lost_process_fails_the_waiting_calls_and_is_reached_again(
    embedder: SentenceTransformerEmbedder, shared: _ServerThread, socket_path: str,
) -> None:
    remote = RemoteEmbedder(socket_path, timeout_s=5)
    try:
        first = await remote.aencode(["hello there"])
        shared.stop()
        with pytest.raises(EmbeddingUnavailable):
            await remote.aencode(["hello again"])
        shared.start(embedder)
        again = await remote.aencode(["hello there"])
        assert np.abs(again - first).max() < 1e-6
    finally:
        await remote.aclose()


class _OtherModel:
    """The same vectors under another model's name, as a process restarted with another
    SEMCACHE_EMBEDDING_MODEL would announce itself."""

    def __init__(self, inner: SentenceTransformerEmbedder):
        self.inner, self.dim, self.name = inner, inner.dim, "another-model"

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.inner.encode(texts)


async def test_a_process_back_with_another_model_is_refused(
    embedder: SentenceTransformerEmbedder, shared: _ServerThread, socket_path: str,
) -> None:
    remote = RemoteEmbedder(socket_path, timeout_s=5)
    try:
        await remote.aencode(["hello there"])
        shared.stop()
        shared.start(_OtherModel(embedder))  # type: ignore[arg-type]
        with pytest.raises(EmbeddingUnavailable):  # the call on the lost connection
            await remote.aencode(["hello there"])
        # its vectors would be compared with the index built from the first model's: refused,
        # on every call, not only the first
        for _ in range(2):
            with pytest.raises(EmbeddingUnavailable, match="another-model"):
                await remote.aencode(["hello there"])
        with pytest.raises(EmbeddingUnavailable, match="another-model"):
            await asyncio.to_thread(remote.encode, ["hello there"])
    finally:
        await remote.aclose()


def test_serve_workers_share_one_embedding_process(fake_upstream: ServerThread,
                                                    tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "SEMCACHE_EMBEDDING_SHARED": "on", "SEMCACHE_LOG_LEVEL": "info"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--workers", "2", "--port", str(port),
         "--database-url", f"sqlite:///{tmp_path / 'cache.db'}",
         "--upstream", f"{fake_upstream.url}/v1"],
        env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    stack = contextlib.ExitStack()  # closes the openai client (its pooled connections)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        pids = [int(m.group(1)) for line in list(lines)
                if (m := re.search(r"shared embedding process (\d+) ready", line))]
        assert len(pids) == 1, "serve should start exactly one embedding process"
        client = stack.enter_context(
            openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0))

        def ask(q: str) -> str:
            raw = client.chat.completions.with_raw_response.create(
                model="fake", messages=[{"role": "user", "content": q}], temperature=0)
            return raw.headers["x-semcache"]

        q = "What is the boiling point of water at sea level?"
        assert ask(q) == "miss"
        # the other worker learns the entry through the store; either worker embeds the
        # paraphrase through the shared process and serves the hit
        deadline, hits = time.monotonic() + 30, 0
        while hits < 4 and time.monotonic() < deadline:
            hits += ask("what's the boiling point of water at sea level") == "hit"
        assert hits == 4
        # the embedding process dies: requests still get answers, passed through (no 5xx),
        # exact repeats still hit, and serve starts the process again
        os.kill(pids[0], signal.SIGKILL)
        time.sleep(0.2)
        assert ask("How far is the Moon from the Earth?") in {"miss", "bypass"}
        assert ask("What is the boiling point of water at sea level?") == "hit"  # exact repeat
        # a wording no worker has served (one served before is a verified repeat: no embedding)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and ask(
                "What's the boiling point of water at sea level?") != "hit":
            time.sleep(0.5)
        restarted = [int(m.group(1)) for line in list(lines)
                     if (m := re.search(r"shared embedding process (\d+) ready", line))]
        assert len(restarted) == 2 and restarted[1] != pids[0]
        assert ask("what's the boiling point of water at sea level") == "hit"
    finally:
        stack.close()
        proc.terminate()
        proc.wait(30)
        reader.join(10)
        proc.stderr.close()  # type: ignore[union-attr]


def test_when_serve_starts_a_shared_process() -> None:
    import torch

    from gateway.config import Settings
    from gateway.embedding.process import wanted

    assert not wanted(Settings(), 1)  # one process embeds for itself
    assert wanted(Settings(), 2) == torch.cuda.is_available()  # auto: on a GPU
    assert wanted(Settings(embedding_shared="on"), 2)
    assert wanted(Settings(embedding_device="cuda"), 2)
    assert not wanted(Settings(embedding_device="cuda", embedding_shared="off"), 2)
    assert not wanted(Settings(embedding_shared="on", cache_enabled=False), 2)


async def test_a_reply_with_the_wrong_number_of_vectors_is_refused(
    embedder: SentenceTransformerEmbedder, shared: _ServerThread, socket_path: str,
) -> None:
    """A process that answered two texts with one vector would hand a query another's vector:
    the worker refuses the reply instead of zipping what it got."""
    remote = RemoteEmbedder(socket_path, timeout_s=5)
    shared.stop()
    hello = orjson.dumps({"dim": embedder.dim, "name": embedder.name})
    one = embedder.encode(["hello"]).tobytes()

    accepted: list[asyncio.StreamWriter] = []

    async def short_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        writer.write(struct.pack("<I", len(hello)) + hello)
        req_id, _, size = struct.unpack("<IBI", await reader.readexactly(9))
        await reader.readexactly(size)
        writer.write(struct.pack("<IiI", req_id, 1, len(one)) + one)  # one vector for two texts
        await writer.drain()
        await reader.read()  # until the worker goes away
        writer.close()

    server = await asyncio.start_unix_server(short_server, path=socket_path)
    try:
        with pytest.raises(EmbeddingUnavailable, match="1 vectors for 2 texts"):
            await remote.aencode(["hello", "there"])
    finally:
        await remote.aclose()
        for w in accepted:  # a closed server leaves its connections open
            w.close()
            with contextlib.suppress(ConnectionError):
                await w.wait_closed()
        server.close()
        await server.wait_closed()


def test_the_cross_encoder_is_made_as_the_process_starts(
    embedder: SentenceTransformerEmbedder, socket_path: str,
) -> None:
    """Not on the first pair asked for: that worker waits 2 s at most, and a model made and
    captured on a GPU takes longer (those first pairs were refused)."""
    made = threading.Event()

    def make() -> object:
        made.set()
        return object()

    server = _ServerThread(embedder, socket_path, pairs=make)
    try:
        assert made.wait(30), "the cross-encoder was made only when a pair was asked for"
    finally:
        server.stop()

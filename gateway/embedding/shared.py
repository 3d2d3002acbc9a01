"""One process embeds for every worker of ``serve --workers N``: one model on the GPU, batches
gathered across all the workers' requests, instead of N models each batching only its own.

The workers reach it over a Unix socket (a private directory, mode 0700) with length-prefixed
frames; a worker's own ``MicroBatcher`` sends whatever queued up while its last call was out, and
the server's batcher gathers those of all workers for the GPU:

    hello   server -> client  <I len> + JSON {dim, name, max_length, model_path, pairs}
    request client -> server  <I id><B kind><I len> + JSON list of texts   kind 0 query, 1 bulk
                              kind 2: JSON list of [query, candidate] pairs (the cross-encoder)
    reply   server -> client  <I id><i rows><I len> + rows x dim float32   rows -1: error text
                              (kind 2: rows x 1 float32, the pairs' logits)

The hello says ``pairs: true`` where the process also scores pairs for the workers' cross-encoder
(``learned``; where it runs its models on a GPU): one model in one CUDA context, batched across
workers, instead of one per worker taking turns on the GPU.

Replies come back as they are ready, tagged with their request's id. A worker that loses the
process fails its waiting calls (the cache then passes those requests through, as with any
embedding failure) and connects again on the next call. ``process.py`` starts the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from gateway.embedding.batcher import MicroBatcher
from gateway.embedding.models import Embedder, Vectors

log = logging.getLogger(__name__)

_HELLO = struct.Struct("<I")
_REQUEST = struct.Struct("<IBI")
_REPLY = struct.Struct("<IiI")
QUERY, BULK, PAIRS = 0, 1, 2
MAX_REQUEST_BYTES = 64 << 20


class EmbeddingUnavailable(RuntimeError):
    """The shared embedding process cannot be reached or failed this call."""


class EmbeddingServer:
    """``pairs``: makes the cross-encoder (``logits(pairs)``), in a thread as the server starts
    (not on the first pair asked for: a worker waits for its pairs ``SharedPairModel``'s 2 s,
    and a model made and captured on the GPU can take longer — those pairs were refused)."""

    def __init__(self, embedder: Embedder, path: str, *, wait_s: float, max_batch: int,
                 pairs: Callable[[], Any] | None = None):
        self.embedder, self.path = embedder, path
        self.batcher = MicroBatcher(embedder, wait_s=wait_s, max_batch=max_batch)
        # the workers' pairs, gathered into batches as their queries are
        self._pairs = _Pairs(pairs) if pairs is not None else None
        self.pair_batcher = MicroBatcher(self._pairs or _Pairs(_no_pairs), wait_s=wait_s,  # type: ignore[arg-type]
                                         max_batch=max_batch)
        self.hello = orjson.dumps({
            "dim": embedder.dim, "name": embedder.name,
            "max_length": getattr(embedder, "max_length", None),
            "model_path": getattr(embedder, "model_path", None),
            "pairs": pairs is not None,
        })
        self._clients: set[asyncio.StreamWriter] = set()

    async def serve_forever(self, ready: Callable[[], None] = lambda: None) -> None:
        self.batcher.start()
        self.pair_batcher.start()
        server = await asyncio.start_unix_server(self._client, path=self.path)
        os.chmod(self.path, 0o600)
        ready()
        if self._pairs is not None:
            threading.Thread(target=self._pairs.make_now, name="pair-model", daemon=True).start()
        try:
            async with server:
                await server.serve_forever()
        finally:
            for writer in list(self._clients):  # a closed server leaves its connections open
                writer.close()
            await self.batcher.aclose()
            await self.pair_batcher.aclose()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_HELLO.pack(len(self.hello)) + self.hello)
        answers: set[asyncio.Task[None]] = set()
        self._clients.add(writer)
        try:
            while True:
                req_id, kind, size = _REQUEST.unpack(await reader.readexactly(_REQUEST.size))
                if size > MAX_REQUEST_BYTES:
                    log.warning("embedding request of %d bytes refused; connection closed", size)
                    break
                payload = await reader.readexactly(size)
                task = asyncio.create_task(self._answer(writer, req_id, kind, payload))
                answers.add(task)
                task.add_done_callback(answers.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the worker went away
        finally:
            for task in answers:
                task.cancel()
            self._clients.discard(writer)
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, req_id: int, kind: int,
                      payload: bytes) -> None:
        try:
            texts = orjson.loads(payload)
            if kind == PAIRS:
                pairs = _scorer_input(texts)
                logits = await asyncio.gather(*map(self.pair_batcher.embed, pairs))  # type: ignore[arg-type]
                rows, body = len(pairs), np.asarray(logits, np.float32).tobytes()
                if not writer.is_closing():
                    writer.write(_REPLY.pack(req_id, rows, len(body)) + body)
                return
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise ValueError("a request is a JSON list of strings")
            if kind == BULK:
                vecs = await self.batcher.embed_many(texts)
            else:
                vecs = np.stack(await asyncio.gather(*map(self.batcher.embed, texts))) \
                    if texts else np.empty((0, self.embedder.dim), np.float32)
            rows, body = len(texts), np.ascontiguousarray(vecs, dtype=np.float32).tobytes()
        except ValueError as exc:  # malformed JSON included
            log.warning("malformed embedding request: %s", exc)
            rows, body = -1, f"{type(exc).__name__}: {exc}".encode()
        except Exception as exc:
            log.exception("embedding request failed")
            rows, body = -1, f"{type(exc).__name__}: {exc}".encode()
        if not writer.is_closing():
            writer.write(_REPLY.pack(req_id, rows, len(body)) + body)


class _Pairs:
    """The cross-encoder as ``MicroBatcher`` sees an embedder: ``encode`` of a batch of pairs
    gives one logit each; the model is made as the server starts (``make_now``) or on the first
    batch, whichever comes first."""

    def __init__(self, make: Callable[[], Any]):
        self._make, self._model, self._made = make, None, threading.Lock()

    def model(self) -> Any:
        with self._made:
            if self._model is None:
                self._model = self._make()
            return self._model

    def make_now(self) -> None:
        try:
            self.model()
        except Exception:  # tried again on the first batch; until then its pairs are refused
            log.exception("the cross-encoder could not be made")

    def encode(self, pairs: list[tuple[str, str]]) -> Any:
        return self.model().logits(pairs)


def _no_pairs() -> Any:
    raise ValueError("this embedding process scores no pairs")


def _scorer_input(items: Any) -> list[tuple[str, str]]:
    if not isinstance(items, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(t, str) for t in p)
            for p in items):
        raise ValueError("a pairs request is a JSON list of [query, candidate] strings")
    return [(a, b) for a, b in items]


class RemoteEmbedder:
    """The Embedder protocol, served by an ``EmbeddingServer``. ``aencode`` is the request
    path's (the event loop's, no thread); ``encode`` a blocking call for bulk work."""

    def __init__(self, path: str, timeout_s: float = 30.0):
        self.path, self.timeout_s = path, timeout_s
        with self._blocking() as (_, hello):
            pass
        self.dim, self.name = int(hello["dim"]), str(hello["name"])
        self.max_length = hello.get("max_length")
        self.model_path = hello.get("model_path")
        self.device = "remote"
        self.scores_pairs = bool(hello.get("pairs"))
        self.tokenizer: Any = None
        if self.model_path:  # `unseen` reads the query with the model's own tokenizer
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self._ids = itertools.count(1)
        # the calls waiting on the current connection: each connection has its own, so a lost
        # one fails only its own calls and a reply can only ever meet its own request
        self._pending: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self._connecting = asyncio.Lock()

    @contextlib.contextmanager
    def _blocking(self) -> Any:
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout_s)
            sock.connect(self.path)
        except OSError as exc:
            raise EmbeddingUnavailable(f"embedding process at {self.path}: {exc}") from exc
        with sock:
            (size,) = _HELLO.unpack(_read(sock, _HELLO.size))
            hello = orjson.loads(_read(sock, size))
            if hasattr(self, "dim"):
                self._same_model(hello)
            yield sock, hello

    def _same_model(self, hello: dict[str, Any]) -> None:
        """A process started again must embed with the model this worker's index was built
        with: vectors of another model would be compared with the stored ones."""
        if (int(hello["dim"]), str(hello["name"])) != (self.dim, self.name):
            raise EmbeddingUnavailable(
                f"embedding process at {self.path} now serves {hello['name']} "
                f"(dim {hello['dim']}), not {self.name} (dim {self.dim})")

    def encode(self, texts: list[str]) -> Vectors:
        body = orjson.dumps(texts)
        with self._blocking() as (sock, _):
            sock.sendall(_REQUEST.pack(0, BULK, len(body)) + body)
            _, rows, size = _REPLY.unpack(_read(sock, _REPLY.size))
            return self._checked(self._vectors(rows, _read(sock, size)), texts)

    @staticmethod
    def _checked(vecs: Vectors, texts: list[str]) -> Vectors:
        if len(vecs) != len(texts):  # never hand a query another one's vector
            raise EmbeddingUnavailable(f"{len(vecs)} vectors for {len(texts)} texts")
        return vecs

    async def aencode(self, texts: list[str], *, bulk: bool = False) -> Vectors:
        rows, body = await self._ask(BULK if bulk else QUERY, texts)
        try:
            return self._checked(self._vectors(rows, body), texts)
        except ValueError as exc:  # a body of the wrong size
            raise EmbeddingUnavailable(str(exc)) from exc

    async def ascore(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """The cross-encoder's logit for each pair, computed in the embedding process."""
        rows, body = await self._ask(PAIRS, [list(p) for p in pairs])
        if rows < 0:
            raise EmbeddingUnavailable(f"embedding process: {body.decode(errors='replace')}")
        logits = np.frombuffer(body, dtype=np.float32).copy()
        if rows != len(pairs) or len(logits) != rows:  # never one pair's logit for another
            raise EmbeddingUnavailable(f"{len(logits)} logits for {len(pairs)} pairs")
        return logits

    async def _ask(self, kind: int, items: list[Any]) -> tuple[int, bytes]:
        writer, pending = await self._connect()
        req_id = next(self._ids) & 0xFFFFFFFF
        fut: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        pending[req_id] = fut
        body = orjson.dumps(items)
        writer.write(_REQUEST.pack(req_id, kind, len(body)) + body)
        try:
            return await fut
        finally:
            pending.pop(req_id, None)

    async def _connect(self) -> tuple[asyncio.StreamWriter, dict[int, asyncio.Future[tuple[int, bytes]]]]:
        async with self._connecting:
            if self._writer is not None and not self._writer.is_closing():
                return self._writer, self._pending
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(self.path), self.timeout_s)
                (size,) = _HELLO.unpack(await reader.readexactly(_HELLO.size))
                hello = orjson.loads(await reader.readexactly(size))
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                raise EmbeddingUnavailable(f"embedding process at {self.path}: {exc}") from exc
            try:
                self._same_model(hello)
            except EmbeddingUnavailable:
                writer.close()
                raise
            self._writer, self._pending = writer, {}
            self._reading = asyncio.create_task(
                self._read_replies(reader, writer, self._pending))
            return writer, self._pending

    async def _read_replies(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            pending: dict[int, asyncio.Future[tuple[int, bytes]]]) -> None:
        error: Exception = EmbeddingUnavailable(f"embedding process at {self.path} went away")
        try:
            while True:
                req_id, rows, size = _REPLY.unpack(await reader.readexactly(_REPLY.size))
                body = await reader.readexactly(size)
                fut = pending.get(req_id)
                if fut is None or fut.done():
                    continue
                fut.set_result((rows, body))  # read by the caller, who knows its shape
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            error = EmbeddingUnavailable(f"embedding process at {self.path} went away ({exc})")
        finally:
            writer.close()
            if self._writer is writer:
                self._writer = None
            for fut in pending.values():  # the calls it will never answer
                if not fut.done():
                    fut.set_exception(error)

    def _vectors(self, rows: int, body: bytes) -> Vectors:
        if rows < 0:
            raise EmbeddingUnavailable(f"embedding process: {body.decode(errors='replace')}")
        return np.frombuffer(body, dtype=np.float32).reshape(rows, self.dim).copy()

    async def aclose(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading


def _read(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(left)
        if not chunk:
            raise EmbeddingUnavailable("embedding process closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)

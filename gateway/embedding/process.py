"""The shared embedding process of ``serve --workers N`` (``shared.py``): whether to start one,
and its life: started before the workers, ready once its model is loaded and its socket bound,
started again when it dies, gone with its parent (``serve`` stops it; if ``serve`` is killed,
it notices and exits)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.embedding.loader import load_for
from gateway.embedding.shared import EmbeddingServer, EmbeddingUnavailable

if TYPE_CHECKING:
    from gateway.config import Settings

log = logging.getLogger(__name__)


def wanted(settings: Settings, workers: int) -> bool:
    """Whether ``serve --workers N`` starts one embedding process for its workers."""
    if workers < 2 or not settings.cache_enabled or settings.embedding_server:
        return False
    if settings.embedding_shared != "auto":
        return settings.embedding_shared == "on"
    device = settings.embedding_device
    if device == "auto":
        return _cuda_available()
    return device.startswith("cuda")


def _cuda_available() -> bool:
    """What ``_resolve_device("auto")`` would say, asked of a short-lived child: torch imported
    here would stay in the memory of ``serve``'s supervisor process for as long as it runs."""
    probe = "import torch; print(torch.cuda.is_available())"
    try:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.stdout.strip() == "True"


def _pairs_here(settings: Settings) -> Callable[[], Any] | None:
    """Makes the workers' cross-encoder in this process (on the first pair asked for) where it
    runs on a GPU: one model in one CUDA context for every worker, its pairs batched across
    them. On CPU cores each worker keeps its own (int8, one pair at a time: nothing to gather,
    and one process would do every worker's share)."""
    from gateway.cache.verifier.torch_pairs import pair_model, verifier_device

    device = verifier_device(settings.verifier_device)
    if device == "cpu":
        return None
    return partial(pair_model, settings.embedding_cache_dir, settings.embedding_threads, device)


class EmbeddingProcess:
    """The process, kept running: started and ready (its model loaded, its socket bound) before
    the constructor returns, started again at the same socket when it dies, stopped by
    ``stop``. Raises ``EmbeddingUnavailable`` when the first start fails or takes too long."""

    def __init__(self, timeout_s: float = 300.0, retry_s: float = 1.0):
        self.path = str(Path(tempfile.mkdtemp(prefix="semcache-embed-")) / "embed.sock")
        self.timeout_s, self.retry_s = timeout_s, retry_s
        self._stopping = threading.Event()
        self.proc = self._spawn()
        self._watch = threading.Thread(target=self._keep_running, name="embedding-watch",
                                       daemon=True)
        self._watch.start()

    def _spawn(self) -> Any:
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Event()
        # the child reads its settings from the environment, as the workers do
        proc = ctx.Process(target=_serve, args=(self.path, ready), name="semcache-embedding",
                           daemon=True)
        proc.start()
        deadline = time.monotonic() + self.timeout_s
        while not ready.wait(0.5):
            if not proc.is_alive() or time.monotonic() > deadline:
                proc.kill()
                raise EmbeddingUnavailable(
                    f"the embedding process did not start (exit code {proc.exitcode})")
        log.info("shared embedding process %d ready at %s", proc.pid, self.path)
        return proc

    def _keep_running(self) -> None:
        while not self._stopping.is_set():
            self.proc.join(0.5)
            if self.proc.is_alive() or self._stopping.is_set():
                continue
            log.error("shared embedding process %d exited (code %s); starting it again",
                      self.proc.pid, self.proc.exitcode)
            try:
                self.proc = self._spawn()
            except EmbeddingUnavailable:
                log.exception("shared embedding process not restarted; retrying")
            self._stopping.wait(self.retry_s)

    def stop(self) -> None:
        self._stopping.set()
        self._watch.join(self.timeout_s)
        self.proc.terminate()
        self.proc.join(10)
        shutil.rmtree(os.path.dirname(self.path), ignore_errors=True)


def _serve(path: str, ready: Any) -> None:  # the child's main
    from gateway.config import Settings
    from gateway.logs import configure

    # the environment names this process's own socket once the workers have it: not for us
    settings = Settings().model_copy(update={"embedding_server": None})
    configure(settings.log_level)
    embedder = load_for(settings)
    server = EmbeddingServer(embedder, path, wait_s=settings.batch_wait_s(shared_process=True),
                             max_batch=settings.embedding_max_batch,
                             pairs=_pairs_here(settings))
    parent = os.getppid()

    async def main() -> None:
        async def orphaned() -> None:  # the parent died without stopping us
            while os.getppid() == parent:  # noqa: ASYNC110 - polling is the only way to see it
                await asyncio.sleep(1.0)
            raise SystemExit(0)

        watch = asyncio.create_task(orphaned())
        serving = asyncio.create_task(server.serve_forever(ready.set))
        await asyncio.wait({watch, serving}, return_when=asyncio.FIRST_COMPLETED)

    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        asyncio.run(main())

"""The shared embedding process of ``serve --workers N`` (``shared.py``): whether to start one,
and its life: started before the workers, ready once its model is loaded and its socket bound,
gone with its parent (``serve`` stops it; if ``serve`` is killed, it notices and exits)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.embedding.loader import load_for
from gateway.embedding.models import resolve_device
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
        device = resolve_device(device)
    return device.startswith("cuda")


def start_process(settings: Settings, timeout_s: float = 300.0) -> tuple[Any, str]:
    """The embedding process, started and ready (its model loaded, its socket bound), and the
    socket's path. Raises ``EmbeddingUnavailable`` if it dies or is not ready in time."""
    path = str(Path(tempfile.mkdtemp(prefix="semcache-embed-")) / "embed.sock")
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    # the child reads its settings from the environment, as the workers do
    proc = ctx.Process(target=_serve, args=(path, ready), name="semcache-embedding", daemon=True)
    proc.start()
    waited = 0.0
    while not ready.wait(0.5):
        waited += 0.5
        if not proc.is_alive() or waited >= timeout_s:
            proc.kill()
            raise EmbeddingUnavailable(
                f"the embedding process did not start (exit code {proc.exitcode})")
    log.info("shared embedding process %d ready at %s", proc.pid, path)
    return proc, path


def _serve(path: str, ready: Any) -> None:  # the child's main
    from gateway.config import Settings
    from gateway.logs import configure

    settings = Settings()
    configure(settings.log_level)
    embedder = load_for(settings)
    server = EmbeddingServer(embedder, path, wait_s=settings.embedding_batch_wait_ms / 1000,
                             max_batch=settings.embedding_max_batch)
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

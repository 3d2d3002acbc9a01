"""Start the fake upstream and a gateway as separate processes for benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import yaml

from gateway.devtools.serverthread import free_port

# the CLI by module, not its console script: a machine may have the code on PYTHONPATH only
CLI = [sys.executable, "-m", "gateway.cli"]


def _wait(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


@contextmanager
def fake_upstream(*extra: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([*CLI, "fake-upstream", "--port", str(port), "--chunk-delay-ms", "0",
                             *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(f"http://127.0.0.1:{port}/v1/models")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


@contextmanager
def gateway(upstream: str, database_url: str, *args: str, **env: str) -> Iterator[str]:
    port = free_port()
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", "SEMCACHE_LOG_LEVEL": "warning",
               "SEMCACHE_DATABASE_URL": database_url, **env}
    # SEMCACHE_BENCH_LOG=FILE: the gateway's log goes there (appended), not away
    log_to = os.environ.get("SEMCACHE_BENCH_LOG")
    err = open(log_to, "ab") if log_to else subprocess.DEVNULL
    proc = subprocess.Popen(
        [*CLI, "serve", "--upstream", f"{upstream}/v1", "--port", str(port), *args],
        env=environ, stdout=subprocess.DEVNULL, stderr=err)
    try:
        _wait(f"http://127.0.0.1:{port}/readyz")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()
        if log_to:
            err.close()


def cross_encoder_off(path: Path) -> Path:
    """An overlay (``SEMCACHE_CATEGORIES_OVERLAY``) turning the cross-encoder off in every
    shipped category that has it on: the rules alone. An overlay replaces a category's whole
    ``verification``, so each one is the shipped one with that one field changed."""
    from gateway.categories import load_categories
    from gateway.resources import categories_dir

    cats = load_categories(categories_dir())
    off = {name: {"verification": {**c.verification.model_dump(mode="json"),
                                   "cross_encoder": False}}
           for name, c in cats.items() if c.verification.cross_encoder}
    path.write_text(yaml.safe_dump(off))
    return path

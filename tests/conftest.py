from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.config import Settings
from gateway.fake_upstream import create_fake_app
from gateway.serverthread import ServerThread


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[ServerThread]:
    with ServerThread(create_fake_app()) as server:
        yield server


@pytest.fixture
def upstream_stats(fake_upstream: ServerThread) -> Callable[[], dict[str, int]]:
    httpx.post(f"{fake_upstream.url}/fake/reset")

    def stats() -> dict[str, int]:
        counts: dict[str, int] = httpx.get(f"{fake_upstream.url}/fake/stats").json()["requests"]
        return counts

    return stats


GatewayFactory = Callable[..., ServerThread]


@pytest.fixture
def gateway_factory(fake_upstream: ServerThread) -> Iterator[GatewayFactory]:
    """Start gateways over real HTTP; each one is stopped at the end of the test."""
    started: list[ServerThread] = []

    def make(embedder: Any = None, **overrides: Any) -> ServerThread:
        overrides.setdefault("upstream_url", f"{fake_upstream.url}/v1")
        server = ServerThread(create_app(Settings(**overrides), embedder=embedder)).start()
        started.append(server)
        return server

    yield make
    for server in reversed(started):
        server.stop()

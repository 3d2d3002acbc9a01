from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import gc
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from gateway.app import create_app
from gateway.config import Settings
from gateway.devtools.fake_upstream import create_fake_app
from gateway.devtools.serverthread import ServerThread
from gateway.embedding import SentenceTransformerEmbedder
from gateway.resources import categories_dir
from tests.clients import close_all


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """A collection after every test: an object leaked open (a database connection, a socket)
    warns — and fails, warnings being errors — in the test that leaked it, not at a random later
    collection (the test's OpenAI clients are closed first: ``tests.clients``)."""
    yield
    close_all()
    gc.collect()


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
        settings = Settings(**overrides)
        server = ServerThread(create_app(settings, embedder=embedder),
                              header_timeout_s=settings.client_header_timeout_s).start()
        started.append(server)
        if settings.cache_enabled:
            wait_ready(server.url)
        return server

    yield make
    for server in reversed(started):
        server.stop()


def wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while httpx.get(f"{url}/readyz").status_code != 200:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} never became ready")
        time.sleep(0.05)


@pytest.fixture
def cats(tmp_path: Path) -> Path:
    """A copy of the packaged categories that a test may edit (and reload)."""
    d = tmp_path / "categories"
    shutil.copytree(categories_dir(), d)
    return d


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    """The real default model, loaded once for the whole session."""
    return SentenceTransformerEmbedder(device="cpu")


PG_URL = os.environ.get(
    "SEMCACHE_TEST_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)
REQUIRE_PG = os.environ.get("SEMCACHE_REQUIRE_PG") == "1"


def _pg_schema_url() -> Iterator[str]:
    try:
        engine = sa.create_engine(PG_URL)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        reason = f"PostgreSQL at {PG_URL} unreachable ({type(exc).__name__}); set SEMCACHE_TEST_PG_URL"
        if REQUIRE_PG:
            pytest.fail(reason + " (SEMCACHE_REQUIRE_PG=1 makes this a failure)")
        pytest.skip(reason)
    schema = "semcache_test_" + uuid.uuid4().hex[:12]
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A fresh, empty document store: a SQLite file, or a new schema in the real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/cache.db"
    else:
        yield from _pg_schema_url()


# --- CI: a skipped test is a failed run -------------------------------------------------
# Under any SEMCACHE_REQUIRE_* flag (``.ci/run`` sets them) every test must run: a skip there
# means a part of the promise went unchecked (a missing tool, an unreachable service).
_REQUIRED = any(v == "1" for k, v in os.environ.items() if k.startswith("SEMCACHE_REQUIRE_"))
_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if _REQUIRED and report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _REQUIRED and _skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _REQUIRED and _skipped:
        terminalreporter.write_line(
            f"FAILED: {len(_skipped)} test(s) skipped under SEMCACHE_REQUIRE_*: "
            + ", ".join(_skipped[:10]), red=True)

"""kill -9 during a burst of writes, then restart: nothing acknowledged is lost, every entry is
complete, index and store agree.

"Acknowledged" means the client received the whole answer: the full body of a non-streamed
response, or the ``data: [DONE]`` event of a stream. The gateway commits the entry before either
is sent, so every acknowledged answer must be served from cache after the restart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from gateway.devtools.serverthread import ServerThread, free_port

BIN = str(Path(sys.executable).parent / "semcache")


def start_gateway(upstream: str, database_url: str, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SEMCACHE_DATABASE_URL": database_url,
           "SEMCACHE_ADMIN_KEY": "adm", "SEMCACHE_LOG_LEVEL": "warning",
           "SEMCACHE_EMBEDDING_CACHE_DIR": str(tmp / "onnx")}
    with (tmp / f"gateway-{port}.log").open("wb") as log:  # the child keeps its own copy
        proc = subprocess.Popen(
            [BIN, "serve", "--upstream", f"{upstream}/v1", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, (tmp / f"gateway-{port}.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "gateway did not become ready"
        time.sleep(0.2)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def ask(url: str, q: str, stream: bool) -> str | None:
    """The answer if it was acknowledged (complete), else None."""
    body = {"model": "fake-small", "stream": stream,
            "messages": [{"role": "user", "content": q}]}
    headers = {"authorization": "Bearer sk-crash"}
    try:
        if not stream:
            r = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30)
            return r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else None
        parts, done = [], False
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers,
                          timeout=30) as r:
            for line in r.iter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: "):
                    for ch in json.loads(line[6:]).get("choices", []):
                        parts.append((ch.get("delta") or {}).get("content") or "")
        return "".join(parts) if done else None
    except (httpx.HTTPError, ValueError, KeyError):
        return None


def test_kill_9_during_writes_loses_nothing_acknowledged(
    fake_upstream: ServerThread, database_url: str, tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    proc, url = start_gateway(fake_upstream.url, database_url, tmp_path)
    processes.append(proc)
    acked: dict[str, str] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(worker: int) -> None:
        i = 0
        while not stop.is_set():
            q = f"Worker {worker} asks about topic number {i} in great detail"
            answer = ask(url, q, stream=i % 2 == 1)
            if answer is not None:
                with lock:
                    acked[q] = answer
            i += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # mid-burst: requests are in flight
    proc.wait()
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) >= 40

    proc2, url2 = start_gateway(fake_upstream.url, database_url, tmp_path)
    processes.append(proc2)
    for q, answer in acked.items():
        r = httpx.post(f"{url2}/v1/chat/completions", headers={"authorization": "Bearer sk-crash"},
                       json={"model": "fake-small", "messages": [{"role": "user", "content": q}]})
        assert r.headers["x-semcache"] == "hit", f"acknowledged answer lost: {q}"
        assert r.json()["choices"][0]["message"]["content"] == answer

    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT response FROM cache_entries")).all()
    engine.dispose()
    for (response,) in rows:  # every stored entry is a complete answer
        obj = json.loads(response)
        assert obj["choices"][0]["finish_reason"] == "stop"
        assert obj["choices"][0]["message"]["content"]
    stats = httpx.get(f"{url2}/admin/stats", headers={"authorization": "Bearer adm"}).json()
    for name, cat in stats["categories"].items():
        assert cat["entries"] == cat["stored_rows"], (name, cat)

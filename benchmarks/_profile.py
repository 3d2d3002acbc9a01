"""Where a gateway process's CPU goes: py-spy samples (``--nonblocking``, only threads that run)
sorted into the boxes of the request path by the innermost frame that names one."""

from __future__ import annotations

import collections
import shutil
import subprocess
import tempfile
from pathlib import Path

# (area, substrings of a frame "function (path:line)"), the innermost match wins
AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("model (ONNX Runtime / torch / CUDA)", ("onnxruntime", "torch/", "gateway/embedding/gpu.py")),
    ("tokenizer", ("tokeniz",)),
    ("store (SQLAlchemy, SQLite)", ("sqlalchemy/", "sqlite", "gateway/cache/store.py")),
    ("index (hnswlib)", ("gateway/cache/index.py",)),
    ("verifier", ("gateway/cache/verifier/",)),
    ("lookup", ("gateway/cache/lookup.py",)),
    ("classify", ("gateway/categories.py",)),
    ("keys and scope", ("gateway/cache/keys.py",)),
    ("hit rendering", ("gateway/cache/replies.py",)),
    ("embedding client and batcher", ("gateway/embedding/",)),
    ("upstream client (httpx)", ("httpx/", "httpcore/", "gateway/backend/")),
    ("metrics", ("prometheus_client", "gateway/metrics.py")),
    ("validation (pydantic)", ("pydantic", "gateway/protocol.py")),
    ("cache service", ("gateway/cache/",)),
    ("HTTP server and framework", ("uvicorn/", "starlette/", "fastapi/", "anyio/", "h11/",
                                   "gateway/middleware.py", "gateway/httpserver.py",
                                   "gateway/api/")),
    ("event loop, threads, hops", ("asyncio/", "concurrent/", "threading.py", "queue.py")),
)


# leaf frames of a thread that waits (py-spy without --idle still reports some of them: a C
# call that blocks in the event loop's poll or a queue's lock looks like work to it)
WAITING = ("Runner.run (", "_worker (concurrent/futures/thread.py", "Condition.wait (",
           "Event.wait (", "Queue.get (", "select (", "run_forever (")


def area(frames: list[str]) -> str:
    if frames and frames[-1].startswith(WAITING):
        return "waiting (poll, queues)"
    for frame in reversed(frames):
        for name, marks in AREAS:
            if any(m in frame for m in marks):
                return name
    return "other"


def record(pid: int, seconds: int, rate: int = 100) -> collections.Counter[str] | None:
    """Samples of ``pid`` by area, or None where py-spy is missing or may not attach."""
    if shutil.which("py-spy") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "raw.txt"
        done = subprocess.run(
            ["py-spy", "record", "--nonblocking", "-r", str(rate), "-d", str(seconds), "-f", "raw",
             "-o", str(out), "-p", str(pid)], capture_output=True, text=True)
        if done.returncode != 0 or not out.exists():
            return None
        counts: collections.Counter[str] = collections.Counter()
        for line in out.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if stack and n.isdigit():
                counts[area(stack.split(";")[1:])] += int(n)
        return counts


def role(pid: int) -> str:
    """"embedding" (the shared embedding process), "worker" or "other" (multiprocessing's
    resource tracker), from a py-spy dump."""
    if shutil.which("py-spy") is None:
        return "other"
    dump = subprocess.run(["py-spy", "dump", "--nonblocking", "-p", str(pid)],
                          capture_output=True, text=True).stdout
    if "gateway/embedding/process.py" in dump:
        return "embedding"
    return "worker" if "uvicorn" in dump else "other"


def gateway_children(upstream: str) -> list[int]:
    """The processes of ``semcache serve --upstream UPSTREAM/v1 --workers N`` under it."""
    parents = subprocess.run(["pgrep", "-f", f"serve --upstream {upstream}/v1"],
                             capture_output=True, text=True).stdout.split()
    return [int(k) for p in parents for k in subprocess.run(
        ["pgrep", "-P", p], capture_output=True, text=True).stdout.split()]


def table(profiles: dict[str, collections.Counter[str]]) -> list[str]:
    """Markdown rows: per process, the share of its samples in each area (1% or more)."""
    rows = ["| process | area | share of its samples |", "|---|---|---:|"]
    for name, counts in profiles.items():
        total = sum(counts.values()) or 1
        for a, n in counts.most_common():
            if n / total >= 0.01:
                rows.append(f"| {name} | {a} | {n / total:.0%} |")
    return rows

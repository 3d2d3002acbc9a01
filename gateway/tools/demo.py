"""``semcache demo``: the gateway on embedded defaults in front of the built-in fake LLM
(or, with ``--real-model``, llama.cpp's server running SmolLM2-135M-Instruct on the CPU).

A small mixed workload (paraphrases across categories, plus near-misses that must *not* hit)
goes through the official openai client; the table shows what the cache did per category.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# Each group: questions meant to get the same answer (the first is asked first).
PARAPHRASES: list[list[str]] = [
    ["Who is the author of Hamlet?", "Who wrote Hamlet?", "Which writer wrote Hamlet?"],
    ["What is the capital of Australia?", "Which city is the capital of Australia?",
     "Tell me the capital city of Australia"],
    ["How does photosynthesis work?", "Explain how photosynthesis works",
     "Can you explain the process of photosynthesis?"],
    ["Tell me a joke", "Can you tell me a joke?", "Tell me something funny, a joke"],
    ["Hi, how are you?", "Hello, how are you?", "hi there, how are you doing?"],
    ["How do I reverse a string in Python?", "How can I reverse a string in Python?",
     "What is the way to reverse a Python string?"],
    ["How do I undo the last git commit but keep the changes?",
     "How can I undo my last git commit and keep the changes?"],
    ["What is 15 percent of 200?", "Calculate 15% of 200", "What's 15 percent of 200?"],
    ["What is Apple's stock price right now?", "What's Apple's stock price right now?"],
    ["Write a haiku about autumn leaves", "Write a haiku about autumn leaves please"],
    ["How can I improve my sleep?", "What can I do to improve my sleep?",
     "Tips to improve my sleep"],
    ["What is my account balance?", "Show me my account balance"],
]
# Near misses: similar wording, different question. A hit here would be a wrong answer.
NEAR_MISSES: list[str] = [
    "Who is the author of Macbeth?",
    "What is the capital of Austria?",
    "How do I reverse a string in Java?",
    "What is 25 percent of 200?",
    "What is Microsoft's stock price right now?",
    "Write a haiku about spring rain",
]


@dataclass
class Row:
    requests: int = 0
    hits: int = 0
    bypass: int = 0
    sims: list[float] | None = None


@contextmanager
def _upstream(real_model: bool) -> Iterator[str]:
    """The backend's OpenAI base URL: the built-in fake LLM, or the real model's server."""
    if real_model:
        from gateway.devtools.real_model import llama_server
        from gateway.devtools.serverthread import free_port

        with llama_server(free_port()) as base:
            yield base
        return
    from gateway.devtools.fake_upstream import create_fake_app
    from gateway.devtools.serverthread import ServerThread

    with ServerThread(create_fake_app()) as upstream:
        yield f"{upstream.url}/v1"


@contextmanager
def local_stack(database_url: str | None = None, real_model: bool = False) -> Iterator[str]:
    """A backend and a gateway in front of it (loopback); the gateway's URL. Without
    ``database_url`` the store is a temporary SQLite file."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import httpx

    from gateway.app import create_app
    from gateway.config import Settings
    from gateway.devtools.serverthread import ServerThread

    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite:///{tmp}/demo.db"
        with _upstream(real_model) as upstream_url:
            settings = Settings(upstream_url=upstream_url, database_url=url)
            with ServerThread(create_app(settings)) as gateway:
                deadline = time.monotonic() + 120
                while httpx.get(f"{gateway.url}/readyz").status_code != 200:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the gateway did not become ready")
                    time.sleep(0.05)
                yield gateway.url


def run(database_url: str | None, echo: Callable[[str], None] = print,
        real_model: bool = False) -> dict[str, Row]:
    import openai

    with local_stack(database_url, real_model) as gateway_url:
        client = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="demo")
        rows: dict[str, Row] = defaultdict(Row)
        wrong = 0
        model = "smollm2-135m-instruct" if real_model else "fake-small"
        # a real model's answer cut at max_tokens (finish_reason "length") is never stored:
        # ask for short answers so most of them finish
        system = [{"role": "system", "content": "Answer in one or two short sentences."}] \
            if real_model else []

        def ask(q: str) -> tuple[str, str, float | None, str]:
            raw = client.chat.completions.with_raw_response.create(
                model=model, messages=[*system, {"role": "user", "content": q}],  # type: ignore[list-item]
                max_tokens=96, temperature=0,
            )
            h = raw.headers
            sim = h.get("x-semcache-similarity")
            answer = raw.parse().choices[0].message.content or ""
            return h["x-semcache"], h.get("x-semcache-category", "-"), (
                float(sim) if sim else None), answer

        for group in PARAPHRASES:
            for q in group:
                outcome, cat, sim, answer = ask(q)
                row = rows[cat]
                row.requests += 1
                row.hits += outcome == "hit"
                row.bypass += outcome == "bypass"
                if sim is not None:
                    row.sims = [*(row.sims or []), sim]
                echo(f"  {outcome:6} {cat:13} {f'{sim:.3f}' if sim else '     '}  {q}")
                if real_model:
                    echo(f"{'':24}-> {' '.join(answer.split())[:100]}")
        echo("near misses (a hit would be a wrong answer):")
        for q in NEAR_MISSES:
            outcome, cat, sim, _ = ask(q)
            rows[cat].requests += 1
            wrong += outcome == "hit"
            echo(f"  {outcome:6} {cat:13} {f'{sim:.3f}' if sim else '     '}  {q}")
        client.close()
    echo("")
    echo(f"{'category':14}{'requests':>9}{'hits':>6}{'hit rate':>10}{'mean sim':>10}{'bypass':>8}")
    for cat in sorted(rows):
        r = rows[cat]
        mean = f"{sum(r.sims) / len(r.sims):.3f}" if r.sims else "-"
        echo(f"{cat:14}{r.requests:>9}{r.hits:>6}{r.hits / r.requests:>10.0%}{mean:>10}{r.bypass:>8}")
    total = sum(r.requests for r in rows.values())
    hits = sum(r.hits for r in rows.values())
    echo(f"{'all':14}{total:>9}{hits:>6}{hits / total:>10.0%}")
    echo(f"wrong hits on near misses: {wrong} of {len(NEAR_MISSES)}")
    if real_model:
        echo("(an answer cut at max_tokens, finish_reason 'length', is not stored: its "
             "paraphrases miss)")
    return dict(rows)

"""OpenAI clients for tests, each closed when its test ends.

An ``openai.OpenAI`` client sits in a reference cycle (the client and its resources point at
each other), so one left open is freed by the garbage collector, which finalizes a cycle's
objects in no set order: now and then its pooled socket before the client that would have closed
it — a ``ResourceWarning`` (an error here) in the collection after the test, at random. Tests make
their clients here, or in a ``with`` block; ``test_layout`` checks it.
"""

from __future__ import annotations

from typing import Any

import openai

_OPEN: list[openai.OpenAI] = []


def openai_client(base_url: str, **kw: Any) -> openai.OpenAI:
    """A client for ``base_url`` (…/v1), no retries, closed after the test."""
    kw.setdefault("api_key", "sk-test")
    kw.setdefault("max_retries", 0)
    client = openai.OpenAI(base_url=base_url, **kw)
    _OPEN.append(client)
    return client


def close_all() -> None:
    while _OPEN:
        _OPEN.pop().close()

"""A request's chunks: the retrieved passages a RAG client sends along with its question.

Given in standard OpenAI shapes:

* a message whose ``content`` is a list of text parts: each part is one chunk;
* optionally (``SEMCACHE_CHUNK_DELIMITER``), a delimiter inside a message's text (or a
  completion's prompt): each piece is one chunk.

In the *last* message (or the prompt) the final part/piece is the question itself, not a chunk,
when there is more than one: ``[passage, passage, question]`` is the usual RAG layout, and the
question is what varies. A chunk is identified by the SHA-256 of its text after Unicode NFC and
trimming of the outer whitespace — nothing more, because a KV cache is reused only for the same
tokens: two passages that differ in case or inner spacing are different chunks to the engine.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Chunk:
    digest: bytes      # 16 bytes of SHA-256 of the normalised text
    text: str
    tokens: int        # estimated (about 4 characters per token) unless a tokenizer counted


def normalise(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip()


def make_chunk(text: str) -> Chunk:
    norm = normalise(text)
    return Chunk(hashlib.sha256(norm.encode()).digest()[:16], norm, max(1, len(norm) // 4))


def _parts(content: Any) -> list[str] | None:
    """The text parts of a list content (None when it is not a list of text parts only)."""
    if not isinstance(content, list) or not content:
        return None
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text":
            return None
        texts.append(str(part.get("text") or ""))
    return texts


def split_pieces(content: Any, delimiter: str | None) -> list[str] | None:
    """A message content (or prompt) as its pieces, or None when it has no chunk structure."""
    parts = _parts(content)
    if parts is not None:
        return parts
    if delimiter and isinstance(content, str) and delimiter in content:
        return content.split(delimiter)
    return None


def layout(messages: list[Any], delimiter: str | None
           ) -> list[tuple[Any, list[str], str | None]]:
    """Each message with its chunk texts and its own text: the question of a last message
    that has chunks, else None (a message without chunks is all its own)."""
    out: list[tuple[Any, list[str], str | None]] = []
    for i, msg in enumerate(messages):
        pieces = split_pieces(msg.get("content"), delimiter) if isinstance(msg, dict) else None
        if pieces is None:
            out.append((msg, [], None))
            continue
        own = pieces[-1] if i == len(messages) - 1 and len(pieces) > 1 else None
        chunks = pieces[:-1] if own is not None else pieces
        out.append((msg, [p for p in chunks if normalise(p)], own))
    return out


def chat_chunks(messages: list[Any], delimiter: str | None) -> list[Chunk]:
    return [make_chunk(c) for _, chunks, _ in layout(messages, delimiter) for c in chunks]


def prompt_chunks(prompt: Any, delimiter: str | None) -> list[Chunk]:
    pieces = split_pieces(prompt, delimiter) if isinstance(prompt, str) else None
    if pieces is None or len(pieces) < 2:
        return []
    return [make_chunk(p) for p in pieces[:-1] if normalise(p)]


def request_chunks(endpoint: str, data: dict[str, Any], delimiter: str | None) -> list[Chunk]:
    """The chunks of a (chat) completion request body, in order, duplicates removed."""
    if endpoint == "chat":
        found = chat_chunks(data.get("messages") or [], delimiter)
    else:
        found = prompt_chunks(data.get("prompt"), delimiter)
    seen: set[bytes] = set()
    unique = []
    for c in found:
        if c.digest not in seen:
            seen.add(c.digest)
            unique.append(c)
    return unique

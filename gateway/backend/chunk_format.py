"""How a request's chunks are laid out for a backend (``chunk_format`` per backend).

Isolated here so it can follow LMCache as it changes. What each format is for:

* ``none`` — forward unchanged (default).
* ``messages`` — LMCache's multi-process CacheBlend treats each user message as one document:
  every chunk becomes its own message (same role), the question last; no separator.
* ``canonical-order`` — stock prefix caching (vLLM APC, LMCache without blending) reuses only
  an identical *prefix*: the chunk set goes right after the system prompt in a stable order
  (by chunk hash), so the same passages retrieved in another order form the same prefix.
* ``blend-separator`` — LMCache's in-process CacheBlend (examples/blend_kv_v1 in the LMCache
  repository: ``blend.py`` builds ``sys + sep + chunk1 + sep + chunk2 + ... + sep + question``
  as *token ids*, each piece encoded separately without BOS, ``sep`` being the ids of
  ``blend_special_str``, default ``" # # "``). Joining text is not enough: the separator
  tokenises differently inside text, and the engine finds chunk boundaries by the separator's
  ids. So each piece is tokenised alone with the backend model's tokenizer, the id lists are
  joined with the separator's ids, and the request goes to ``/v1/completions`` with ``prompt``
  as ids; a chat request is first rendered with the model's chat template (chunks replaced by
  markers, then split at them), and the completion the engine returns is turned back into a
  chat completion (JSON or stream) for the client. Requests the template cannot express
  faithfully (tools, functions, response_format) are sent unchanged.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.backend.chunks import Chunk, layout, make_chunk, split_pieces
from gateway.config import Backend
from gateway.protocol import PATHS, SYSTEM_ROLES
from gateway.streaming import DONE, SSEParser, encode_event


@dataclass
class Prepared:
    path: str
    body: bytes
    convert: ChatFromCompletion | None = None


class Formatter:
    def __init__(self, cfg: Backend, delimiter: str | None):
        self.cfg = cfg
        self.delimiter = delimiter

    def prepare(self, endpoint: str, data: dict[str, Any], raw: bytes) -> Prepared:
        raise NotImplementedError

    def layout(self, messages: list[Any]) -> list[tuple[Any, list[str], str | None]]:
        return layout(messages, self.delimiter)


class PerMessage(Formatter):
    def prepare(self, endpoint: str, data: dict[str, Any], raw: bytes) -> Prepared:
        if endpoint != "chat":
            return Prepared(PATHS[endpoint], raw)
        messages: list[Any] = []
        for msg, chunks, own in self.layout(data["messages"]):
            if not chunks and own is None:
                messages.append(msg)
                continue
            messages += [{**msg, "content": c} for c in chunks]
            if own is not None:
                messages.append({**msg, "content": own})
        return Prepared(PATHS[endpoint], orjson.dumps({**data, "messages": messages}))


class CanonicalOrder(Formatter):
    def prepare(self, endpoint: str, data: dict[str, Any], raw: bytes) -> Prepared:
        if endpoint != "chat":
            pieces = split_pieces(data.get("prompt"), self.delimiter)
            if pieces is None or len(pieces) < 2 or not self.delimiter:
                return Prepared(PATHS[endpoint], raw)
            ordered = sorted({make_chunk(p).digest: p for p in pieces[:-1]}.items())
            prompt = self.delimiter.join([p for _, p in ordered] + [pieces[-1]])
            return Prepared(PATHS[endpoint], orjson.dumps({**data, "prompt": prompt}))
        found: dict[bytes, str] = {}
        rest: list[Any] = []
        for msg, chunks, own in self.layout(data["messages"]):
            for c in chunks:
                found.setdefault(make_chunk(c).digest, c)
            if not chunks and own is None:
                rest.append(msg)
            elif own is not None:
                rest.append({**msg, "content": own})
        lead = 0
        while lead < len(rest) and isinstance(rest[lead], dict) \
                and rest[lead].get("role") in SYSTEM_ROLES:
            lead += 1
        block = {"role": "user", "content": [{"type": "text", "text": text}
                                             for _, text in sorted(found.items())]}
        messages = [*rest[:lead], block, *rest[lead:]]
        return Prepared(PATHS[endpoint], orjson.dumps({**data, "messages": messages}))


_MARK = re.compile("\x00chunk(\\d+)\x00")
_UNFAITHFUL = ("tools", "functions", "response_format", "tool_choice")
_KEEP = ("model", "max_tokens", "temperature", "top_p", "n", "stop", "stream",
         "stream_options", "seed", "presence_penalty", "frequency_penalty", "user", "logit_bias")


class BlendSeparator(Formatter):
    def __init__(self, cfg: Backend, delimiter: str | None):
        super().__init__(cfg, delimiter)
        if cfg.tokenizer is None:
            raise ValueError(f"backend {cfg.label()}: chunk_format blend-separator needs "
                             "`tokenizer`, a local directory of the model's tokenizer")
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(cfg.tokenizer), local_files_only=True)
        self.separator = self.encode(cfg.blend_separator)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer.encode(text, add_special_tokens=False)
        return ids

    def join(self, pieces: list[str]) -> list[int]:
        ids: list[int] = []
        for n, piece in enumerate(p for p in pieces if p):
            if n:
                ids += self.separator
            ids += self.encode(piece)
        return ids

    def prepare(self, endpoint: str, data: dict[str, Any], raw: bytes) -> Prepared:
        body = {k: data[k] for k in _KEEP if k in data}
        if "max_completion_tokens" in data and "max_tokens" not in body:
            body["max_tokens"] = data["max_completion_tokens"]
        if endpoint != "chat":
            pieces = split_pieces(data.get("prompt"), self.delimiter)
            if pieces is None:
                return Prepared(PATHS[endpoint], raw)
            return Prepared("completions", orjson.dumps({**body, "prompt": self.join(pieces)}))
        if any(data.get(k) for k in _UNFAITHFUL) or self.tokenizer.chat_template is None:
            return Prepared(PATHS[endpoint], raw)
        texts: list[str] = []
        messages = []
        for msg, chunks, own in self.layout(data["messages"]):
            if not chunks and own is None:
                content = msg.get("content")
                if isinstance(content, list):  # text parts without chunk meaning: join them
                    content = "".join(str(p.get("text", "")) for p in content)
                messages.append({"role": msg.get("role"), "content": content or ""})
                continue
            marks = ""
            for c in chunks:
                marks += f"\x00chunk{len(texts)}\x00"
                texts.append(c)
            messages.append({"role": msg.get("role"), "content": marks + (own or "")})
        rendered: str = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True)
        parts = _MARK.split(rendered)  # text, index, text, index, ..., text
        pieces = [parts[0]]
        for k in range(1, len(parts), 2):
            pieces += [texts[int(parts[k])], parts[k + 1]]
        prompt = self.join(pieces)
        return Prepared("completions", orjson.dumps({**body, "prompt": prompt}),
                        ChatFromCompletion())


def formatter(cfg: Backend, delimiter: str | None = None) -> Formatter | None:
    kinds: dict[str, type[Formatter]] = {
        "messages": PerMessage, "canonical-order": CanonicalOrder,
        "blend-separator": BlendSeparator,
    }
    kind = kinds.get(cfg.chunk_format)
    return kind(cfg, delimiter) if kind is not None else None


def prepare(fmt: Formatter | None, endpoint: str, data: Any, raw: bytes,
            chunks: list[Chunk]) -> Prepared:
    if fmt is None or not isinstance(data, dict) or not chunks:
        return Prepared(PATHS[endpoint], raw)
    return fmt.prepare(endpoint, data, raw)


class ChatFromCompletion:
    """A text completion (JSON or event stream) as the chat completion the client asked for."""

    def __init__(self) -> None:
        self._started: set[int] = set()

    def body(self, content: bytes) -> bytes:
        try:
            obj = orjson.loads(content)
        except orjson.JSONDecodeError:
            return content
        if not isinstance(obj, dict) or "choices" not in obj:
            return content  # an error body: as it is
        obj["object"] = "chat.completion"
        obj["id"] = _chat_id(obj.get("id"))
        obj["choices"] = [
            {"index": c.get("index", 0), "finish_reason": c.get("finish_reason"),
             "logprobs": None,
             "message": {"role": "assistant", "content": c.get("text", "")}}
            for c in obj["choices"]]
        return orjson.dumps(obj)

    def event(self, data: str) -> bytes:
        if data.strip() == "[DONE]":
            return DONE
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return b"data: " + data.encode() + b"\n\n"
        if not isinstance(obj, dict) or "choices" not in obj:
            return encode_event(obj)
        obj["object"] = "chat.completion.chunk"
        obj["id"] = _chat_id(obj.get("id"))
        choices = []
        for c in obj["choices"]:
            i = c.get("index", 0)
            delta: dict[str, Any] = {}
            if i not in self._started:
                self._started.add(i)
                delta["role"] = "assistant"
            if c.get("text"):
                delta["content"] = c["text"]
            choices.append({"index": i, "delta": delta, "logprobs": None,
                            "finish_reason": c.get("finish_reason")})
        obj["choices"] = choices
        return encode_event(obj)

    async def stream(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        parser = SSEParser()
        async for chunk in chunks:
            out = b"".join(self.event(data) for data in parser.feed(chunk))
            if out:
                yield out


def _chat_id(rid: Any) -> str:
    rid = str(rid or "")
    return "chatcmpl-" + rid.removeprefix("cmpl-")

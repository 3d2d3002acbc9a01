"""Server-sent events: parse a live stream, assemble it into one response, replay a stored one.

OpenAI streams are ``data: {json}\n\n`` events ending with ``data: [DONE]``. A live upstream
stream is forwarded byte for byte while a parser reads a copy of it (the tee); what it assembles
is stored only if every choice finished with ``finish_reason == "stop"`` and no error event came.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.protocol import Endpoint

DONE = b"data: [DONE]\n\n"
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


def encode_event(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


class SSEParser:
    """Incremental: feed bytes as they come, get the ``data`` payload of each complete event.

    Linear in the bytes fed: the buffer grows in place, each search starts where the last one
    stopped (less the three bytes a split event end can hide in), and consumed events are cut
    off once per feed — a single 20 MB event arriving in small chunks is no longer quadratic."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._scanned = 0  # no event end starts before this offset

    def feed(self, chunk: bytes) -> list[str]:
        buf = self._buf
        buf += chunk
        out: list[str] = []
        pos = 0
        while True:
            m = _EVENT_END.search(buf, max(pos, self._scanned - 3))
            if m is None:
                break
            event, pos = bytes(buf[pos : m.start()]), m.end()
            self._scanned = pos
            data = [
                line[5:].lstrip(b" ")
                for line in event.splitlines()
                if line.startswith(b"data:")
            ]
            if data:
                out.append(b"\n".join(data).decode("utf-8", "replace"))
        if pos:
            del buf[:pos]
        self._scanned = len(buf)
        return out


@dataclass
class _Choice:
    role: str | None = None
    parts: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    other_delta: bool = False  # tool calls, function calls, refusals: not stored


@dataclass
class StreamAssembler:
    """Rebuilds the non-streamed response from a stream's events."""

    endpoint: Endpoint
    choices: dict[int, _Choice] = field(default_factory=dict)
    head: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    done: bool = False
    error: bool = False

    def feed(self, data: str) -> None:
        """Never raises: an event it cannot read makes the stream unstorable, nothing more
        (the client still gets every byte the upstream sent)."""
        try:
            self._feed(data)
        except (TypeError, ValueError, AttributeError, KeyError):
            self.error = True

    def _feed(self, data: str) -> None:
        if data.strip() == "[DONE]":
            self.done = True
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.error = True
            return
        if not isinstance(obj, dict) or "error" in obj:
            self.error = True
            return
        for key in ("id", "created", "model", "system_fingerprint"):
            if key in obj and key not in self.head:
                self.head[key] = obj[key]
        if obj.get("usage"):
            self.usage = obj["usage"]
        for ch in obj.get("choices") or []:
            c = self.choices.setdefault(int(ch.get("index", 0)), _Choice())
            if self.endpoint == "chat":
                delta = ch.get("delta") or {}
                c.role = c.role or delta.get("role")
                if delta.get("content"):
                    if not isinstance(delta["content"], str):
                        raise TypeError("delta.content is not text")
                    c.parts.append(delta["content"])
                if any(delta.get(k) for k in ("tool_calls", "function_call", "refusal")):
                    c.other_delta = True
            elif ch.get("text"):
                if not isinstance(ch["text"], str):
                    raise TypeError("text is not text")
                c.parts.append(ch["text"])
            if ch.get("finish_reason"):
                c.finish_reason = ch["finish_reason"]

    def result(self) -> dict[str, Any] | None:
        """The complete response, or None if the stream must not be stored."""
        if self.error or not self.done or not self.choices:
            return None
        texts = {i: "".join(c.parts) for i, c in self.choices.items()}
        if any(c.finish_reason != "stop" or c.other_delta or not texts[i].strip()
               for i, c in self.choices.items()):
            return None
        choices: list[dict[str, Any]] = []
        for i, c in sorted(self.choices.items()):
            text = texts[i]
            if self.endpoint == "chat":
                msg = {"role": c.role or "assistant", "content": text}
                choices.append({"index": i, "message": msg, "finish_reason": "stop"})
            else:
                choices.append({"index": i, "text": text, "finish_reason": "stop"})
        obj = "chat.completion" if self.endpoint == "chat" else "text_completion"
        out: dict[str, Any] = {"id": self.head.get("id", ""), "object": obj}
        out.update({k: v for k, v in self.head.items() if k != "id"})
        out["choices"] = choices
        if self.usage is not None:
            out["usage"] = self.usage
        return out


def storable(endpoint: Endpoint, response: dict[str, Any]) -> bool:
    """A non-streamed response may be stored if every choice stopped naturally with text: no
    tool call, no refusal, no empty answer."""
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or "error" in response:
        return False
    for ch in choices:
        if not isinstance(ch, dict) or ch.get("finish_reason") != "stop":
            return False
        if endpoint == "chat":
            msg = ch.get("message") or {}
            text = msg.get("content")
            if msg.get("tool_calls") or msg.get("function_call") or msg.get("refusal"):
                return False
        else:
            text = ch.get("text")
        if not isinstance(text, str) or not text.strip():
            return False
    return True


def no_store(cache_control: str | None, *, ignore_no_store: bool = False) -> bool:
    """The upstream's ``Cache-Control`` forbids a shared cache to keep the answer (RFC 9111
    §5.2.2.5 ``no-store``, §5.2.2.7 ``private``). ``ignore_no_store``: only ``private`` counts
    (an event stream from a server that marks every stream no-store)."""
    if not cache_control:
        return False
    directives = {d.strip().split("=", 1)[0].lower() for d in cache_control.split(",")}
    return "private" in directives or ("no-store" in directives and not ignore_no_store)


def new_id(endpoint: Endpoint) -> str:
    return ("chatcmpl-" if endpoint == "chat" else "cmpl-") + uuid.uuid4().hex


def fresh(endpoint: Endpoint, stored: dict[str, Any]) -> dict[str, Any]:
    """A stored response as a new one: new ``id`` and ``created``, same content."""
    out = dict(stored)
    out["id"] = new_id(endpoint)
    out["created"] = int(time.time())
    return out


_WORD_BOUNDARY = re.compile(r"(?<=\s)(?=\S)")


def _pieces(text: str, words_per_chunk: int = 4) -> list[str]:
    words = _WORD_BOUNDARY.split(text)
    return ["".join(words[i : i + words_per_chunk]) for i in range(0, len(words), words_per_chunk)]


def replay(
    endpoint: Endpoint, response: dict[str, Any], *, include_usage: bool
) -> Iterator[bytes]:
    """A stored (non-streamed form) response as a valid OpenAI event stream."""
    head = {k: response[k] for k in ("id", "created", "model") if k in response}
    if "system_fingerprint" in response:
        head["system_fingerprint"] = response["system_fingerprint"]
    head["object"] = "chat.completion.chunk" if endpoint == "chat" else "text_completion"
    usage_field = {"usage": None} if include_usage else {}

    def chunk(index: int, payload: dict[str, Any], finish: str | None) -> bytes:
        choice = {"index": index, **payload, "finish_reason": finish}
        if endpoint == "completions":
            choice.setdefault("logprobs", None)
        return encode_event({**head, "choices": [choice], **usage_field})

    for ch in response.get("choices", []):
        i = ch.get("index", 0)
        if endpoint == "chat":
            msg = ch.get("message") or {}
            yield chunk(i, {"delta": {"role": msg.get("role", "assistant"), "content": ""}}, None)
            for piece in _pieces(msg.get("content") or ""):
                yield chunk(i, {"delta": {"content": piece}}, None)
            yield chunk(i, {"delta": {}}, ch.get("finish_reason", "stop"))
        else:
            for piece in _pieces(ch.get("text") or ""):
                yield chunk(i, {"text": piece}, None)
            yield chunk(i, {"text": ""}, ch.get("finish_reason", "stop"))
    if include_usage and response.get("usage"):
        yield encode_event({**head, "choices": [], "usage": response["usage"]})
    yield DONE


def error_event(message: str, error_type: str, code: str) -> bytes:
    """Ends a stream that broke after its status line was sent."""
    return encode_event({"error": {"message": message, "type": error_type, "code": code}})

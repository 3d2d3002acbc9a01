"""OpenAI's Responses API on the wire: the response object, its event stream, and the bridge to
chat completions for backends that do not serve ``/v1/responses`` (llama.cpp's server, older
vLLM).

- ``assemble``: a live event stream's final response (the ``response.completed`` event carries
  it whole), as ``StreamAssembler`` does for chat.
- ``storable``: a response may be stored when it completed with text output only: assistant
  messages of ``output_text`` (reasoning items are dropped from what is stored; function calls,
  refusals, an ``incomplete`` or ``failed`` status are never stored).
- ``fresh`` / ``replay``: a stored response as a new one (new ids, time) and as the event stream
  the official client parses (``response.created`` … ``response.output_text.delta`` …
  ``response.completed``, ``sequence_number`` counting up from 0).
- ``to_chat`` / ``ResponsesFromChat``: the bridge. A request the bridge cannot express
  (built-in tools, ``previous_response_id`` the gateway could not expand, input items other
  than messages and function calls) is refused with 400, never sent half-translated.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson

from gateway.errors import InvalidRequest
from gateway.streaming import SSEParser

FINAL = ("response.completed", "response.incomplete", "response.failed")


def new_id(prefix: str = "resp") -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def event(kind: str, seq: int, **fields: Any) -> bytes:
    return (b"event: " + kind.encode() + b"\ndata: "
            + orjson.dumps({"type": kind, "sequence_number": seq, **fields}) + b"\n\n")


def message_item(text: str, item_id: str | None = None, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id or new_id("msg"), "type": "message", "status": status,
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def output_text(response: dict[str, Any]) -> str:
    """All ``output_text`` of the response's assistant messages, joined."""
    out = []
    for item in response.get("output") or []:
        if isinstance(item, dict) and item.get("type") == "message":
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "output_text":
                    out.append(str(part.get("text") or ""))
    return "".join(out)


def storable(response: dict[str, Any]) -> bool:
    if response.get("status") != "completed" or response.get("error"):
        return False
    items = [i for i in response.get("output") or [] if i.get("type") != "reasoning"]
    if not items:
        return False
    for item in items:
        if item.get("type") != "message" or item.get("role", "assistant") != "assistant":
            return False
        parts = item.get("content") or []
        if not parts or any(p.get("type") != "output_text" for p in parts):
            return False
    return bool(output_text(response).strip())


def for_storing(response: dict[str, Any]) -> dict[str, Any]:
    """What is kept of a storable response: no reasoning items (their encrypted content belongs
    to one conversation)."""
    return {**response, "output": [i for i in response.get("output") or []
                                   if i.get("type") != "reasoning"]}


def fresh(stored: dict[str, Any], echo: dict[str, Any]) -> dict[str, Any]:
    """A stored response as a new one: new response and item ids, the time now, and the fields
    that describe *this* request rather than the answer (``echo``: previous_response_id,
    metadata, user, ...)."""
    out = {**stored, "id": new_id(), "created_at": int(time.time()), **echo}
    out["output"] = [{**item, "id": new_id("msg")} for item in stored.get("output") or []]
    return out


def replay(response: dict[str, Any]) -> Iterator[bytes]:
    seq = iter(range(1 << 30))
    start = {**response, "status": "in_progress", "output": [], "usage": None}
    yield event("response.created", next(seq), response=start)
    yield event("response.in_progress", next(seq), response=start)
    for i, item in enumerate(response.get("output") or []):
        yield event("response.output_item.added", next(seq), output_index=i,
                    item={**item, "status": "in_progress", "content": []})
        for j, part in enumerate(item.get("content") or []):
            text = str(part.get("text") or "")
            common = {"item_id": item["id"], "output_index": i, "content_index": j}
            yield event("response.content_part.added", next(seq), **common,
                        part={**part, "text": ""})
            for piece in _pieces(text):
                yield event("response.output_text.delta", next(seq), **common, delta=piece,
                            logprobs=[])
            yield event("response.output_text.done", next(seq), **common, text=text, logprobs=[])
            yield event("response.content_part.done", next(seq), **common, part=part)
        yield event("response.output_item.done", next(seq), output_index=i, item=item)
    yield event("response.completed", next(seq), response=response)


def _pieces(text: str, size: int = 24) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


class ResponsesAssembler:
    """Reads a live Responses event stream; ``result`` is the final response, or None when it
    must not be stored (an error event, no final event, a final status other than completed)."""

    def __init__(self) -> None:
        self.done = False
        self.final: dict[str, Any] | None = None
        self.error = False

    def feed(self, data: str) -> None:
        if data.strip() == "[DONE]":  # some servers end a Responses stream as they end chat's
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.error = True
            return
        if not isinstance(obj, dict):
            self.error = True
            return
        kind = obj.get("type")
        if kind == "error" or ("error" in obj and kind is None):
            self.error = True
        if kind in FINAL:
            self.done = True
            response = obj.get("response")
            self.final = response if isinstance(response, dict) else None

    def result(self) -> dict[str, Any] | None:
        if self.error or self.final is None or not storable(self.final):
            return None
        return for_storing(self.final)


# --- the bridge: Responses -> chat completions -> Responses ---------------------------------

def _part_to_chat(part: Any) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": str(part.get("text") or "")}
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        return {"type": "image_url", "image_url": {"url": part["image_url"],
                                                   "detail": part.get("detail", "auto")}}
    raise InvalidRequest(f"input content of type {kind!r} cannot be bridged to chat completions",
                         param="input", code="bridge_unsupported")


def _content_to_chat(content: Any) -> Any:
    if isinstance(content, str) or content is None:
        return content or ""
    if isinstance(content, list):
        parts = [_part_to_chat(p) for p in content]
        if all(p["type"] == "text" for p in parts):
            return "\n".join(p["text"] for p in parts)
        return parts
    raise InvalidRequest("input message content must be text or a list of parts", param="input")


def input_messages(items: Any) -> list[dict[str, Any]]:
    """A Responses ``input`` as chat messages."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise InvalidRequest("input must be a string or a list of items", param="input")
    out: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            raise InvalidRequest("each input item must be an object", param="input")
        kind = item.get("type", "message")
        if kind == "message" and item.get("role") in ("user", "system", "developer", "assistant"):
            out.append({"role": item["role"], "content": _content_to_chat(item.get("content"))})
        elif kind == "function_call":
            out.append({"role": "assistant", "content": None, "tool_calls": [{
                "id": item.get("call_id"), "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments", "")}}]})
        elif kind == "function_call_output":
            output = item.get("output")
            out.append({"role": "tool", "tool_call_id": item.get("call_id"),
                        "content": output if isinstance(output, str) else orjson.dumps(output).decode()})
        elif kind == "reasoning":
            continue  # a chat backend has no use for another model's reasoning
        else:
            raise InvalidRequest(f"input item of type {kind!r} cannot be bridged to chat "
                                 "completions", param="input", code="bridge_unsupported")
    return out


def _tool_to_chat(tool: Any) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else tool
        raise InvalidRequest(f"tool of type {kind!r} cannot be bridged to chat completions "
                             "(only function tools)", param="tools", code="bridge_unsupported")
    fn = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
    return {"type": "function", "function": fn}


def to_chat(data: dict[str, Any]) -> dict[str, Any]:
    """The chat completions request that asks what ``data`` (a Responses request) asks."""
    if data.get("previous_response_id"):
        raise InvalidRequest("previous_response_id is not known to the gateway, and the chat "
                             "backend keeps no responses: send the conversation as input",
                             param="previous_response_id", code="previous_response_not_found")
    messages = input_messages(data.get("input"))
    if data.get("instructions"):
        messages = [{"role": "system", "content": str(data["instructions"])}, *messages]
    chat: dict[str, Any] = {"model": data.get("model"), "messages": messages}
    for src, dst in (("temperature", "temperature"), ("top_p", "top_p"), ("user", "user"),
                     ("max_output_tokens", "max_tokens"),
                     ("parallel_tool_calls", "parallel_tool_calls")):
        if data.get(src) is not None:
            chat[dst] = data[src]
    if data.get("tools"):
        chat["tools"] = [_tool_to_chat(t) for t in data["tools"]]
    choice = data.get("tool_choice")
    if isinstance(choice, str):
        chat["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") == "function":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    fmt = (data.get("text") or {}).get("format") if isinstance(data.get("text"), dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        chat["response_format"] = {"type": "json_schema", "json_schema": {
            k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}}
    effort = (data.get("reasoning") or {}).get("effort") if isinstance(data.get("reasoning"), dict) \
        else None
    if effort:
        chat["reasoning_effort"] = effort
    if data.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _usage(chat_usage: Any) -> dict[str, Any] | None:
    if not isinstance(chat_usage, dict):
        return None
    prompt = int(chat_usage.get("prompt_tokens") or 0)
    completion = int(chat_usage.get("completion_tokens") or 0)
    cached = int((chat_usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion}


class ResponsesFromChat:
    """A chat completion (JSON or event stream) as the Responses object / events the client
    asked for. ``request``: the Responses request, whose settings the response echoes."""

    def __init__(self, request: dict[str, Any]):
        self.request = request
        self.id = new_id()
        self.msg_id = new_id("msg")

    def _shell(self, model: Any, created: Any) -> dict[str, Any]:
        r = self.request
        return {"id": self.id, "object": "response", "created_at": int(created or time.time()),
                "status": "in_progress", "model": model or r.get("model"), "output": [],
                "error": None, "incomplete_details": None,
                "instructions": r.get("instructions"), "metadata": r.get("metadata") or {},
                "parallel_tool_calls": r.get("parallel_tool_calls", True),
                "previous_response_id": None, "temperature": r.get("temperature"),
                "top_p": r.get("top_p"), "max_output_tokens": r.get("max_output_tokens"),
                "tool_choice": r.get("tool_choice", "auto"), "tools": r.get("tools") or [],
                "text": r.get("text") or {"format": {"type": "text"}}, "usage": None}

    def _finish(self, out: dict[str, Any], text: str, calls: list[dict[str, Any]],
                finish: Any, usage: Any, *, message: bool = False) -> dict[str, Any]:
        output: list[dict[str, Any]] = []
        if text or message or not calls:
            output.append(message_item(text, self.msg_id))
        for call in calls:
            fn = call.get("function") or {}
            output.append({"id": new_id("fc"), "type": "function_call", "status": "completed",
                           "call_id": call.get("id") or new_id("call"), "name": fn.get("name"),
                           "arguments": fn.get("arguments") or ""})
        out["output"] = output
        if finish == "length":
            out["status"] = "incomplete"
            out["incomplete_details"] = {"reason": "max_output_tokens"}
        elif finish == "content_filter":
            out["status"] = "incomplete"
            out["incomplete_details"] = {"reason": "content_filter"}
        else:
            out["status"] = "completed"
        out["usage"] = _usage(usage)
        return out

    def body(self, content: bytes) -> bytes:
        try:
            obj = orjson.loads(content)
        except orjson.JSONDecodeError:
            return content
        if not isinstance(obj, dict) or not isinstance(obj.get("choices"), list) \
                or not obj["choices"]:
            return content  # an error body: as it is
        choice = obj["choices"][0]
        msg = choice.get("message") or {}
        out = self._shell(obj.get("model"), obj.get("created"))
        return orjson.dumps(self._finish(out, msg.get("content") or "", msg.get("tool_calls") or [],
                                         choice.get("finish_reason"), obj.get("usage")))

    async def stream(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        parser, seq = SSEParser(), iter(range(1 << 30))
        shell: dict[str, Any] | None = None
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        finish: Any = None
        usage: Any = None
        common = {"item_id": self.msg_id, "output_index": 0, "content_index": 0}

        def opening(obj: dict[str, Any]) -> bytes:
            nonlocal shell
            shell = self._shell(obj.get("model"), obj.get("created"))
            return (event("response.created", next(seq), response=shell)
                    + event("response.in_progress", next(seq), response=shell)
                    + event("response.output_item.added", next(seq), output_index=0,
                            item={**message_item("", self.msg_id, "in_progress"), "content": []})
                    + event("response.content_part.added", next(seq), **common,
                            part={"type": "output_text", "text": "", "annotations": []}))

        async for chunk in chunks:
            out = b""
            for data in parser.feed(chunk):
                if data.strip() == "[DONE]":
                    continue
                try:
                    obj = orjson.loads(data)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(obj, dict) or "error" in obj:
                    out += event("error", next(seq), **((obj or {}).get("error") or {})) \
                        if isinstance(obj, dict) else b""
                    continue
                if shell is None:
                    out += opening(obj)
                usage = obj.get("usage") or usage
                for ch in obj.get("choices") or []:
                    delta = ch.get("delta") or {}
                    if delta.get("content"):
                        text.append(delta["content"])
                        out += event("response.output_text.delta", next(seq), **common,
                                     delta=delta["content"], logprobs=[])
                    for tc in delta.get("tool_calls") or []:
                        c = calls.setdefault(int(tc.get("index", 0)),
                                             {"id": None, "function": {"name": "", "arguments": ""}})
                        c["id"] = tc.get("id") or c["id"]
                        fn = tc.get("function") or {}
                        c["function"]["name"] += fn.get("name") or ""
                        c["function"]["arguments"] += fn.get("arguments") or ""
                    finish = ch.get("finish_reason") or finish
            if out:
                yield out
        if shell is None:
            return
        whole = "".join(text)
        final = self._finish(dict(shell), whole, [calls[i] for i in sorted(calls)], finish, usage,
                             message=True)  # the stream opened the message item
        out = (event("response.output_text.done", next(seq), **common, text=whole, logprobs=[])
               + event("response.content_part.done", next(seq), **common,
                       part={"type": "output_text", "text": whole, "annotations": []}))
        for i, item in enumerate(final["output"]):
            if i:
                out += event("response.output_item.added", next(seq), output_index=i, item=item)
            out += event("response.output_item.done", next(seq), output_index=i, item=item)
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        yield out + event(kind, next(seq), response=final)


class Chained:
    """Two conversions one after the other (a chunk format's, then the bridge's)."""

    def __init__(self, first: Any, second: Any):
        self.first, self.second = first, second

    def body(self, content: bytes) -> bytes:
        return bytes(self.second.body(self.first.body(content)))

    def stream(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        return self.second.stream(self.first.stream(chunks))  # type: ignore[no-any-return]


__all__ = ["Chained", "ResponsesAssembler", "ResponsesFromChat", "fresh", "input_messages",
           "output_text", "replay", "storable", "to_chat"]

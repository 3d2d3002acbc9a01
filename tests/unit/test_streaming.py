from __future__ import annotations

import orjson
import pytest

from gateway.streaming import SSEParser, StreamAssembler, replay, storable


def _events(stream: bytes, sizes: int) -> list[str]:
    parser, out = SSEParser(), []
    for i in range(0, len(stream), sizes):
        out += parser.feed(stream[i : i + sizes])
    return out


RESPONSE = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello  there,\nworld! "},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
}


@pytest.mark.parametrize("size", [1, 7, 10_000])
def test_replay_then_assemble_round_trips_exactly(size: int) -> None:
    stream = b"".join(replay("chat", RESPONSE, include_usage=True))
    asm = StreamAssembler("chat")
    for data in _events(stream, size):
        asm.feed(data)
    out = asm.result()
    assert out is not None
    assert out["choices"] == RESPONSE["choices"]
    assert out["usage"] == RESPONSE["usage"]
    assert stream.endswith(b"data: [DONE]\n\n")


def test_assembler_refuses_incomplete_or_errored_streams() -> None:
    events = [e for e in _events(b"".join(replay("chat", RESPONSE, include_usage=False)), 50)]
    no_done = StreamAssembler("chat")
    for e in events[:-1]:
        no_done.feed(e)
    assert no_done.result() is None

    errored = StreamAssembler("chat")
    for e in events[:2]:
        errored.feed(e)
    errored.feed(orjson.dumps({"error": {"message": "boom"}}).decode())
    errored.feed("[DONE]")
    assert errored.result() is None

    length = StreamAssembler("chat")
    for e in events:
        length.feed(e.replace('"finish_reason":"stop"', '"finish_reason":"length"'))
    assert length.result() is None


def test_parser_handles_crlf_and_multiline_data() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r\n\r\ndata: b\ndata: c\n\n: comment\n\n") == ["a", "b\nc"]


def test_storable() -> None:
    assert storable("chat", RESPONSE)
    bad = orjson.loads(orjson.dumps(RESPONSE))
    bad["choices"][0]["finish_reason"] = "length"
    assert not storable("chat", bad)
    tools = orjson.loads(orjson.dumps(RESPONSE))
    tools["choices"][0]["message"]["tool_calls"] = [{"id": "x"}]
    assert not storable("chat", tools)
    assert not storable("completions", {"choices": []})


def test_header_values_go_upstream_as_their_bytes_without_surrounding_whitespace() -> None:
    from gateway.upstream import wire_headers

    assert wire_headers({"x-note": "caf\u00e9", "x-pad": " value \t"}) == [
        (b"x-note", b"caf\xe9"), (b"x-pad", b"value")]

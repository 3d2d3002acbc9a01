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
    from gateway.backend.upstream import wire_headers

    assert wire_headers({"x-note": "caf\u00e9", "x-pad": " value \t"}) == [
        (b"x-note", b"caf\xe9"), (b"x-pad", b"value")]


def test_a_malformed_event_makes_the_stream_unstorable_and_never_raises() -> None:
    """Issue 17, item 9: these raised inside the tee, ending the client's stream early."""
    for event in ('{"choices": [{"index": "zero", "delta": {"content": "a"}}]}',
                  '{"choices": ["not a dict"]}', '{"choices": {"0": 1}}',
                  '{"choices": [{"index": 0, "delta": {"content": ["a", "b"]}}]}',
                  '{"choices": [{"index": 0, "delta": "text"}]}'):
        asm = StreamAssembler("chat")
        asm.feed('{"choices": [{"index": 0, "delta": {"role": "assistant", "content": "x"}}]}')
        asm.feed(event)
        asm.feed('{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}')
        asm.feed("[DONE]")
        assert asm.result() is None, event


def test_the_parser_is_linear_in_one_large_event() -> None:
    """Issue 17, item 10: a single 20 MB event took 24.9 s (the buffer was re-searched and
    re-copied on every chunk). Counted in bytes scanned, not timed: 4 MB in 4 kB pieces."""
    import re

    from gateway import streaming

    scanned = 0
    real = streaming._EVENT_END

    class Counting:
        def search(self, buf: bytes, pos: int = 0) -> re.Match[bytes] | None:
            nonlocal scanned
            scanned += len(buf) - pos
            return real.search(buf, pos)

    streaming._EVENT_END = Counting()  # type: ignore[assignment]
    try:
        parser = SSEParser()
        payload = b"data: " + b"x" * 4_000_000
        out = []
        for i in range(0, len(payload), 4096):
            out += parser.feed(payload[i : i + 4096])
        out += parser.feed(b"\n\n")
    finally:
        streaming._EVENT_END = real
    assert len(out) == 1 and len(out[0]) == 4_000_000
    assert scanned < 3 * len(payload), scanned  # quadratic would be ~2,000x the payload


def test_event_ends_split_across_chunks_are_found() -> None:
    parser = SSEParser()
    got = []
    for piece in (b"data: a\r", b"\n\r", b"\ndata: b\n", b"\ndata: c\r", b"\r"):
        got += parser.feed(piece)
    assert got == ["a", "b", "c"]

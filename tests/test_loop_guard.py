"""The loop guard: a streamed answer that repeats itself is ended, everything before it kept."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx2
import pytest

from punie.agent.loop_guard import GUARD_FIELD, LoopGuardTransport, first_repeat
from punie.agent.production import build_agent, openai_model
from punie.agent.tools import Workspace, workspace_toolset


def test_first_repeat_finds_an_earlier_window_and_ignores_a_word_being_written() -> None:
    text = "one two three four one two three four"
    assert first_repeat(text + " ", 4) == 0
    assert first_repeat(text, 4) is None  # "four" may still be "fourteen"
    assert first_repeat("a b c d e f g h ", 4) is None
    assert first_repeat("x y x y x y ", 2) == 0


def _sse(pieces: list[str], *, usage: bool = True) -> bytes:
    events: list[Any] = [": keepalive 37/37"]
    for p in pieces:
        chunk = {"id": "c1", "created": 1, "model": "m", "object": "chat.completion.chunk"}
        events.append({**chunk, "choices": [{"index": 0, "delta": {"content": p}}]})
    events.append({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
    if usage:
        events.append({"id": "c1", "choices": [], "usage": {"completion_tokens": len(pieces)}})
    out = "".join(
        e + "\n\n" if isinstance(e, str) else f"data: {json.dumps(e)}\n\n" for e in events
    )
    return (out + "data: [DONE]\n\n").encode()


class _Server(httpx2.AsyncBaseTransport):
    """Streams canned SSE bytes in small pieces and notes whether it was closed early."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.closed = False
        self.sent = 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        server = self

        class Stream(httpx2.AsyncByteStream):
            async def __aiter__(self):
                for i in range(0, len(server.body), 40):
                    server.sent = i + 40
                    yield server.body[i : i + 40]

            async def aclose(self) -> None:
                server.closed = True

        headers = {"content-type": "text/event-stream"}
        return httpx2.Response(200, headers=headers, stream=Stream(), request=request)


def _events(raw: bytes) -> list[Any]:
    out = []
    for line in raw.decode().splitlines():
        if line.startswith("data:"):
            body = line[5:].strip()
            out.append(body if body == "[DONE]" else json.loads(body))
    return out


async def _post(transport: httpx2.AsyncBaseTransport, body: dict[str, Any]) -> bytes:
    async with httpx2.AsyncClient(transport=transport) as client:
        r = await client.post("http://s/v1/chat/completions", json=body)
        return await r.aread()


LOOP = ["It ", "is ", "a ", "way ", "to ", "pass ", "objects. "] * 6


def test_a_looping_stream_is_ended_with_stop_usage_and_done() -> None:
    server = _Server(_sse(LOOP))
    body = {"stream": True, "stream_options": {"include_usage": True}}
    events = _events(asyncio.run(_post(LoopGuardTransport(server, 7), body)))
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-3])
    assert text.startswith("It is a way to pass objects. It is a way to pass objects.")
    assert len(text.split()) < len(LOOP)
    stop, usage, done = events[-3:]
    assert stop["choices"][0]["finish_reason"] == "stop" and stop["choices"][0][GUARD_FIELD]
    assert usage["usage"]["completion_tokens"] == len(text.split())
    assert usage["usage"]["prompt_tokens"] == 37
    assert done == "[DONE]"
    assert server.closed and server.sent < len(server.body)


def test_a_stream_that_does_not_loop_passes_unchanged() -> None:
    raw = _sse(["Dependency ", "injection ", "passes ", "collaborators ", "in."])
    server = _Server(raw)
    out = asyncio.run(_post(LoopGuardTransport(server, 4), {"stream": True}))
    assert out == raw


def test_non_streamed_requests_are_not_touched() -> None:
    raw = _sse(LOOP)
    out = asyncio.run(_post(LoopGuardTransport(_Server(raw), 3), {"stream": False}))
    assert out == raw


@pytest.mark.parametrize("n", [0, -2])
def test_the_window_must_be_at_least_one_word(n: int) -> None:
    with pytest.raises(ValueError, match="ngram_words"):
        LoopGuardTransport(httpx2.AsyncHTTPTransport(), n)


def test_the_agent_gets_the_answer_up_to_the_loop(tmp_path) -> None:
    """Through PydanticAI's OpenAI model: the run ends normally with the answer before the
    loop, and the usage counts the tokens that were streamed."""
    server = _Server(_sse(LOOP))

    async def run() -> Any:
        async with httpx2.AsyncClient(transport=LoopGuardTransport(server, 7)) as client:
            model = openai_model("http://s/v1", http_client=client)
            agent = build_agent(model, workspace_toolset(Workspace(tmp_path)))
            async with agent.run_stream("What is dependency injection?") as result:
                return await result.get_output(), result.usage

    output, usage = asyncio.run(run())
    assert output.startswith("It is a way to pass objects.")
    assert len(output.split()) < len(LOOP)
    assert usage.output_tokens == len(output.split())

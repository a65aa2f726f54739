"""Stop a streamed answer that repeats itself.

A small greedy model (and greedy Qwen3 too) can fall into a loop, writing the same sentence
until `max_tokens`: the user waits for text that adds nothing. The guard is an httpx
transport under the agent's OpenAI client, so it works with any OpenAI-compatible server, the
unpatched `mlx_lm server` included. It watches the text of a streamed chat completion (answer
and thinking apart); when the last `ngram_words` words already appeared in the same text, it
closes the upstream response (the server stops generating at its next write) and ends the
stream itself: a final chunk with finish reason `stop` that carries `"punie_loop_guard":
true`, a usage chunk counting the tokens streamed so far (one chunk per token, as mlx_lm
streams; the prompt count is the server's last `: keepalive N/N` progress, its uncached
part), then `[DONE]`. Everything before the repeat reaches the agent unchanged, so the
tool-or-answer decision (the first token) and the facts stated before the loop are kept.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2

GUARD_FIELD = "punie_loop_guard"
_WORD = re.compile(r"\S+")


def first_repeat(text: str, n: int) -> int | None:
    """Index (in words) where the trailing `n`-word window of `text` first appeared earlier,
    or None. Only complete words count: a trailing word still being written is left out."""
    words = _WORD.findall(text)
    if text and not text[-1].isspace():
        words = words[:-1]
    if n < 1 or len(words) < 2 * n:
        return None
    tail = words[-n:]
    for i in range(len(words) - 2 * n + 1):
        if words[i : i + n] == tail:
            return i
    return None


def with_stream(
    response: httpx2.Response, stream: httpx2.AsyncByteStream, request: httpx2.Request
) -> httpx2.Response:
    """`response` whose body is read through `stream` (a pass-through that takes timings)."""
    return httpx2.Response(
        status_code=response.status_code,
        headers=response.headers,
        stream=stream,
        extensions=response.extensions,
        request=request,
    )


class _Watch:
    """The text of one streamed completion, per channel (answer, thinking)."""

    def __init__(self, ngram_words: int) -> None:
        self.n = ngram_words
        self.text = {"content": "", "reasoning": ""}
        self.tokens = 0
        self.prompt_tokens = 0
        self.last: dict[str, Any] = {}

    def feed(self, chunk: dict[str, Any]) -> bool:
        """Take one chunk; True when a channel now repeats itself."""
        self.last = chunk
        choices = chunk.get("choices") or []
        delta = (choices[0].get("delta") or {}) if choices else {}
        looped = False
        for channel in self.text:
            piece = delta.get(channel)
            if isinstance(piece, str) and piece:
                self.tokens += 1
                self.text[channel] += piece
                looped = looped or first_repeat(self.text[channel], self.n) is not None
        return looped

    def ending(self, include_usage: bool) -> bytes:
        base = {
            "id": self.last.get("id", "chatcmpl-guard"),
            "object": "chat.completion.chunk",
            "created": self.last.get("created", int(time.time())),
            "model": self.last.get("model", ""),
        }
        stop = {"index": 0, "delta": {}, "finish_reason": "stop", GUARD_FIELD: True}
        events = [{**base, "choices": [stop]}]
        if include_usage:
            usage = {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.tokens,
                "total_tokens": self.prompt_tokens + self.tokens,
            }
            events.append({**base, "choices": [], "usage": usage})
        body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return body.encode()


class _GuardedStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, watch: _Watch, usage: bool) -> None:
        self._inner, self._watch, self._usage = inner, watch, usage
        self._pending = b""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            lines = (self._pending + chunk).split(b"\n")
            self._pending = lines.pop()
            out = bytearray()
            for line in lines:
                out += line + b"\n"
                if self._looped(line):
                    yield bytes(out) + b"\n" + self._watch.ending(self._usage)
                    await self._inner.aclose()  # the server stops at its next write
                    return
            if out:
                yield bytes(out)
        if self._pending:
            yield self._pending

    def _looped(self, line: bytes) -> bool:
        if line.startswith(b": keepalive"):
            _, _, total = line[len(b": keepalive") :].strip().partition(b"/")
            if total.isdigit():
                self._watch.prompt_tokens = int(total)
            return False
        if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
            return False
        try:
            chunk = json.loads(line[5:])
        except ValueError:
            return False
        return isinstance(chunk, dict) and self._watch.feed(chunk)

    async def aclose(self) -> None:
        await self._inner.aclose()


class LoopGuardTransport(httpx2.AsyncBaseTransport):
    """Ends a streamed chat completion whose text repeats an `ngram_words`-word window."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, ngram_words: int) -> None:
        if ngram_words < 1:
            raise ValueError(f"ngram_words must be >= 1, got {ngram_words}")
        self._inner = inner
        self.ngram_words = ngram_words

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        if not request.url.path.endswith("/chat/completions") or not isinstance(
            response.stream, httpx2.AsyncByteStream
        ):
            return response
        try:
            body = json.loads(request.content)
        except (ValueError, httpx2.RequestNotRead):
            return response
        if not isinstance(body, dict) or not body.get("stream"):
            return response
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        stream = _GuardedStream(response.stream, _Watch(self.ngram_words), usage)
        return with_stream(response, stream, request)

    async def aclose(self) -> None:
        await self._inner.aclose()

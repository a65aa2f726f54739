"""Decode speed from the client side: the arrival time of every streamed text token.

An httpx transport for the agent's model client; the speculative stage uses it to time every
configuration the same way, baseline and draft servers alike.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence

import httpx2

from punie.measurement.timing import with_stream


class _ChunkStamps(httpx2.AsyncByteStream):
    """Passes an SSE stream through, stamping each chunk that carries answer text or thinking
    (`reasoning`, a Qwen3 `<think>` block): both are decoded tokens."""

    def __init__(self, inner: httpx2.AsyncByteStream, stamps: list[float]) -> None:
        self._inner, self._stamps, self._pending = inner, stamps, b""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            now = time.perf_counter()
            lines = (self._pending + chunk).split(b"\n")
            self._pending = lines.pop()
            for line in lines:
                if line.startswith(b"data:") and (b'"content"' in line or b'"reasoning"' in line):
                    with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
                        delta = json.loads(line[5:])["choices"][0]["delta"]
                        if delta.get("content") or delta.get("reasoning"):
                            self._stamps.append(now)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class TextClock(httpx2.AsyncBaseTransport):
    """Stamps the arrival of every streamed text token, one list per chat request.

    The server streams one chunk per text token but holds a tool call back until it is
    complete, and a draft server sends no prefill-done event; so decode speed is measured
    the same way for every configuration, on text only: tokens arriving after the first
    chunk's burst (a speculative step emits its kept drafts at once) over the time from the
    first chunk to the last.
    """

    def __init__(self) -> None:
        self._inner = httpx2.AsyncHTTPTransport()
        self.requests: list[list[float]] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        if not request.url.path.endswith("/chat/completions") or not isinstance(
            response.stream, httpx2.AsyncByteStream
        ):
            return response
        stamps: list[float] = []
        self.requests.append(stamps)
        return with_stream(response, _ChunkStamps(response.stream, stamps), request)

    async def aclose(self) -> None:
        await self._inner.aclose()


BURST_S = 0.001  # chunks this close to the first arrived in one write burst (one step)


def text_decode(stamps: Sequence[float]) -> tuple[int, float]:
    """(tokens decoded after the first step, seconds) from one request's text stamps."""
    if len(stamps) < 2:
        return 0, 0.0
    first = stamps[0]
    after = [t for t in stamps if t - first > BURST_S]
    return len(after), (stamps[-1] - first) if after else 0.0

"""The OpenAI chat wire format, for tests that stand in for `mlx_lm server`: a completion
body, and a streamed response fed to the timing scanner line by line."""

from __future__ import annotations

from typing import Any

from punie.measurement.records import TurnTrace
from punie.measurement.timing import _TimedStream


def completion(content: str, usage: dict[str, int] | None = None) -> dict[str, Any]:
    """A non-streamed chat completion answering `content`."""
    message = {"role": "assistant", "content": content}
    body: dict[str, Any] = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "default_model",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
    }
    return body | ({"usage": usage} if usage is not None else {})


def scan(lines: list[str], split: int | None = None, start: float = 0.0) -> TurnTrace:
    """Feed server-sent-event `lines` to the timing scanner, line i arriving at time i (each
    line in pieces of `split` bytes when given, to cross chunk boundaries)."""
    turn = TurnTrace(start=start)
    stream = _TimedStream(None, turn)  # type: ignore[arg-type]  # _scan only
    for i, line in enumerate(lines):
        data = f"{line}\n\n".encode()
        pieces = (
            [data] if split is None else [data[j : j + split] for j in range(0, len(data), split)]
        )
        for piece in pieces:
            stream._scan(piece, float(i))
    return turn

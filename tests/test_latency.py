"""vLLM's per-request latencies beside the lab's: token arrival stamps from the SSE scanner,
`latency_stats` (TTFT, TPOT, ITL, E2EL median and p99) and the table the reports print."""

from __future__ import annotations

import asyncio
import json

import httpx2
import numpy as np
import pytest
from pydantic_ai import Agent

from punie.agent.production import openai_model
from punie.agent.queries import Query
from punie.measurement.latency import LATENCY_KEYS, VLLM_NAMES, percentile
from punie.measurement.records import (
    QueryRecord,
    TurnRecord,
    _turn_record,
    latency_samples,
    latency_stats,
)
from punie.measurement.timing import TimedModel, TimingTransport, run_query
from punie.reports.latency import latency_table

from .chat import scan

BASE = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}


def _data(delta: dict, finish: str | None = None) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return "data: " + json.dumps({**BASE, "choices": [choice]})


def _usage(completion: int) -> str:
    usage = {"prompt_tokens": 9, "completion_tokens": completion, "total_tokens": 9 + completion}
    return "data: " + json.dumps({**BASE, "choices": [], "usage": usage})


CALL = {
    "index": 0,
    "id": "call_0",
    "type": "function",
    "function": {"name": "run_command", "arguments": '{"command": "ls"}'},
}
# Line i arrives at time i. Stamped: the reasoning chunks (2, 3), the content chunks (4, 5) and
# the tool call (7); not the progress comments, the role-only and empty-content chunks, the
# finish chunk, usage, [DONE], or anything after [DONE].
LINES = [
    ": keepalive 4/8",
    ": keepalive 8/8",
    _data({"role": "assistant", "reasoning": "Let"}),
    _data({"reasoning": " me"}),
    _data({"content": "I"}),
    _data({"content": " will"}),
    _data({"role": "assistant", "content": ""}),
    _data({"tool_calls": [CALL]}),
    _data({}, "tool_calls"),
    _usage(5),
    "data: [DONE]",
    _data({"content": "replayed after DONE"}),
]
STAMPED = [2.0, 3.0, 4.0, 5.0, 7.0]


@pytest.mark.parametrize("split", [None, 1, 5, 64])
def test_the_scanner_stamps_every_chunk_that_carries_a_token(split: int | None) -> None:
    turn = scan(LINES, split, start=0.5)
    assert turn.token_times == STAMPED
    turn.end = 8.0
    record = _turn_record(0, turn, t0=0.0)
    assert record.token_times_s == [t - 0.5 for t in STAMPED]  # from the turn's start


def _sse_stream() -> bytes:
    lines = [
        ": keepalive 10/10",
        *(_data({"role": "assistant", "content": c}) for c in ("Dep", "endency", " injection.")),
        _data({}, "stop"),
        _usage(3),
        "data: [DONE]",
    ]
    return "".join(f"{line}\n\n" for line in lines).encode()


def test_a_streamed_query_records_one_stamp_per_token_chunk() -> None:
    def server(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, content=_sse_stream()
        )

    async def go() -> QueryRecord:
        transport = TimingTransport(httpx2.MockTransport(server))
        async with httpx2.AsyncClient(transport=transport) as client:
            model = openai_model("http://fake.invalid/v1", http_client=client)
            agent = Agent(TimedModel(model))
            return await run_query(agent, Query("What is DI?", "direct"), timeout_s=30)

    record = asyncio.run(go())
    assert record.error is None
    (turn,) = record.turns
    assert len(turn.token_times_s) == 3
    assert turn.token_times_s == sorted(turn.token_times_s)
    assert turn.token_times_s[0] >= 0 and turn.token_times_s[-1] <= turn.duration_s
    assert "token_times_s" in record.to_dict()["turns"][0]


def _turn(duration: float, ttft: float | None, tokens: int, stamps: list[float], error=None):
    return TurnRecord(
        index=0, start_s=0.0, duration_s=duration, ttft_s=ttft, ttft_source="prefill",
        decode_s=None, decode_tps=None, prompt_tokens=10, completion_tokens=tokens,
        cached_tokens=0, finish_reason="stop", tool_calls=[], text="", error=error,
        token_times_s=stamps,
    )  # fmt: skip


def _record(turns: list[TurnRecord], error: str | None = None) -> QueryRecord:
    return QueryRecord(
        label="s-1", set="s", query="q", expect="direct", expected_tool=None, repeat=0,
        total_s=sum(t.duration_s for t in turns), generation_s=0.0, tool_s=0.0, overhead_s=0.0,
        n_turns=len(turns), decision="direct", first_tool=None, tools_called=[],
        correct=error is None, error=error, prompt_tokens=0, completion_tokens=0,
        cached_tokens=0, output="", turns=turns, tools=[],
    )  # fmt: skip


def test_latency_stats_median_and_p99_by_hand() -> None:
    records = [
        # TPOT (1.0 - 0.2) / 4 = 0.2; gaps 0.1, 0.3
        _record([_turn(1.0, 0.2, 5, [0.2, 0.3, 0.6])]),
        # TPOT (2.0 - 0.4) / 2 = 0.8 and (0.5 - 0.1) / 1 = 0.4; gaps 0.5, then 0.2
        _record([_turn(2.0, 0.4, 3, [0.4, 0.9]), _turn(0.5, 0.1, 2, [0.1, 0.3])]),
        # A one-token turn: TTFT and E2EL only (no TPOT, no gap)
        _record([_turn(0.3, 0.3, 1, [0.3])]),
        # Left out: a failed query, and a turn that failed inside a finished one
        _record([_turn(9.0, 9.0, 9, [0.0, 9.0])], error="TimeoutError"),
        _record([_turn(7.0, 7.0, 9, [0.0, 7.0], error="boom"), _turn(0.2, 0.1, 2, [0.1, 0.2])]),
    ]
    samples = latency_samples(records)
    assert samples["ttft"] == [0.2, 0.4, 0.1, 0.3, 0.1]
    assert samples["tpot"] == pytest.approx([0.2, 0.8, 0.4, 0.1])
    assert samples["itl"] == pytest.approx([0.1, 0.3, 0.5, 0.2, 0.1])
    assert samples["e2el"] == [1.0, 2.0, 0.5, 0.3, 0.2]
    stats = latency_stats(records)
    assert (
        set(stats)
        == set(LATENCY_KEYS)
        == {f"{n}_{s}_s" for n in ("ttft", "tpot", "itl", "e2el") for s in ("median", "p99")}
    )
    # ttft sorted [0.1, 0.1, 0.2, 0.3, 0.4]: median 0.2; p99 at rank 3.96: 0.3 + 0.96 * 0.1
    assert stats["ttft_median_s"] == pytest.approx(0.2)
    assert stats["ttft_p99_s"] == pytest.approx(0.396)
    # tpot sorted [0.1, 0.2, 0.4, 0.8]: median (0.2 + 0.4) / 2; p99 at rank 2.97
    assert stats["tpot_median_s"] == pytest.approx(0.3)
    assert stats["tpot_p99_s"] == pytest.approx(0.4 + 0.97 * 0.4)
    # itl sorted [0.1, 0.1, 0.2, 0.3, 0.5]: median 0.2; p99 at rank 3.96
    assert stats["itl_median_s"] == pytest.approx(0.2)
    assert stats["itl_p99_s"] == pytest.approx(0.3 + 0.96 * 0.2)
    # e2el sorted [0.2, 0.3, 0.5, 1.0, 2.0]
    assert stats["e2el_median_s"] == pytest.approx(0.5)
    assert stats["e2el_p99_s"] == pytest.approx(1.0 + 0.96 * 1.0)
    assert all(v is None for v in latency_stats([]).values())


def test_percentile_is_numpys_linear_interpolation() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 100):
        values = list(rng.exponential(size=n))
        for q in (0, 50, 90, 99, 100):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([], 50) is None


def test_the_table_names_both_vocabularies() -> None:
    stats = {"ttft_median_s": 0.012, "ttft_p99_s": 0.05, "itl_median_s": 0.004}
    text = "\n".join(latency_table({"baseline": stats, "k = 3": {}}))
    assert "| vLLM name | the lab's figure | baseline | k = 3 |" in text
    for name, meaning in VLLM_NAMES.values():
        assert f"| {name} | {meaning} |" in text
    assert "| TTFT (time to first token) | the lab's time to first token" in text
    assert "12.0 / 50.0" in text and "4.0 / –" in text and "– / –" in text

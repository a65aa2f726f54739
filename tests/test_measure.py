"""measure.py, records.py, memory.py, otlp.py: timed model/toolset wrappers, records that add
up, summaries, memory sampling, OTLP export.

PydanticAI's FunctionModel stands in for the model (the timing logic is what is tested);
an httpx2 MockTransport injects server errors and mlx-style SSE streams.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace
from typing import Any, cast

import httpx2
import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.toolsets import FunctionToolset

from punie.agent.production import openai_model
from punie.agent.queries import Query
from punie.measurement.memory import ServerMemorySampler
from punie.measurement.records import interval_overlap, interval_union, summarize
from punie.measurement.timing import (
    Case,
    TimedModel,
    TimedToolset,
    TimingTransport,
    run_queries,
    run_query,
)

TOOL_Q = Query("Find all Django views", "tool", "run_command")
DIRECT_Q = Query("What is dependency injection?", "direct")


def _sleepy_toolset(sleep_s: float) -> FunctionToolset:
    def run_command(command: str) -> str:
        """Pretend to grep."""
        time.sleep(sleep_s)
        return "views.py:1: class HomeView"

    ts: FunctionToolset = FunctionToolset()
    ts.add_function(run_command)
    return ts


def _model(delay_s: float = 0.0, calls: int = 1):
    """First turn of a tool query: `calls` run_command calls; then a text answer.
    Every model request first sleeps `delay_s` (the 'generation')."""

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        await asyncio.sleep(delay_s)
        first_turn = len(messages) == 1
        prompt = str(messages[0].parts[-1].content)  # type: ignore[union-attr]
        if first_turn and prompt.startswith("Find"):
            delta: DeltaToolCalls = {
                i: DeltaToolCall(name="run_command", json_args=json.dumps({"command": f"grep {i}"}))
                for i in range(calls)
            }
            yield delta
        else:
            yield "An answer."

    async def plain(messages: list[ModelMessage], info: AgentInfo):
        from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart

        await asyncio.sleep(delay_s)
        prompt = str(messages[0].parts[-1].content)  # type: ignore[union-attr]
        if len(messages) == 1 and prompt.startswith("Find"):
            return ModelResponse(parts=[ToolCallPart("run_command", {"command": "grep x"})])
        return ModelResponse(parts=[TextPart("An answer.")])

    return FunctionModel(plain, stream_function=stream)


def _agent(delay_s: float = 0.0, tool_sleep_s: float = 0.0, calls: int = 1) -> Agent:
    return Agent(
        TimedModel(_model(delay_s, calls)), toolsets=[TimedToolset(_sleepy_toolset(tool_sleep_s))]
    )


def _adds_up(record) -> None:
    parts = record.generation_s + record.tool_s + record.overhead_s
    assert abs(parts - record.total_s) <= 0.01 * record.total_s
    assert record.generation_s >= 0 and record.tool_s >= 0 and record.overhead_s >= 0


def test_sleeping_tool_is_tool_time_not_generation() -> None:
    record = asyncio.run(run_query(_agent(tool_sleep_s=0.2), TOOL_Q))
    assert record.error is None, record.error
    assert record.tool_s >= 0.2
    assert record.generation_s < 0.15  # the model answers instantly
    assert all(t.duration_s < 0.2 for t in record.turns)
    assert record.n_turns == 2
    assert record.decision == "tool" and record.first_tool == "run_command" and record.correct
    assert record.tools_called == [{"name": "run_command", "args": {"command": "grep 0"}}]
    assert [t.name for t in record.tools] == ["run_command"]
    _adds_up(record)


def test_concurrent_tools_count_wall_time_not_the_sum() -> None:
    record = asyncio.run(run_query(_agent(tool_sleep_s=0.3, calls=2), TOOL_Q))
    assert record.error is None, record.error
    assert len(record.tools) == 2
    summed = sum(t.duration_s for t in record.tools)
    assert summed >= 0.6
    union = interval_union([(t.start_s, t.start_s + t.duration_s) for t in record.tools])
    assert record.tool_s == pytest.approx(sum(e - s for s, e in union), abs=1e-6)
    assert 0.3 <= record.tool_s < summed - 0.05  # the two calls overlapped
    _adds_up(record)


@pytest.mark.parametrize("stream", [True, False])
def test_delayed_model_request_is_generation(stream: bool) -> None:
    records = [asyncio.run(run_query(_agent(delay_s=0.3), DIRECT_Q, stream=stream)) for _ in "ab"]
    for record in records:
        assert record.error is None, record.error
        assert record.generation_s >= 0.3
        assert record.tool_s == 0.0
        assert record.decision == "direct" and record.correct
        assert record.output == "An answer."
        _adds_up(record)
    # The least of two runs: a stall of a busy 2-core machine (seen once in a full test
    # run) can land in either, but the delay must never also count as overhead.
    assert min(r.overhead_s for r in records) < 0.2


def test_every_query_adds_up_and_shares_sum_to_one() -> None:
    cases = [Case("t", "seed", TOOL_Q), Case("d", "seed", DIRECT_Q)]
    records = asyncio.run(run_queries(_agent(0.05, 0.1), cases, repeats=2))
    assert [(r.label, r.repeat) for r in records] == [("t", 0), ("d", 0), ("t", 1), ("d", 1)]
    for record in records:
        _adds_up(record)
    summary = summarize(records)
    shares = summary["generation_share"] + summary["tool_share"] + summary["overhead_share"]
    assert shares == pytest.approx(1.0, abs=1e-9)
    assert summary["accuracy"] == 1.0 and summary["tool_accuracy"] == 1.0
    assert summary["n_queries"] == 4 and summary["n_errors"] == 0
    assert summary["e2e_median_s"] > 0


def test_wrong_decision_is_not_correct() -> None:
    record = asyncio.run(run_query(_agent(), Query("Find it, no: explain", "direct")))
    assert record.decision == "tool" and not record.correct
    wrong_tool = asyncio.run(run_query(_agent(), Query("Find views", "tool", "read_file")))
    assert wrong_tool.decision == "tool" and not wrong_tool.correct


def test_a_stop_that_lands_as_the_query_finishes_is_not_lost() -> None:
    """Ctrl-C, SIGTERM and SIGHUP stop a run by cancelling its task. A cancellation that
    arrives while the agent's run is finishing must still stop the run (asyncio.wait_for on
    Python 3.11 swallowed it, and a hung-up `profile` ran on to the end)."""
    running: list[asyncio.Task[None]] = []

    class FinishesAsItIsCancelled:
        async def run(self, query: str, **kwargs: Any) -> Any:
            await asyncio.sleep(0)
            running[0].cancel()  # the stop arrives ...
            return SimpleNamespace(output="done")  # ... as the run finishes

    async def main() -> None:
        running.append(cast("asyncio.Task[None]", asyncio.current_task()))
        agent = cast("Agent[Any, Any]", FinishesAsItIsCancelled())
        await run_query(agent, DIRECT_Q, timeout_s=5)
        await asyncio.sleep(0)  # the run's next step

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())


def test_timeout_is_recorded_and_the_run_goes_on() -> None:
    async def go():
        slow = await run_query(_agent(delay_s=5.0), DIRECT_Q, timeout_s=0.3, label="slow")
        fast = await run_query(_agent(), DIRECT_Q, timeout_s=5.0)
        return slow, fast

    slow, fast = asyncio.run(go())
    assert slow.error is not None and slow.error.startswith("TimeoutError")
    assert not slow.correct
    assert slow.total_s < 2.0
    _adds_up(slow)
    assert fast.error is None and fast.correct
    summary = summarize([slow, fast])
    assert summary["n_errors"] == 1 and summary["accuracy"] == 0.5


# --- the OpenAI path against a fake mlx server (failure injection, SSE timing) ---------


def _sse(content: str, prompt: int, completion: int, cached: int) -> bytes:
    base = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    chunk = {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": content}}]}
    end = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    usage = {
        **base,
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }
    lines = [": keepalive 5/10", ": keepalive 10/10"]
    lines += [f"data: {json.dumps(x)}" for x in (chunk, end, usage)] + ["data: [DONE]"]
    return "".join(f"{line}\n\n" for line in lines).encode()


def _fake_server(request: httpx2.Request) -> httpx2.Response:
    body = json.loads(request.content)
    if "boom" in json.dumps(body["messages"]):
        return httpx2.Response(404, json={"error": "generation thread died"})
    assert body["stream"] and body["stream_options"] == {"include_usage": True}
    return httpx2.Response(
        200,
        headers={"content-type": "text/event-stream"},
        content=_sse("Injection of dependencies.", prompt=120, completion=7, cached=100),
    )


def test_server_error_is_recorded_and_the_run_goes_on() -> None:
    async def go():
        transport = TimingTransport(httpx2.MockTransport(_fake_server))
        async with httpx2.AsyncClient(transport=transport) as client:
            model = openai_model("http://fake.invalid/v1", http_client=client)
            agent = Agent(TimedModel(model), toolsets=[TimedToolset(_sleepy_toolset(0))])
            cases = [Case("bad", "s", Query("boom", "direct")), Case("good", "s", DIRECT_Q)]
            return await run_queries(agent, cases, timeout_s=30)

    bad, good = asyncio.run(go())
    assert bad.error is not None and "generation thread died" in bad.error
    assert not bad.correct and bad.decision is None
    _adds_up(bad)
    assert good.error is None and good.correct
    (turn,) = good.turns
    assert (turn.prompt_tokens, turn.completion_tokens, turn.cached_tokens) == (120, 7, 100)
    assert turn.ttft_source == "prefill" and turn.ttft_s is not None
    assert 0 <= turn.ttft_s <= turn.duration_s
    assert good.requests[0] is not None and good.requests[0]["messages"][-1]["content"] == (
        DIRECT_Q.query
    )
    _adds_up(good)


# --- helpers ---------------------------------------------------------------------------


def test_interval_union_and_overlap() -> None:
    union = interval_union([(0.0, 1.0), (0.5, 2.0), (3.0, 4.0), (5.0, 5.0)])
    assert union == [(0.0, 2.0), (3.0, 4.0)]
    assert interval_overlap(union, [(1.5, 3.5)]) == pytest.approx(1.0)


def test_memory_sampler_reports_a_peak() -> None:
    with ServerMemorySampler(os.getpid(), interval_s=0.01) as sampler:
        deadline = time.monotonic() + 10  # a busy machine may delay the sampler thread
        while sampler.samples < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert sampler.samples >= 2
    assert sampler.peak_rss_mb > 1
    assert ServerMemorySampler(2**22 + 12345).sample() == 0  # no such process: no crash


def test_otlp_export_sends_spans(tmp_path) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    from punie.measurement.otlp import configure_otlp

    posts: list[str] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            posts.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        shutdown = configure_otlp(f"http://127.0.0.1:{server.server_address[1]}")
        try:
            record = asyncio.run(run_query(_agent(), DIRECT_Q))
        finally:
            shutdown()
    finally:
        server.shutdown()
    assert record.error is None
    assert posts and all(p == "/v1/traces" for p in posts)

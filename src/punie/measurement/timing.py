"""Measure where every second of an agent query goes: timed model, toolset and HTTP
wrappers around the production agent, and running queries through it.

Every figure is measured, none estimated. For one query:
- generation = wall time inside model requests (`TimedModel`, a PydanticAI `WrapperModel`);
- tool = wall time inside tool calls not already inside a model request (`TimedToolset`, a
  `WrapperToolset`); tools may run concurrently, so this is the union of their intervals;
- overhead = total - generation - tool, so the three parts add up to the measured total.

Per model turn, the HTTP stream itself is timed (`TimingTransport`, an httpx transport the
OpenAI client uses): mlx_lm's server sends a `: keepalive N/N` comment when the prompt is
fully processed, which is the time to first token (TTFT) even when the first token opens a
tool call the server holds back until it is complete. Without it (the speculative path
sends no progress), TTFT falls back to the first data chunk. Decode rate (the inverse of
TPOT) = (completion tokens - 1) / (last byte - first token). Every data chunk that carries a
token (content, reasoning or a tool call) is stamped on arrival: vLLM's inter-token latencies
(`punie.measurement.records.latency_stats`).

The wrappers only collect raw timestamps; `punie.measurement.records` turns them into records and
summaries.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import ModelRequestParameters, StreamedResponse
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings
from pydantic_ai.toolsets import WrapperToolset
from pydantic_ai.usage import UsageLimits

from punie.agent.loop_guard import GUARD_FIELD, LoopGuardTransport, with_stream
from punie.agent.production import build_agent, openai_model
from punie.agent.queries import QueryFileError, load_queries, spread
from punie.agent.tools import Workspace, workspace_toolset
from punie.errors import StageError
from punie.measurement.records import QueryRecord, QueryTrace, ToolSpan, TurnTrace, build_record

if TYPE_CHECKING:
    from pydantic_ai import Agent, RunContext
    from pydantic_ai.toolsets import ToolsetTool

    from punie.agent.queries import Query


# --------------------------------------------------------------------------------------
# Raw timestamps collected while one query runs (their types are in punie.measurement.records)
# --------------------------------------------------------------------------------------


# The trace of the query running in this task (and the tasks it starts: they copy the
# context, and the trace object is shared, not copied).
_TRACE: ContextVar[QueryTrace | None] = ContextVar("punie_measure_trace", default=None)


def _open_turn() -> TurnTrace | None:
    trace = _TRACE.get()
    if trace is None:
        return None
    turn = TurnTrace(start=time.perf_counter())
    trace.turns.append(turn)
    return turn


def _current_turn() -> TurnTrace | None:
    trace = _TRACE.get()
    if trace is None or not trace.turns or trace.turns[-1].end is not None:
        return None
    return trace.turns[-1]


def describe_error(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}"[:500] if text else type(e).__name__


# --------------------------------------------------------------------------------------
# Wrappers
# --------------------------------------------------------------------------------------


class TimedModel(WrapperModel):
    """Times every model request of the query being measured (streamed or not)."""

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        turn = _open_turn()
        try:
            response = await self.wrapped.request(
                messages, model_settings, model_request_parameters
            )
        except BaseException as e:
            if turn is not None:
                turn.error = describe_error(e)
            raise
        finally:
            if turn is not None:
                turn.end = time.perf_counter()
        if turn is not None:
            turn.response = response
        return response

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncGenerator[StreamedResponse]:
        turn = _open_turn()
        try:
            async with self.wrapped.request_stream(
                messages, model_settings, model_request_parameters, run_context
            ) as stream:
                try:
                    yield stream
                finally:
                    if turn is not None:
                        turn.end = time.perf_counter()
                        turn.response = stream.get()
        except BaseException as e:
            if turn is not None:
                turn.error = turn.error or describe_error(e)
            raise
        finally:
            if turn is not None and turn.end is None:
                turn.end = time.perf_counter()


@dataclass
class TimedToolset(WrapperToolset[Any]):
    """Times every tool call of the query being measured."""

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        trace = _TRACE.get()
        span = ToolSpan(name=name, args=dict(tool_args), start=time.perf_counter())
        if trace is not None:
            trace.tools.append(span)
        try:
            result = await self.wrapped.call_tool(name, tool_args, ctx, tool)
            span.output = str(result)
            return result
        except BaseException as e:
            span.error = describe_error(e)
            raise
        finally:
            span.end = time.perf_counter()


# An unfinished SSE line longer than this is dropped (no chunk of mlx_lm's comes close).
_MAX_LINE = 1 << 20
# A chunk carries a token when its delta has one of these (non-empty).
_TOKEN_KEYS = (b'"content"', b'"reasoning"', b'"tool_calls"')


def _delta(line: bytes) -> dict[str, Any]:
    """The `delta` of a streamed chat-completion chunk (`data: {...}`), or {}."""
    try:
        delta = json.loads(line[5:])["choices"][0]["delta"]
    except (ValueError, KeyError, IndexError, TypeError):
        return {}
    return delta if isinstance(delta, dict) else {}


class _TimedStream(httpx2.AsyncByteStream):
    """Passes the response bytes through, stamping prefill-done, first data and last byte,
    the arrival of every data chunk that carries a token (content, reasoning or a tool call:
    the inter-token latencies), and counting thinking: chunks whose delta carries `reasoning`
    text (mlx_lm server streams a `<think>` block there, one chunk per token), with the first
    one's arrival and the first answer or tool-call chunk after it. Nothing after
    `data: [DONE]` is scanned: the
    OpenAI SDK drains a finished response by iterating its stream again, and a replayable
    stream (httpx's MockTransport) would be counted twice."""

    def __init__(self, inner: httpx2.AsyncByteStream, turn: TurnTrace) -> None:
        self._inner = inner
        self._turn = turn
        self._pending = b""
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._scan(chunk, time.perf_counter())
            yield chunk

    def _scan(self, chunk: bytes, now: float) -> None:
        if self._done:
            return
        turn = self._turn
        turn.last_byte = now
        lines = (self._pending + chunk).split(b"\n")
        self._pending = lines.pop()
        if len(self._pending) > _MAX_LINE:
            self._pending = b""
        for line in lines:
            if line.startswith(b": keepalive") and turn.prefill_done is None:
                done, _, total = line[len(b": keepalive") :].strip().partition(b"/")
                if done and done == total:
                    turn.prefill_done = now
            elif line.startswith(b"data:") and line[5:].strip() == b"[DONE]":
                self._done = True
                return
            elif line.startswith(b"data:"):
                if turn.first_data is None:
                    turn.first_data = now
                if GUARD_FIELD.encode() in line:
                    turn.loop_stopped = True
                self._scan_delta(line, now)

    def _scan_delta(self, line: bytes, now: float) -> None:
        if not any(key in line for key in _TOKEN_KEYS):
            return  # no token in this chunk (the finish reason, usage): no JSON to parse
        delta = _delta(line)
        turn = self._turn
        if delta.get("content") or delta.get("reasoning") or delta.get("tool_calls"):
            turn.token_times.append(now)
        if delta.get("reasoning"):
            turn.reasoning_chunks += 1
            if turn.first_reasoning is None:
                turn.first_reasoning = now
        if (
            turn.first_reasoning is not None
            and turn.first_answer is None
            and (delta.get("content") or delta.get("tool_calls"))
        ):
            turn.first_answer = now

    async def aclose(self) -> None:
        await self._inner.aclose()


class TimingTransport(httpx2.AsyncBaseTransport):
    """httpx transport that records each model request's body and stream timestamps."""

    def __init__(self, inner: httpx2.AsyncBaseTransport | None = None) -> None:
        self._inner = inner or httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        turn = _current_turn()
        if turn is not None:
            with contextlib.suppress(ValueError, httpx2.RequestNotRead):
                turn.request_body = json.loads(request.content)
        response = await self._inner.handle_async_request(request)
        if turn is None or not isinstance(response.stream, httpx2.AsyncByteStream):
            return response
        return with_stream(response, _TimedStream(response.stream, turn), request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def timing_http_client(timeout_s: float, loop_guard_words: int | None = None) -> httpx2.AsyncClient:
    """The HTTP client to give the OpenAI model so turns get TTFT and decode timings; with
    `loop_guard_words`, a streamed answer that repeats a window of that many words is ended
    (`punie.agent.loop_guard`, under the timing, so the timings see what the agent sees)."""
    inner: httpx2.AsyncBaseTransport = httpx2.AsyncHTTPTransport()
    if loop_guard_words:
        inner = LoopGuardTransport(inner, loop_guard_words)
    return httpx2.AsyncClient(transport=TimingTransport(inner), timeout=httpx2.Timeout(timeout_s))


@asynccontextmanager
async def timed_agent(
    base_url: str,
    workspace_root: Path,
    *,
    request_timeout_s: float,
    tool_timeout_s: float,
    tool_output_cap: int,
    max_tokens: int | None = None,
    extra_body: dict[str, Any] | None = None,
    loop_guard_words: int | None = None,
) -> AsyncGenerator[Agent[None, str]]:
    """The production agent (`punie.agent`) with timing wrappers around model, tools and
    HTTP. Stages that benchmark (profile, speculative, final) all start here."""

    async with timing_http_client(request_timeout_s, loop_guard_words) as client:
        model = openai_model(base_url, timeout_s=request_timeout_s, http_client=client)
        ws = Workspace(Path(workspace_root), tool_timeout_s, tool_output_cap)
        toolset = TimedToolset(workspace_toolset(ws))
        yield build_agent(TimedModel(model), toolset, max_tokens=max_tokens, extra_body=extra_body)


# --------------------------------------------------------------------------------------
# Running queries
# --------------------------------------------------------------------------------------


async def _drain(ctx: RunContext[Any], events: AsyncIterable[Any]) -> None:
    # Passing a handler makes the agent stream each model response (so TTFT exists);
    # the events themselves are not needed.
    async for _ in events:
        pass


async def run_query(
    agent: Agent[Any, Any],
    query: Query,
    *,
    label: str = "",
    set_name: str = "",
    repeat: int = 0,
    timeout_s: float | None = None,
    max_turns: int | None = None,
    stream: bool = True,
) -> QueryRecord:
    """Run one query through `agent` (built with TimedModel/TimedToolset) and measure it.

    `stream` (default) streams each model response, which TTFT and decode rates need.

    Any failure (server error, timeout, turn limit) is recorded in `error`, never raised,
    so a run goes on; Ctrl-C and cancellation still propagate.
    """

    trace = QueryTrace()
    token = _TRACE.set(trace)
    output: str | None = None
    error: str | None = None
    limits = UsageLimits(request_limit=max_turns) if max_turns else None
    t0 = time.perf_counter()
    try:
        handler = _drain if stream else None
        # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation (Ctrl-C, SIGTERM,
        # SIGHUP) that lands as the query finishes (cpython#86296), and the run went on.
        async with asyncio.timeout(timeout_s):
            result = await agent.run(query.query, event_stream_handler=handler, usage_limits=limits)
        output = str(result.output)
    except TimeoutError:
        error = f"TimeoutError: query took longer than {timeout_s:g}s"
    except Exception as e:
        error = describe_error(e)
    finally:
        t1 = time.perf_counter()
        _TRACE.reset(token)
    return build_record(
        trace,
        query,
        t0,
        t1,
        label=label,
        set_name=set_name,
        repeat=repeat,
        output=output,
        error=error,
    )


@dataclass(frozen=True)
class Case:
    """One query to run, with where it comes from."""

    label: str
    set: str
    query: Query


def add_queries_argument(parser: argparse.ArgumentParser) -> None:
    """`--queries PATH...`: query files instead of the sets of params `queries`."""
    parser.add_argument(
        "--queries",
        type=Path,
        nargs="+",
        metavar="PATH",
        help="query set YAML file(s) (default: every set of params queries)",
    )


def load_cases(sets: Mapping[str, Path] | Sequence[Path], per_set: int | None = None) -> list[Case]:
    """Cases labelled `<set>-<n>` (1-based), from named query files (`query_sets`) or from
    files named after their stem; with `per_set` (params `queries.per_set`), at most that many
    of each file, evenly spread, keeping their numbers in the file."""
    named = sets if isinstance(sets, Mapping) else {Path(p).stem: Path(p) for p in sets}
    cases: list[Case] = []
    for name, path in named.items():
        try:
            queries = load_queries(path)
        except QueryFileError as e:
            raise StageError(str(e)) from None
        cases += [Case(f"{name}-{i + 1}", name, queries[i]) for i in spread(len(queries), per_set)]
    return cases


async def run_case(
    agent: Agent[Any, Any],
    case: Case,
    repeat: int,
    *,
    timeout_s: float | None,
    max_turns: int | None,
) -> QueryRecord:
    """`run_query` for one case, labelled with its name and set."""
    return await run_query(
        agent,
        case.query,
        label=case.label,
        set_name=case.set,
        repeat=repeat,
        timeout_s=timeout_s,
        max_turns=max_turns,
    )


async def run_queries(
    agent: Agent[Any, Any],
    cases: Sequence[Case],
    *,
    repeats: int = 1,
    timeout_s: float | None = None,
    max_turns: int | None = None,
    on_record: Callable[[QueryRecord], None] | None = None,
) -> list[QueryRecord]:
    """Every case `repeats` times, one after another (timings must not overlap)."""
    records: list[QueryRecord] = []
    for repeat in range(repeats):
        for case in cases:
            record = await run_case(agent, case, repeat, timeout_s=timeout_s, max_turns=max_turns)
            records.append(record)
            if on_record is not None:
                on_record(record)
    return records

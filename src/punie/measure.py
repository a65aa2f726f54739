"""Measure where every second of an agent query goes: timed model and toolset wrappers,
per-query records, server memory sampling and summaries.

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
TPOT) = (completion tokens - 1) / (last byte - first token).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models import ModelRequestParameters, StreamedResponse
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings
from pydantic_ai.toolsets import WrapperToolset

if TYPE_CHECKING:
    from pydantic_ai import Agent, RunContext
    from pydantic_ai.toolsets import ToolsetTool

    from punie.queries import Query


# --------------------------------------------------------------------------------------
# Raw timestamps collected while one query runs
# --------------------------------------------------------------------------------------


@dataclass
class _Turn:
    start: float
    end: float | None = None
    prefill_done: float | None = None  # server's `: keepalive N/N` arrived
    first_data: float | None = None  # first SSE data chunk arrived
    last_byte: float | None = None
    request_body: dict[str, Any] | None = None  # exactly what was sent (for the direct floor)
    response: ModelResponse | None = None
    error: str | None = None


@dataclass
class _ToolSpan:
    name: str
    args: dict[str, Any]
    start: float
    end: float | None = None
    error: str | None = None


@dataclass
class _Trace:
    turns: list[_Turn] = field(default_factory=list)
    tools: list[_ToolSpan] = field(default_factory=list)


# The trace of the query running in this task (and the tasks it starts: they copy the
# context, and the trace object is shared, not copied).
_TRACE: ContextVar[_Trace | None] = ContextVar("punie_measure_trace", default=None)


def _open_turn() -> _Turn | None:
    trace = _TRACE.get()
    if trace is None:
        return None
    turn = _Turn(start=time.perf_counter())
    trace.turns.append(turn)
    return turn


def _current_turn() -> _Turn | None:
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
        span = _ToolSpan(name=name, args=dict(tool_args), start=time.perf_counter())
        if trace is not None:
            trace.tools.append(span)
        try:
            return await self.wrapped.call_tool(name, tool_args, ctx, tool)
        except BaseException as e:
            span.error = describe_error(e)
            raise
        finally:
            span.end = time.perf_counter()


class _TimedStream(httpx2.AsyncByteStream):
    """Passes the response bytes through, stamping prefill-done, first data and last byte."""

    def __init__(self, inner: httpx2.AsyncByteStream, turn: _Turn) -> None:
        self._inner = inner
        self._turn = turn
        self._pending = b""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._scan(chunk, time.perf_counter())
            yield chunk

    def _scan(self, chunk: bytes, now: float) -> None:
        turn = self._turn
        turn.last_byte = now
        lines = (self._pending + chunk).split(b"\n")
        self._pending = lines.pop()[-256:]  # only line starts matter
        for line in lines:
            if line.startswith(b": keepalive") and turn.prefill_done is None:
                done, _, total = line[len(b": keepalive") :].strip().partition(b"/")
                if done and done == total:
                    turn.prefill_done = now
            elif (
                line.startswith(b"data:")
                and turn.first_data is None
                and line[5:].strip() != b"[DONE]"
            ):
                turn.first_data = now

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
        return httpx2.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_TimedStream(response.stream, turn),
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def timing_http_client(timeout_s: float) -> httpx2.AsyncClient:
    """The HTTP client to give the OpenAI model so turns get TTFT and decode timings."""
    return httpx2.AsyncClient(transport=TimingTransport(), timeout=httpx2.Timeout(timeout_s))


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
) -> AsyncGenerator[Agent[None, str]]:
    """The production agent (punie.agent + punie.tools) with timing wrappers around model,
    tools and HTTP. Stages that benchmark (profile, speculative, final) all start here."""
    from punie.agent import build_agent, openai_model
    from punie.tools import Workspace, workspace_toolset

    async with timing_http_client(request_timeout_s) as client:
        model = openai_model(base_url, timeout_s=request_timeout_s, http_client=client)
        ws = Workspace(Path(workspace_root), tool_timeout_s, tool_output_cap)
        toolset = TimedToolset(workspace_toolset(ws))
        yield build_agent(TimedModel(model), toolset, max_tokens=max_tokens, extra_body=extra_body)


# --------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TurnRecord:
    index: int
    start_s: float  # from the query's start
    duration_s: float
    ttft_s: float | None
    ttft_source: str | None  # "prefill" (server progress event) or "first_chunk"
    decode_s: float | None
    decode_tps: float | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    finish_reason: str | None
    tool_calls: list[dict[str, Any]]
    text: str
    error: str | None


@dataclass(frozen=True)
class ToolRecord:
    name: str
    args: dict[str, Any]
    start_s: float
    duration_s: float
    error: str | None


@dataclass(frozen=True)
class QueryRecord:
    label: str
    set: str
    query: str
    expect: str
    expected_tool: str | None
    repeat: int
    total_s: float
    generation_s: float
    tool_s: float
    overhead_s: float
    n_turns: int
    decision: str | None  # "tool" | "direct" | None (no model answer at all)
    first_tool: str | None
    tools_called: list[dict[str, Any]]
    correct: bool
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    output: str | None
    turns: list[TurnRecord]
    tools: list[ToolRecord]
    # Exact request bodies per turn, for the direct floor; not written to the records file.
    requests: list[dict[str, Any] | None] = field(default_factory=list, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("requests")
        return data


def _union(intervals: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _length(union: Sequence[tuple[float, float]]) -> float:
    return sum((end - start for start, end in union), 0.0)


def _overlap(a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]]) -> float:
    return sum((max(0.0, min(e1, e2) - max(s1, s2)) for s1, e1 in a for s2, e2 in b), 0.0)


def _tool_calls(response: ModelResponse | None) -> list[dict[str, Any]]:
    if response is None:
        return []
    return [
        {"name": p.tool_name, "args": p.args_as_dict()}
        for p in response.parts
        if isinstance(p, ToolCallPart)
    ]


def _turn_record(i: int, turn: _Turn, t0: float) -> TurnRecord:
    end = turn.end if turn.end is not None else time.perf_counter()
    usage = turn.response.usage if turn.response is not None else None
    prompt = usage.input_tokens if usage else 0
    completion = usage.output_tokens if usage else 0
    cached = usage.cache_read_tokens if usage else 0
    first, source = (
        (turn.prefill_done, "prefill")
        if turn.prefill_done is not None
        else (turn.first_data, "first_chunk")
        if turn.first_data is not None
        else (None, None)
    )
    ttft = first - turn.start if first is not None else None
    decode_s = decode_tps = None
    if first is not None and turn.last_byte is not None and completion > 1:
        decode_s = max(turn.last_byte - first, 0.0)
        decode_tps = (completion - 1) / decode_s if decode_s > 0 else None
    text = ""
    if turn.response is not None:
        text = "".join(p.content for p in turn.response.parts if isinstance(p, TextPart))
    return TurnRecord(
        index=i,
        start_s=turn.start - t0,
        duration_s=end - turn.start,
        ttft_s=ttft,
        ttft_source=source,
        decode_s=decode_s,
        decode_tps=decode_tps,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        finish_reason=turn.response.finish_reason if turn.response is not None else None,
        tool_calls=_tool_calls(turn.response),
        text=text[:2000],
        error=turn.error,
    )


def build_record(
    trace: _Trace,
    query: Query,
    *,
    t0: float,
    t1: float,
    label: str,
    set_name: str,
    repeat: int,
    output: str | None,
    error: str | None,
) -> QueryRecord:
    """Turn raw timestamps into a record whose generation + tool + overhead == total."""
    total = t1 - t0
    gen_union = _union([(t.start, t.end if t.end is not None else t1) for t in trace.turns])
    tool_union = _union([(s.start, s.end if s.end is not None else t1) for s in trace.tools])
    generation = _length(gen_union)
    # A tool interval inside a model request is already counted as generation.
    tool = _length(tool_union) - _overlap(tool_union, gen_union)
    turns = [_turn_record(i, t, t0) for i, t in enumerate(trace.turns)]
    answered = [t for t in turns if t.error is None and (t.tool_calls or t.text)]
    first = answered[0] if answered else (turns[0] if turns and turns[0].error is None else None)
    decision = None if first is None else ("tool" if first.tool_calls else "direct")
    first_tool = first.tool_calls[0]["name"] if first is not None and first.tool_calls else None
    right_tool = query.expect != "tool" or query.tool is None or first_tool == query.tool
    return QueryRecord(
        label=label,
        set=set_name,
        query=query.query,
        expect=query.expect,
        expected_tool=query.tool,
        repeat=repeat,
        total_s=total,
        generation_s=generation,
        tool_s=tool,
        overhead_s=total - generation - tool,
        n_turns=len(turns),
        decision=decision,
        first_tool=first_tool,
        tools_called=[c for t in turns for c in t.tool_calls],
        correct=error is None and decision == query.expect and right_tool,
        error=error,
        prompt_tokens=sum(t.prompt_tokens for t in turns),
        completion_tokens=sum(t.completion_tokens for t in turns),
        cached_tokens=sum(t.cached_tokens for t in turns),
        output=None if output is None else output[:2000],
        turns=turns,
        tools=[
            ToolRecord(
                name=s.name,
                args=s.args,
                start_s=s.start - t0,
                duration_s=(s.end if s.end is not None else t1) - s.start,
                error=s.error,
            )
            for s in trace.tools
        ],
        requests=[t.request_body for t in trace.turns],
    )


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
    from pydantic_ai.usage import UsageLimits

    trace = _Trace()
    token = _TRACE.set(trace)
    output: str | None = None
    error: str | None = None
    limits = UsageLimits(request_limit=max_turns) if max_turns else None
    t0 = time.perf_counter()
    try:
        handler = _drain if stream else None
        run = agent.run(query.query, event_stream_handler=handler, usage_limits=limits)
        result = await asyncio.wait_for(run, timeout_s)
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
        t0=t0,
        t1=t1,
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


def load_cases(paths: Sequence[Path], set_names: Sequence[str] | None = None) -> list[Case]:
    """Cases labelled `<set>-<n>` (1-based); a set is named after its file unless named."""
    from punie.errors import StageError
    from punie.queries import QueryFileError, load_queries

    cases: list[Case] = []
    for i, path in enumerate(paths):
        name = set_names[i] if set_names else Path(path).stem
        try:
            queries = load_queries(path)
        except QueryFileError as e:
            raise StageError(str(e)) from None
        cases += [Case(f"{name}-{n}", name, q) for n, q in enumerate(queries, start=1)]
    return cases


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
            record = await run_query(
                agent,
                case.query,
                label=case.label,
                set_name=case.set,
                repeat=repeat,
                timeout_s=timeout_s,
                max_turns=max_turns,
            )
            records.append(record)
            if on_record is not None:
                on_record(record)
    return records


# --------------------------------------------------------------------------------------
# Server memory
# --------------------------------------------------------------------------------------


class ServerMemorySampler:
    """Samples the resident memory of a process (and its children) in a background thread.

    The server's memory, not ours: the model lives in the server process.
    """

    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak_rss_bytes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def peak_rss_mb(self) -> float:
        return self.peak_rss_bytes / 2**20

    def sample(self) -> int:
        import psutil

        try:
            proc = psutil.Process(self.pid)
            procs = [proc, *proc.children(recursive=True)]
        except psutil.Error:
            return 0
        rss = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                rss += p.memory_info().rss
        self.samples += 1
        self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
        return rss

    def _loop(self) -> None:
        self.sample()
        while not self._stop.wait(self.interval_s):
            self.sample()

    def start(self) -> ServerMemorySampler:
        self._thread = threading.Thread(target=self._loop, name="server-rss", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ServerMemorySampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _rate(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def summarize(records: Sequence[QueryRecord]) -> dict[str, Any]:
    """Flat figures over records. Latency and token figures use the queries that finished;
    accuracy counts a failed query as wrong."""
    ok = [r for r in records if r.error is None]
    total = sum(r.total_s for r in ok)
    turns = [t for r in ok for t in r.turns]
    ttfts = [t.ttft_s for t in turns if t.ttft_s is not None]
    decoded = [t for t in turns if t.decode_s and t.completion_tokens > 1]
    decode_time = sum(t.decode_s or 0.0 for t in decoded)
    tool_records = [r for r in records if r.expect == "tool"]
    return {
        "accuracy": _rate([r.correct for r in records]),
        "tool_accuracy": _rate([r.correct for r in tool_records]),
        "direct_accuracy": _rate([r.correct for r in records if r.expect == "direct"]),
        "e2e_mean_s": _mean([r.total_s for r in ok]),
        "e2e_median_s": statistics.median([r.total_s for r in ok]) if ok else None,
        "generation_share": sum(r.generation_s for r in ok) / total if total else None,
        "tool_share": sum(r.tool_s for r in ok) / total if total else None,
        "overhead_share": sum(r.overhead_s for r in ok) / total if total else None,
        "ttft_mean_s": _mean(ttfts),
        "decode_tps": sum(t.completion_tokens - 1 for t in decoded) / decode_time
        if decode_time
        else None,
        "completion_tokens_mean": _mean([r.completion_tokens for r in ok]),
        "turns_mean": _mean([r.n_turns for r in ok]),
        "n_queries": len(records),
        "n_errors": len(records) - len(ok),
    }


def accuracy_by_set(records: Sequence[QueryRecord]) -> dict[str, float | None]:
    sets = dict.fromkeys(r.set for r in records)
    return {s: _rate([r.correct for r in records if r.set == s]) for s in sets}


# --------------------------------------------------------------------------------------
# Tracing (opt-in)
# --------------------------------------------------------------------------------------


def configure_otlp(endpoint: str, service_name: str = "punie-lab") -> Callable[[], None]:
    """Export every agent run's spans (PydanticAI instrumentation) to an OTLP/HTTP endpoint.

    `endpoint` is the collector's base URL (e.g. http://127.0.0.1:4318) or its full
    `/v1/traces` URL. Returns a function that flushes and stops the exporter.
    Needs the `otel` extra: pip install 'punie[otel]'.
    """
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as e:
        raise ImportError(
            f"OTLP export needs the otel extra (pip install 'punie[otel]'): {e}"
        ) from None
    from pydantic_ai import Agent
    from pydantic_ai.models.instrumented import InstrumentationSettings

    url = endpoint.rstrip("/")
    if not url.endswith("/v1/traces"):
        url += "/v1/traces"
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    Agent.instrument_all(InstrumentationSettings(tracer_provider=provider))

    def shutdown() -> None:
        Agent.instrument_all(False)
        provider.force_flush()
        provider.shutdown()

    return shutdown

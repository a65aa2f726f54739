"""Per-query records built from the raw timestamps `punie.measurement.timing` collects, and the flat
summaries the stages report.

A record's generation, tool and overhead times add up to its total: generation is the union
of the model-request intervals, tool the union of the tool-call intervals minus what falls
inside a model request (already counted as generation), overhead the rest.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart

from punie.agent.grounding import grounded
from punie.measurement.latency import percentile

if TYPE_CHECKING:
    from punie.agent.queries import Query


# --------------------------------------------------------------------------------------
# Raw timestamps collected while one query runs
# --------------------------------------------------------------------------------------

# Filled in by punie.measurement.timing's wrappers. They live here, with what reads them, so that
# measure imports records and never the reverse.


@dataclass
class TurnTrace:
    start: float
    end: float | None = None
    prefill_done: float | None = None  # server's `: keepalive N/N` arrived
    first_data: float | None = None  # first SSE data chunk arrived
    last_byte: float | None = None
    # Thinking: streamed chunks whose delta carries `reasoning` text (one per token: mlx_lm
    # server sends the `<think>` block in that field), the first one's arrival, and the
    # first answer or tool-call chunk after it.
    reasoning_chunks: int = 0
    first_reasoning: float | None = None
    first_answer: float | None = None
    # Arrival of every data chunk carrying a token (content, reasoning or a tool call).
    token_times: list[float] = field(default_factory=list)
    loop_stopped: bool = False  # the loop guard ended this turn (punie.agent.loop_guard)
    request_body: dict[str, Any] | None = None  # exactly what was sent (for the direct floor)
    response: ModelResponse | None = None
    error: str | None = None


@dataclass
class ToolSpan:
    name: str
    args: dict[str, Any]
    start: float
    end: float | None = None
    error: str | None = None
    output: str | None = None  # what the tool returned, for `grounded` (not recorded)


@dataclass
class QueryTrace:
    turns: list[TurnTrace] = field(default_factory=list)
    tools: list[ToolSpan] = field(default_factory=list)


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
    thinking_tokens: int = 0  # streamed chunks of reasoning text (part of completion_tokens)
    thinking_s: float = 0.0  # first reasoning chunk -> first answer/tool chunk (or the end)
    loop_stopped: bool = False  # ended by the loop guard (finish_reason then reads "stop")
    # Arrival of every streamed chunk that carried a token (content, reasoning or a tool
    # call), in seconds from the turn's start: the inter-token latencies (ITL).
    token_times_s: list[float] = field(default_factory=list)


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
    # The answer after a tool call states a fact of the tool's output (punie.agent.grounding);
    # None without a tool result or an answer.
    grounded: bool | None = None
    thinking_tokens: int = 0  # sum over turns (part of completion_tokens)
    thinking_s: float = 0.0  # sum over turns
    # Exact request bodies per turn, for the direct floor; not written to the records file.
    requests: list[dict[str, Any] | None] = field(default_factory=list, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("requests")
        return data


def interval_union(intervals: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def interval_length(union: Sequence[tuple[float, float]]) -> float:
    return sum((end - start for start, end in union), 0.0)


def interval_overlap(a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]]) -> float:
    return sum((max(0.0, min(e1, e2) - max(s1, s2)) for s1, e1 in a for s2, e2 in b), 0.0)


def _tool_calls(response: ModelResponse | None) -> list[dict[str, Any]]:
    if response is None:
        return []
    return [
        {"name": p.tool_name, "args": p.args_as_dict()}
        for p in response.parts
        if isinstance(p, ToolCallPart)
    ]


def _turn_record(i: int, turn: TurnTrace, t0: float) -> TurnRecord:
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
    thinking_s = 0.0
    if turn.first_reasoning is not None:
        stop = next(t for t in (turn.first_answer, turn.last_byte, end) if t is not None)
        thinking_s = max(stop - turn.first_reasoning, 0.0)
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
        thinking_tokens=turn.reasoning_chunks,
        thinking_s=thinking_s,
        loop_stopped=turn.loop_stopped,
        token_times_s=[round(t - turn.start, 6) for t in turn.token_times],
    )


def build_record(
    trace: QueryTrace,
    query: Query,
    t0: float,
    t1: float,
    *,
    label: str,
    set_name: str,
    repeat: int,
    output: str | None,
    error: str | None,
) -> QueryRecord:
    """Turn raw timestamps into a record whose generation + tool + overhead == total."""
    total = t1 - t0
    gen_union = interval_union([(t.start, t.end if t.end is not None else t1) for t in trace.turns])
    tool_union = interval_union(
        [(s.start, s.end if s.end is not None else t1) for s in trace.tools]
    )
    generation = interval_length(gen_union)
    # A tool interval inside a model request is already counted as generation.
    tool = interval_length(tool_union) - interval_overlap(tool_union, gen_union)
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
        grounded=grounded(
            output, [s.output for s in trace.tools if s.output is not None], query.query
        ),
        thinking_tokens=sum(t.thinking_tokens for t in turns),
        thinking_s=sum(t.thinking_s for t in turns),
        requests=[t.request_body for t in trace.turns],
    )


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
    completion = sum(r.completion_tokens for r in ok)
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
        # Thinking (a `<think>` block streamed as `reasoning`): tokens per query, their share
        # of the completion tokens, and the thinking seconds' share of the end-to-end time.
        "thinking_tokens_mean": _mean([r.thinking_tokens for r in ok]),
        "thinking_share": sum(r.thinking_tokens for r in ok) / completion if completion else None,
        "thinking_time_share": sum(r.thinking_s for r in ok) / total if total else None,
        "grounded_share": _rate([r.grounded for r in records if r.grounded is not None]),
        "turns_mean": _mean([r.n_turns for r in ok]),
        "n_queries": len(records),
        "n_errors": len(records) - len(ok),
    }


def time_split(records: Sequence[QueryRecord]) -> dict[str, float | None]:
    """Mean seconds per finished query in three parts that add up to its end-to-end mean:
    waiting for each turn's first token (prompt processing, the server's queue), generating
    after it (what speculative decoding and shorter answers shrink), and outside the model
    (tools and framework)."""
    ok = [r for r in records if r.error is None]
    first = [sum(t.ttft_s or 0.0 for t in r.turns) for r in ok]
    return {
        "first_token_s": _mean(first),
        "after_first_token_s": _mean([r.generation_s - f for r, f in zip(ok, first, strict=True)]),
        "outside_model_s": _mean([r.total_s - r.generation_s for r in ok]),
    }


def cut_off(records: Sequence[QueryRecord]) -> dict[str, float | None]:
    """Turns the server stopped at `max_tokens` (finish reason "length"), their share of the
    completion tokens and their queries' share of the end-to-end time: a model looping to the
    cap costs time and adds no answer, so a few such turns can carry much of a mean. Turns the
    loop guard ended instead (`loop_stops`) are not cut off: they ended before the cap."""
    ok = [r for r in records if r.error is None]
    turns = [t for r in ok for t in r.turns]
    cut = [t for t in turns if t.finish_reason == "length"]
    tokens = sum(t.completion_tokens for t in turns)
    seconds = sum(r.total_s for r in ok)
    looped = sum(r.total_s for r in ok if any(t.finish_reason == "length" for t in r.turns))
    return {
        "cut_off_turns": len(cut),
        "cut_off_tokens_share": sum(t.completion_tokens for t in cut) / tokens if tokens else None,
        "cut_off_time_share": looped / seconds if seconds else None,
        "loop_stops": sum(t.loop_stopped for t in turns),
    }


def accuracy_by_set(records: Sequence[QueryRecord]) -> dict[str, float | None]:
    sets = dict.fromkeys(r.set for r in records)
    return {s: _rate([r.correct for r in records if r.set == s]) for s in sets}


# --------------------------------------------------------------------------------------
# Per-request latency in vLLM's vocabulary
# --------------------------------------------------------------------------------------


def latency_samples(records: Sequence[QueryRecord]) -> dict[str, list[float]]:
    """vLLM's per-request samples over the turns that ended without error, of the queries
    that finished: TTFT, TPOT (turns of two tokens or more), every ITL gap, and E2EL."""
    turns = [t for r in records if r.error is None for t in r.turns if t.error is None]
    return {
        "ttft": [t.ttft_s for t in turns if t.ttft_s is not None],
        "tpot": [
            (t.duration_s - t.ttft_s) / (t.completion_tokens - 1)
            for t in turns
            if t.ttft_s is not None and t.completion_tokens > 1
        ],
        "itl": [
            b - a for t in turns for a, b in zip(t.token_times_s, t.token_times_s[1:], strict=False)
        ],
        "e2el": [t.duration_s for t in turns],
    }


def latency_stats(records: Sequence[QueryRecord]) -> dict[str, float | None]:
    """Median and p99 of vLLM's per-request latencies (named in `punie.measurement.latency`):
    `ttft_median_s`, `ttft_p99_s`, `tpot_median_s`, `tpot_p99_s`, `itl_median_s`, `itl_p99_s`,
    `e2el_median_s`, `e2el_p99_s` (None without samples)."""
    out: dict[str, float | None] = {}
    for name, values in latency_samples(records).items():
        out[f"{name}_median_s"] = percentile(values, 50)
        out[f"{name}_p99_s"] = percentile(values, 99)
    return out


def answer_of(record: QueryRecord) -> str:
    """What the agent did and said: its tool calls, then its final answer (two runs of the
    same model at temperature 0 must give the same)."""
    calls = json.dumps(record.tools_called, sort_keys=True)
    return f"tools={calls} answer={record.output!r}"


def paired(
    baseline: Sequence[QueryRecord], records: Sequence[QueryRecord]
) -> list[tuple[QueryRecord, QueryRecord]]:
    """Each record with the baseline's record of the same query and repeat."""
    by_key = {(r.label, r.repeat): r for r in baseline}
    return [(by_key[(r.label, r.repeat)], r) for r in records if (r.label, r.repeat) in by_key]


def lost_queries(baseline: Sequence[QueryRecord], records: Sequence[QueryRecord]) -> list[str]:
    """The queries the baseline decided right and `records` wrong, each with what both did:
    `"Show the file shop/urls.py": read_file -> run_command`."""
    return [f'"{r.query}": {_did(b)} -> {_did(r)}' for b, r in paired(baseline, records)
            if b.correct and not r.correct]  # fmt: skip


def _did(record: QueryRecord) -> str:
    if record.error:
        return "error"
    return record.first_tool or record.decision or "no answer"

"""Thinking tokens counted apart from answer tokens: the SSE scanner on synthetic mlx_lm
streams (a `<think>` block arrives in the delta's `reasoning` field, one chunk per token),
the records and summaries built from it, and the profile's metrics and report.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import httpx2
import pytest
from pydantic_ai import Agent

from punie.agent.production import openai_model
from punie.agent.queries import Query
from punie.measurement.benchmark import params_agent, params_server
from punie.measurement.levers import server_config
from punie.measurement.records import QueryTrace, TurnTrace, build_record, summarize
from punie.measurement.timing import (
    TimedModel,
    TimedToolset,
    TimingTransport,
    run_query,
)
from punie.reports.profile import QUERY_COLUMNS, markdown_report
from punie.serving.hub import resolve_model
from punie.stages.profile import METRIC_KEYS, _metrics

from .chat import scan
from .conftest import tiny_params

DIRECT_Q = Query("What is dependency injection?", "direct")
BASE = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}


def _chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    choice = {"index": 0, "delta": {"role": "assistant", **delta}, "finish_reason": finish}
    return "data: " + json.dumps({**BASE, "choices": [choice]})


def _usage(prompt: int, completion: int) -> str:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    return "data: " + json.dumps({**BASE, "choices": [], "usage": usage})


def stream_lines(reasoning: list[str], content: list[str], tool_call: bool = False) -> list[str]:
    """An mlx_lm server stream: prefill progress, reasoning chunks, answer chunks (or one
    tool-call chunk), the finish chunk, usage and [DONE]."""
    lines = [": keepalive 4/8", ": keepalive 8/8"]
    lines += [_chunk({"reasoning": r}) for r in reasoning]
    lines += [_chunk({"content": c}) for c in content]
    if tool_call:
        call = {
            "index": 0,
            "id": "call_0",
            "type": "function",
            "function": {"name": "run_command", "arguments": '{"command": "ls"}'},
        }
        lines.append(_chunk({"tool_calls": [call]}))
    finish = "tool_calls" if tool_call else "stop"
    lines += [_chunk({}, finish), _usage(50, len(reasoning) + len(content) + tool_call)]
    return [*lines, "data: [DONE]"]


@pytest.mark.parametrize("split", [None, 1, 7, 300])
def test_reasoning_chunks_are_counted_apart_from_answer_chunks(split: int | None) -> None:
    lines = stream_lines(["Let", " me", " think", "."], ["DI", " passes", " collaborators"])
    turn = scan(lines, split)
    assert turn.reasoning_chunks == 4
    assert turn.first_reasoning == 2.0  # after the two keepalive lines
    assert turn.first_answer == 6.0  # the first content chunk
    assert turn.prefill_done == 1.0 and turn.first_data == 2.0


def test_a_tool_call_ends_thinking() -> None:
    turn = scan(stream_lines(["I", " should", " grep"], [], tool_call=True))
    assert turn.reasoning_chunks == 3
    assert (turn.first_reasoning, turn.first_answer) == (2.0, 5.0)


def test_no_thinking_counts_nothing() -> None:
    turn = scan(stream_lines([], ["An", " answer"]))
    assert turn.reasoning_chunks == 0
    assert turn.first_reasoning is None and turn.first_answer is None


def test_a_chunk_long_enough_to_span_many_reads_is_parsed() -> None:
    long = "x" * 5000
    turn = scan(stream_lines([long, long], ["y"]), split=512)
    assert turn.reasoning_chunks == 2 and turn.first_answer == 4.0


def _record(turns: list[TurnTrace], completion: int = 10) -> Any:
    from pydantic_ai.messages import ModelResponse, TextPart
    from pydantic_ai.usage import RequestUsage

    for t in turns:
        t.response = ModelResponse(
            parts=[TextPart("An answer.")], usage=RequestUsage(output_tokens=completion)
        )
    trace = QueryTrace(turns=turns)
    return build_record(
        trace,
        DIRECT_Q,
        t0=0.0,
        t1=10.0,
        label="q",
        set_name="s",
        repeat=0,
        output="An answer.",
        error=None,
    )


def test_thinking_seconds_run_from_the_first_reasoning_chunk_to_the_first_answer() -> None:
    answered = TurnTrace(start=1.0, end=5.0, first_reasoning=1.5, first_answer=3.0, last_byte=4.9)
    answered.reasoning_chunks = 6
    record = _record([answered])
    (turn,) = record.turns
    assert turn.thinking_tokens == 6 and turn.thinking_s == pytest.approx(1.5)
    assert record.thinking_tokens == 6 and record.thinking_s == pytest.approx(1.5)


def test_thinking_cut_off_runs_to_the_end_of_the_stream() -> None:
    cut = TurnTrace(start=1.0, end=5.0, first_reasoning=1.5, last_byte=4.5, reasoning_chunks=9)
    assert _record([cut]).turns[0].thinking_s == pytest.approx(3.0)


def test_summary_shares_of_thinking() -> None:
    thinking = _record(
        [TurnTrace(start=0.0, end=4.0, first_reasoning=0.5, first_answer=2.5, reasoning_chunks=6)]
    )
    plain = _record([TurnTrace(start=0.0, end=4.0)])
    s = summarize([thinking, plain])
    assert s["thinking_tokens_mean"] == pytest.approx(3.0)
    assert s["thinking_share"] == pytest.approx(6 / 20)  # of the 2 x 10 completion tokens
    assert s["thinking_time_share"] == pytest.approx(2.0 / 20.0)  # of 2 x 10 s end to end
    none = summarize([plain])
    assert none["thinking_tokens_mean"] == 0 and none["thinking_share"] == 0
    assert none["thinking_time_share"] == 0


def test_profile_metrics_and_report_carry_thinking() -> None:
    thinking = _record(
        [TurnTrace(start=0.0, end=4.0, first_reasoning=0.5, first_answer=2.5, reasoning_chunks=6)]
    )
    metrics = _metrics([thinking], [], 100.0)
    for key in ("thinking_tokens_mean", "thinking_share", "thinking_time_share"):
        assert key in METRIC_KEYS and key in metrics
    assert metrics["thinking_tokens_mean"] == 6
    assert "think tokens" in QUERY_COLUMNS
    report = markdown_report([thinking], metrics, [], "m")
    row = next(line for line in report.splitlines() if line.startswith("| q "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[QUERY_COLUMNS.index("think tokens")] == "6"
    assert cells[QUERY_COLUMNS.index("out tokens")] == "10"


# --- Through the agent: PydanticAI reads the stream the scanner counted ------------------


def _server(reasoning: list[str], content: list[str]):
    """A fake mlx_lm server streaming one line every 5 ms, as the real one does per token."""

    async def lines():
        for line in stream_lines(reasoning, content):
            await asyncio.sleep(0.005)
            yield f"{line}\n\n".encode()

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=lines())

    return answer


@pytest.mark.parametrize("reasoning", [[], ["Hmm", ",", " DI", "."]])
def test_the_timed_agent_counts_thinking_tokens(reasoning: list[str]) -> None:
    async def go():
        transport = TimingTransport(httpx2.MockTransport(_server(reasoning, ["DI", "."])))
        async with httpx2.AsyncClient(transport=transport) as client:
            model = openai_model("http://fake.invalid/v1", http_client=client)
            agent = Agent(TimedModel(model), toolsets=[TimedToolset(_no_tools())])
            return await run_query(agent, DIRECT_Q, timeout_s=30)

    record = asyncio.run(go())
    assert record.error is None and record.output == "DI."
    assert record.completion_tokens == len(reasoning) + 2
    assert record.thinking_tokens == len(reasoning)
    # From the first reasoning chunk to the first answer chunk: four lines, 5 ms apart.
    if reasoning:
        assert 0.015 <= record.thinking_s <= record.generation_s
    else:
        assert record.thinking_s == 0.0
    assert record.turns[0].text == "DI."  # the thinking is not part of the answer


def _no_tools():
    from pydantic_ai.toolsets import FunctionToolset

    return FunctionToolset()


# --- The real shape through the real server ---------------------------------------------------

REAL_MAIN = "punie-lab/qwen3-moe-tiny-5bit"
THINK_OPEN = "{%- else %}{{- '<think>\\n' }}"


def _opens_think_block(model: Path, out: Path) -> Path:
    """A copy of `model` whose chat template opens `<think>` in the generation prompt when
    thinking is on, as the Qwen3 *-Thinking-2507 templates do. Qwen3's own template leaves
    opening it to the model, and a random-weight model never picks that one token in 151k;
    with the block open the server streams whatever the model writes as `reasoning`."""
    shutil.copytree(model, out)  # through the cache's symlinks: real files to edit
    for name in ("chat_template.jinja", "tokenizer_config.json"):
        path = out / name
        if not path.is_file():
            continue
        if name.endswith(".json"):
            config = json.loads(path.read_text())
            template = config.get("chat_template")
        else:
            config, template = None, path.read_text()
        marker = "</think>\\n\\n' }}"
        if not isinstance(template, str) or marker not in template:
            continue
        i = template.index(marker) + len(marker)
        template = template[:i] + THINK_OPEN + template[i:]
        if config is None:
            path.write_text(template)
        else:
            path.write_text(json.dumps({**config, "chat_template": template}))
        return out
    raise AssertionError(f"no Qwen3 chat template with the thinking switch in {model}")


@pytest.mark.slow
@pytest.mark.parametrize("thinking", [False, True])
def test_the_real_shape_model_thinks_apart_through_the_real_server(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    thinking: bool,
) -> None:
    """Qwen3's tokenizer and template, a Qwen3-MoE 5-bit model, `mlx_lm server` and the
    timed agent: thinking on yields thinking tokens counted apart from the answer's, off 0."""
    try:
        home = Path(request.getfixturevalue("real_shape_hf_home"))
    except pytest.FixtureLookupError:
        pytest.skip("tests/conftest.py has no real_shape_hf_home fixture yet")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    params = tiny_params(Path(REAL_MAIN), tmp_path)
    params = params.model_copy(
        update={
            "server": params.server.model_copy(
                update={"max_tokens": 48, "chat_template_args": {"enable_thinking": thinking}}
            )
        }
    )

    async def run(model: Path):
        config = server_config(params, str(model))
        async with (
            params_server(params, config, tmp_path / f"{model.name}-server.log") as server,
            params_agent(params, server.base_url) as agent,
        ):
            return await run_query(agent, DIRECT_Q, timeout_s=300, max_turns=2)

    model = resolve_model(REAL_MAIN)
    record = asyncio.run(run(model))
    if thinking and record.thinking_tokens == 0:
        # The model never opened `<think>` itself (random weights): again with the block
        # opened by the template, which the server then streams as `reasoning`.
        record = asyncio.run(run(_opens_think_block(model, tmp_path / "opened")))
    assert record.turns and record.turns[0].error is None, record.error
    first = record.turns[0]
    assert first.completion_tokens > 0
    if thinking:
        assert 0 < first.thinking_tokens <= first.completion_tokens
        assert first.thinking_s > 0
        # A model that never closes the block thinks to max_tokens, and PydanticAI ends the
        # run with no answer, as a real Qwen3 thinking past server.max_tokens does.
        if record.error is not None:
            assert "OutputTokenLimitExceeded" in record.error
            assert first.finish_reason == "length" and first.text == ""
    else:
        assert record.error is None, record.error
        assert record.thinking_tokens == 0 and record.thinking_s == 0.0
        assert summarize([record])["thinking_share"] == 0

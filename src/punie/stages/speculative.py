"""`punie-lab speculative`: benchmark the baseline against a draft model for each k.

`speculative` measures, on the same queries (seed + held-out), the baseline (a server with
no draft: a draft turns off the server's batching) and one configuration per k in
`speculative.num_draft_tokens`. Two servers run at once, the baseline and main+draft
(`speculative.interleave: false`: one after the other, for a model pair that memory holds
only once); the draft server takes k per request (`num_draft_tokens` in the JSON body), so
one server covers every k. Configurations alternate in a staggered round robin: in round t
configuration i runs query t-i, so drift on a busy machine falls on all alike and no
configuration finds another's answer to the same query in the draft server's prompt cache.
Then, servers stopped, `punie.measurement.spec_probe` measures acceptance and each model's decode
cost in-process on the prompts the agent actually sent. Results:
`results/speculative/{baseline,k<k>}.json`.

`punie-lab speculative-report` (`punie.stages.speculative_report`) aggregates them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2

from punie import paths
from punie.agent.production import build_agent, openai_model
from punie.agent.queries import WARMUP, query_sets, spread
from punie.agent.tools import Workspace, workspace_toolset
from punie.errors import StageError
from punie.measurement.benchmark import params_server
from punie.measurement.levers import SPECULATIVE_PATCHES, Setup, server_config
from punie.measurement.memory import ServerMemorySampler
from punie.measurement.progress import Progress
from punie.measurement.records import answer_of, latency_stats, summarize
from punie.measurement.spec_probe import ProbeError, ProbeRequest, run_probe
from punie.measurement.speculative import CONTROL_FILE, first_difference_index
from punie.measurement.text_clock import TextClock, text_decode
from punie.measurement.timing import (
    Case,
    TimedModel,
    TimedToolset,
    TimingTransport,
    add_queries_argument,
    load_cases,
    run_case,
    run_query,
)
from punie.params import load_params
from punie.results import write_json
from punie.serving.preflight import fast_checks
from punie.serving.server import ServerError

if TYPE_CHECKING:
    from pydantic_ai import Agent

    from punie.measurement.records import QueryRecord
    from punie.params import Params


def method(interleave: bool) -> str:
    """How the configurations were measured, for the report."""
    servers = (
        "two servers at once: baseline (main, no draft) and main+draft"
        if interleave
        else "one server at a time: baseline (main, no draft), then main+draft"
    )
    return (
        f"{servers}; k sent per request (`num_draft_tokens` in the body); staggered round "
        "robin (round t: configuration i runs query t-i); the draft server, patched "
        "(`speculative-cache-key`), keeps its prompt cache, which its k configurations share"
    )


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    add_queries_argument(parser)
    paths.add_path_option(
        parser, "--out", paths.SPECULATIVE_RESULTS, "per-configuration results", metavar="DIR"
    )


def run(name: str, args: argparse.Namespace) -> int:
    return benchmark(load_params(), args.out, args.queries)


# --- Benchmark -----------------------------------------------------------------------------


def configuration_labels(ks: Sequence[int]) -> list[str]:
    return ["baseline", *(f"k{k}" for k in ks)]


def request_settings(k: int | None) -> dict[str, Any] | None:
    """The per-request body extras of one configuration: k for the draft server."""
    return None if k is None else {"num_draft_tokens": k}


def staggered_schedule(n_cases: int, n_configs: int) -> list[tuple[int, int]]:
    """(configuration, case) pairs: round t runs configuration i on case t-i."""
    return [
        (i, t - i)
        for t in range(n_cases + n_configs - 1)
        for i in range(n_configs)
        if 0 <= t - i < n_cases
    ]


@dataclass
class _Config:
    label: str
    k: int | None
    agent: Agent[None, str]
    clock: TextClock
    records: list[QueryRecord] = field(default_factory=list)
    decode: list[tuple[int, float]] = field(default_factory=list)  # per record


@contextlib.asynccontextmanager
async def _agent(params: Params, base_url: str, k: int | None) -> AsyncGenerator[_Config]:
    """The production agent with measure's timing wrappers and a text clock."""

    clock = TextClock()
    timeout = params.server.request_timeout_s
    async with httpx2.AsyncClient(
        transport=TimingTransport(clock), timeout=httpx2.Timeout(timeout)
    ) as client:
        model = openai_model(base_url, timeout_s=timeout, http_client=client)
        ws = Workspace(
            Path(params.agent.workspace), params.agent.tool_timeout_s, params.agent.tool_output_cap
        )
        agent = build_agent(
            TimedModel(model),
            TimedToolset(workspace_toolset(ws)),
            max_tokens=params.server.max_tokens,
            extra_body=request_settings(k),
        )
        yield _Config("baseline" if k is None else f"k{k}", k, agent, clock)


def _server_of(k: int | None) -> str:
    """The server a configuration runs on: the baseline (k None) or the draft server."""
    return "baseline" if k is None else "draft"


async def _measure(
    params: Params, models: tuple[str, str], cases: Sequence[Case], ks: Sequence[int], log_dir: Path
) -> tuple[list[_Config], dict[str, float]]:
    """Every configuration on every case. `speculative.interleave`: the baseline and the draft
    server up together, configurations alternating; otherwise the baseline server alone
    first, then the draft server alone (its k configurations still alternate). `models`:
    the main and draft directories (`check_draft`)."""

    main, draft = models
    servers = {
        "baseline": Setup(server_config(params, main)),
        # Patched so that its prompt cache is safe to reuse after a speculative generation.
        "draft": Setup(server_config(params, main, draft, ks[0]), SPECULATIVE_PATCHES),
    }
    # k=0 (control): the draft server drafting nothing; it separates the server's own
    # path (no batching, draft prefill) from what drafting gains.
    every_k = [None, *([0] if params.speculative.control else []), *ks]
    groups = [["baseline", "draft"]] if params.speculative.interleave else [["baseline"], ["draft"]]
    configs: list[_Config] = []
    peak: dict[str, float] = {}
    for group in groups:
        group_ks = [k for k in every_k if _server_of(k) in group]
        done, group_peak = await _measure_group(
            params, cases, {label: servers[label] for label in group}, group_ks, log_dir
        )
        configs += done
        peak |= group_peak
    return configs, peak


async def _measure_group(
    params: Params,
    cases: Sequence[Case],
    servers: dict[str, Setup],
    ks: Sequence[int | None],
    log_dir: Path,
) -> tuple[list[_Config], dict[str, float]]:
    """`servers` up at once; configuration k (None: baseline) on every case, staggered."""

    timeout = params.server.request_timeout_s * params.profile.max_turns
    peak: dict[str, float] = {}
    async with contextlib.AsyncExitStack() as stack:
        live = {}
        samplers = {}
        for label, s in servers.items():
            server = params_server(params, s.config, log_dir / f"{label}-server.log", s.patches)
            live[label] = await stack.enter_async_context(server)
            samplers[label] = stack.enter_context(ServerMemorySampler(server.pid))
        configs = [
            await stack.enter_async_context(_agent(params, live[_server_of(k)].base_url, k))
            for k in ks
        ]
        for c in configs:  # untimed: the first requests pay for lazy loading
            await run_query(c.agent, WARMUP, timeout_s=timeout)
        runs = [(case, r) for r in range(params.speculative.repeats) for case in cases]
        schedule = staggered_schedule(len(runs), len(configs))
        progress = Progress(len(schedule))
        for n, (i, j) in enumerate(schedule, start=1):
            c, (case, repeat) = configs[i], runs[j]
            seen = len(c.clock.requests)
            record = await run_case(
                c.agent, case, repeat, timeout_s=timeout, max_turns=params.profile.max_turns
            )
            server = live[_server_of(c.k)]
            if record.error is not None and not server.is_alive():
                raise ServerError(
                    f"{c.label} server died during {case.label}: {record.error}; "
                    f"log: {server.log_path}"
                )
            if record.error is not None:
                # A frozen server would cost every later query its full timeout.
                server.check_responsive(after=f"{c.label} {case.label}: {record.error}")
            parts = [text_decode(s) for s in c.clock.requests[seen:]]
            c.records.append(record)
            c.decode.append((sum(n for n, _ in parts), sum(s for _, s in parts)))
            print(
                f"{progress.line(n)} {c.label:>8} {case.label:<12} {record.total_s:6.2f} s "
                f"{'ok ' if record.correct else 'BAD'} {record.decision}",
                flush=True,
            )
        for label, server in live.items():
            server.check_alive()
            peak[label] = samplers[label].peak_rss_mb
    return configs, peak


def first_difference(a: str, b: str, context: int = 60) -> dict[str, Any]:
    """Where two answers part: the offset and a window of each around it."""
    i = first_difference_index(a, b)
    lo = max(0, i - context)
    return {"offset": i, "baseline": a[lo : i + context], "speculative": b[lo : i + context]}


def _summary(c: _Config, peak_rss_mb: float) -> dict[str, Any]:
    s = summarize(c.records)
    tokens = sum(n for n, _ in c.decode)
    seconds = sum(t for _, t in c.decode)
    ok = [r for r in c.records if r.error is None]
    return {
        "e2e_mean_s": s["e2e_mean_s"],
        "e2e_median_s": s["e2e_median_s"],
        "generation_mean_s": sum(r.generation_s for r in ok) / len(ok) if ok else None,
        "decode_tps": tokens / seconds if seconds else None,
        "decode_tokens": tokens,
        "decode_tps_all_turns": s["decode_tps"],
        "accuracy": s["accuracy"],
        "tool_accuracy": s["tool_accuracy"],
        "direct_accuracy": s["direct_accuracy"],
        "completion_tokens_mean": s["completion_tokens_mean"],
        "n_queries": s["n_queries"],
        "n_errors": s["n_errors"],
        "peak_rss_mb": peak_rss_mb,
        **latency_stats(c.records),
    }


def check_draft(params: Params) -> tuple[str, str]:
    """The main model and the draft to benchmark as local directories (hub ids resolved from
    the local cache, `punie.serving.hub`), refused in seconds, before any server starts,
    unless both are present and share a tokenizer (`punie.serving.preflight.fast_checks`)."""
    if params.models.draft is None:
        raise StageError("params models.draft is not set: nothing to benchmark")
    main, draft = fast_checks(params)
    assert draft is not None
    return str(main), str(draft)


def benchmark(params: Params, out: Path, queries: Sequence[Path] | None = None) -> int:
    main, draft = check_draft(params)
    ks = list(dict.fromkeys(params.speculative.num_draft_tokens))
    cases = load_cases(queries or query_sets(params), params.queries.per_set)
    out.mkdir(parents=True, exist_ok=True)
    log_dir = out / "logs"
    log_dir.mkdir(exist_ok=True)
    configs, peak = asyncio.run(_measure(params, (main, draft), cases, ks, log_dir))
    base = configs[0]
    bodies: list[dict[str, Any]] = []
    seen: set[str] = set()
    for record in base.records:
        for body in record.requests:
            key = json.dumps(body, sort_keys=True)
            if body is not None and key not in seen:
                seen.add(key)
                bodies.append({"messages": body["messages"], "tools": body.get("tools")})
    bodies = [bodies[i] for i in spread(len(bodies), params.speculative.acceptance_prompts)]
    print(f"acceptance probe: {len(bodies)} prompts x (main, draft, k in {ks})", flush=True)
    try:
        probe = run_probe(
            ProbeRequest(
                main,
                draft,
                bodies,
                ks,
                params.server.max_tokens,
                dict(params.server.chat_template_args),
            ),
            log_dir,
            blas=params.runtime.blas,
        )
    except ProbeError as e:
        raise StageError(str(e)) from None
    cost = {
        key: probe[key]
        for key in (
            "main_token_s",
            "draft_token_s",
            "cost_ratio",
            "prompts",
            "prompt_tokens_mean",
            "verify_pass_s",
        )
    }
    write_json(
        out / "baseline.json",
        {
            "label": "baseline",
            "k": None,
            "main": params.models.main,
            "draft": params.models.draft,
            "method": method(params.speculative.interleave),
            "summary": _summary(base, peak["baseline"]),
            "cost": cost,
            "records": [r.to_dict() for r in base.records],
        },
    )
    answers = {(r.label, r.repeat): answer_of(r) for r in base.records}
    for c in configs[1:]:
        assert c.k is not None
        name = CONTROL_FILE if c.k == 0 else f"k{c.k}.json"
        mismatches = [r for r in c.records if answers.get((r.label, r.repeat)) != answer_of(r)]
        example = None
        if mismatches:
            r = mismatches[0]
            diff = first_difference(answers.get((r.label, r.repeat), ""), answer_of(r))
            example = {"query": r.query, **diff}
        write_json(
            out / name,
            {
                "label": c.label,
                "k": c.k,
                "main": params.models.main,
                "draft": params.models.draft,
                "method": method(params.speculative.interleave),
                "summary": _summary(c, peak["draft"]),
                "answer_mismatches": len(mismatches),
                "mismatch_example": example,
                "acceptance": probe["by_k"].get(str(c.k)),
                "cost": cost,
                "records": [r.to_dict() for r in c.records],
            },
        )
    print(f"wrote {out}: baseline.json, {', '.join(f'k{k}.json' for k in ks)}", end="")
    print(f", {CONTROL_FILE}" if params.speculative.control else "")
    return 0

"""`punie-lab profile`: measure where every second of an agent query goes.

Starts the main model in `mlx_lm server`, runs a warm-up query, then every query (seed set,
then held-out set, or `--queries FILE ...`) `profile.repeats` times through the production
agent with timing wrappers, sampling the server's memory; then stops the server and times
the same prompts directly in mlx-lm (the floor). Writes flat metrics, per-query records,
stacked-breakdown plot rows and a Markdown report.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from punie import paths
from punie.agent.queries import WARMUP, query_sets
from punie.errors import StageError
from punie.machine import machine_keys
from punie.measurement.benchmark import params_agent, params_server
from punie.measurement.direct import direct_prompts, overhead_ratio, run_direct
from punie.measurement.levers import server_config
from punie.measurement.memory import ServerMemorySampler
from punie.measurement.otlp import configure_otlp
from punie.measurement.records import accuracy_by_set, latency_stats, summarize
from punie.measurement.timing import add_queries_argument, load_cases, run_queries, run_query
from punie.params import load_params
from punie.reports.profile import markdown_report, print_summary
from punie.results import check_writable, write_json, write_rows, write_text_atomic
from punie.serving.preflight import fast_checks
from punie.serving.server import ServerError

if TYPE_CHECKING:
    from punie.measurement.records import QueryRecord
    from punie.measurement.timing import Case
    from punie.params import Params

# Default outputs (dvc.yaml's `profile` block); with --out DIR they go under DIR instead.

METRIC_KEYS = (
    "accuracy",
    "tool_accuracy",
    "e2e_mean_s",
    "e2e_median_s",
    "generation_share",
    "tool_share",
    "overhead_share",
    "ttft_mean_s",
    "decode_tps",
    "completion_tokens_mean",
    "thinking_tokens_mean",
    "thinking_share",
    "thinking_time_share",
    "pipeline_overhead_ratio",
    "server_peak_rss_mb",
)
COMPONENTS = ("generation", "tool", "overhead")


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    add_queries_argument(parser)
    paths.add_path_option(
        parser, "--out", None, "write metrics, records, plot rows and report here", metavar="DIR"
    )
    parser.add_argument("--model", help="model directory or id (default: params models.main)")
    parser.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="export spans over OTLP/HTTP, e.g. http://127.0.0.1:4318 (default: params "
        "profile.otlp_endpoint; off when unset)",
    )


@dataclass(frozen=True)
class Outputs:
    metrics: Path
    records: Path
    breakdown: Path
    report: Path
    server_log: Path

    @classmethod
    def under(cls, out: Path | None) -> Outputs:
        base = out or Path()
        return cls(
            *(
                base / p
                for p in (
                    paths.PROFILE_METRICS,
                    paths.PROFILE_RECORDS,
                    paths.PROFILE_BREAKDOWN,
                    paths.PROFILE_REPORT,
                    paths.PROFILE_SERVER_LOG,
                )
            )
        )


def run(name: str, args: argparse.Namespace) -> int:
    console = Console()
    params = load_params()
    outputs = Outputs.under(args.out)
    check_writable(*astuple(outputs))  # before minutes of measuring, not after
    cases = load_cases(args.queries or query_sets(params), params.queries.per_set)
    model_path = args.model or params.models.main
    # In seconds: a missing model or hub id fails here, not after a server's start-up. The
    # server and the direct floor load the resolved directory; reports name `model_path`.
    model_dir = str(fast_checks(params, model_path, use_draft=False)[0])
    endpoint = args.otlp_endpoint or params.profile.otlp_endpoint
    shutdown = _tracing(endpoint) if endpoint else None
    try:
        records, warmup, peak_mb = asyncio.run(_measure(params, model_dir, cases, outputs, console))
    finally:
        if shutdown is not None:
            shutdown()
    console.print("[bold]direct floor[/]: timing the same prompts in mlx-lm (server stopped)")
    direct_rows = _direct_floor(params, model_dir, records, warmup)
    metrics = write_outputs(
        outputs, records, direct_rows, peak_mb, model_path=model_path, params=params
    )
    print_summary(console, records, metrics)
    console.print(
        f"wrote {outputs.metrics}, {outputs.records}, {outputs.breakdown}, {outputs.report}"
    )
    return 0


def _tracing(endpoint: str):
    try:
        return configure_otlp(endpoint)
    except ImportError as e:
        raise StageError(str(e)) from None


async def _measure(
    params: Params, model_path: str, cases: list[Case], outputs: Outputs, console: Console
) -> tuple[list[QueryRecord], QueryRecord, float]:
    server_params = params.server
    config = server_config(params, model_path)
    max_turns = params.profile.max_turns
    # A query may make `max_turns` requests, each bounded by the request timeout.
    query_timeout_s = server_params.request_timeout_s * max_turns
    console.print(f"[bold]profile[/]: starting mlx_lm server on {model_path}")
    server = params_server(params, config, outputs.server_log)
    async with server:
        with ServerMemorySampler(server.pid) as memory:
            async with params_agent(params, server.base_url) as agent:
                warm = await run_query(agent, WARMUP, timeout_s=query_timeout_s, max_turns=2)
                if warm.error is not None:
                    server.check_alive()
                    console.print(f"[yellow]warm-up query failed[/]: {warm.error}")
                total = len(cases) * params.profile.repeats
                with Progress(
                    "[progress.description]{task.description}",
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    "ETA",
                    TimeRemainingColumn(),
                    console=console,
                ) as progress:
                    task = progress.add_task("queries", total=total)

                    def done(record: QueryRecord) -> None:
                        if record.error is not None and not server.is_alive():
                            raise ServerError(f"server died during {record.label}: {record.error}")
                        if record.error is not None:
                            # A frozen server would cost every later query its full timeout.
                            server.check_responsive(after=f"{record.label}: {record.error}")
                        mark = "ok" if record.correct else "WRONG"
                        if record.error:
                            mark = f"ERROR {record.error[:80]}"
                        progress.console.print(
                            f"  {record.label} r{record.repeat}: {record.total_s:.2f}s "
                            f"{record.decision or '-'} {mark}"
                        )
                        progress.advance(task)

                    records = await run_queries(
                        agent,
                        cases,
                        repeats=params.profile.repeats,
                        timeout_s=query_timeout_s,
                        max_turns=max_turns,
                        on_record=done,
                    )
        server.check_alive()
    return records, warm, memory.peak_rss_mb


def _direct_floor(
    params: Params, model_path: str, records: list[QueryRecord], warmup: QueryRecord
) -> list[dict]:
    turns = direct_prompts(records, warmup)
    if not any(t["timed"] for t in turns):
        return []
    with tempfile.TemporaryDirectory(prefix="punie-direct-") as tmp:
        return run_direct(
            model_path,
            turns,
            Path(tmp),
            blas=params.runtime.blas,
            chat_template_args=params.server.chat_template_args,
        )


def _metrics(
    records: Sequence[QueryRecord], direct_rows: list[dict], peak_mb: float, blas: str = "auto"
) -> dict:
    summary = summarize(records)
    flat: dict[str, Any] = {k: summary.get(k) for k in METRIC_KEYS}
    flat["pipeline_overhead_ratio"] = overhead_ratio(direct_rows)
    flat["server_peak_rss_mb"] = peak_mb
    flat.update(latency_stats(records))
    for set_name, acc in accuracy_by_set(records).items():
        flat[f"{set_name}_accuracy"] = acc
    flat["n_queries"] = summary["n_queries"]
    flat["n_errors"] = summary["n_errors"]
    flat.update(machine_keys(blas))
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in flat.items()}


def breakdown_rows(records: Sequence[QueryRecord]) -> list[dict[str, Any]]:
    """Stacked-bar rows: one per (query, component), seconds averaged over repeats.

    Failed runs are left out (a timeout would dwarf every real bar)."""
    rows = []
    labels = dict.fromkeys(r.label for r in records)
    for label in labels:
        ok = [r for r in records if r.label == label and r.error is None]
        if not ok:
            continue
        for component in COMPONENTS:
            seconds = statistics.fmean(getattr(r, f"{component}_s") for r in ok)
            rows.append(
                {
                    "query": label,
                    "component": component,
                    "seconds": round(seconds, 4),
                    "text": ok[0].query,
                }
            )
    return rows


def write_outputs(
    outputs: Outputs,
    records: Sequence[QueryRecord],
    direct_rows: list[dict],
    peak_mb: float,
    *,
    model_path: str,
    params: Params,
) -> dict[str, Any]:
    metrics = _metrics(records, direct_rows, peak_mb, params.runtime.blas)
    write_json(
        outputs.records,
        {
            "model": model_path,
            "repeats": params.profile.repeats,
            "max_tokens": params.server.max_tokens,
            "summary": summarize(records),
            "records": [r.to_dict() for r in records],
            "direct": direct_rows,
        },
    )
    write_rows(outputs.breakdown, breakdown_rows(records))
    write_text_atomic(outputs.report, markdown_report(records, metrics, direct_rows, model_path))
    # Last: DVC and downstream gates read the metrics; they appear only with the rest.
    write_json(outputs.metrics, metrics)
    return metrics

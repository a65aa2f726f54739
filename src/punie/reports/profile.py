"""The profile stage's Markdown report and terminal tables, from its records and metrics.

Pure formatting: records and flat metrics in, text out (`punie.stages.profile` measures).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.table import Table

from punie.reports.latency import latency_table

if TYPE_CHECKING:
    from rich.console import Console

    from punie.measurement.records import QueryRecord


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _per_query(records: Sequence[QueryRecord]) -> list[list[str]]:
    rows = []
    for r in records:
        ttfts = [t.ttft_s for t in r.turns if t.ttft_s is not None]
        rows.append(
            [
                r.label + (f" r{r.repeat}" if r.repeat else ""),
                r.query[:48],
                r.expect,
                r.decision or "-",
                "error" if r.error else ("yes" if r.correct else "no"),
                _fmt(r.total_s, 2),
                _fmt(r.generation_s, 2),
                _fmt(r.tool_s, 2),
                _fmt(r.overhead_s, 2),
                str(r.n_turns),
                str(r.completion_tokens),
                str(r.thinking_tokens),
                _fmt(statistics.fmean(ttfts), 3) if ttfts else "-",
            ]
        )
    return rows


QUERY_COLUMNS = [
    "query",
    "text",
    "expect",
    "decision",
    "correct",
    "total s",
    "gen s",
    "tool s",
    "overhead s",
    "turns",
    "out tokens",
    "think tokens",
    "TTFT s",
]


def markdown_report(
    records: Sequence[QueryRecord], metrics: dict[str, Any], direct_rows: list[dict], model: str
) -> str:
    lines = [
        "# Profile: where the seconds of an agent query go",
        "",
        f"Model `{model}`; {metrics['n_queries']} query runs, {metrics['n_errors']} failed. "
        "Generation = time inside model requests, tool = time inside tool calls, "
        "overhead = the rest of the measured total (framework, HTTP, parsing). "
        "Think tokens: the part of the out tokens streamed as thinking (a `<think>` block, "
        "the server's `reasoning` field); thinking_share is their share of the completion "
        "tokens, thinking_time_share the share of the end-to-end time spent before the first "
        "answer or tool-call token of a thinking turn.",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {_fmt(v, 4)} |" for k, v in metrics.items()],
        "",
        *latency_table({"profile": metrics}),
        "## Per query",
        "",
        "| " + " | ".join(QUERY_COLUMNS) + " |",
        "|" + "---|" * len(QUERY_COLUMNS),
        *[
            "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"
            for row in _per_query(records)
        ],
    ]
    errors = [r for r in records if r.error]
    if errors:
        lines += ["", "## Failed queries", ""]
        lines += [f"- {r.label} r{r.repeat}: {r.error}" for r in errors]
    if direct_rows:
        pipeline = sum(r["pipeline_s"] for r in direct_rows)
        direct = sum(r["direct_s"] for r in direct_rows)
        lines += [
            "",
            "## Direct floor",
            "",
            f"The same {len(direct_rows)} model turns (same rendered prompts, same generated "
            f"token counts) took {direct:.2f} s generated in-process by mlx-lm vs "
            f"{pipeline:.2f} s inside the pipeline's model requests: "
            f"pipeline_overhead_ratio = {_fmt(metrics['pipeline_overhead_ratio'], 2)}.",
        ]
        short = [r for r in direct_rows if r["direct_tokens"] != r["completion_tokens"]]
        if short:
            lines.append(
                f"In {len(short)} turns mlx-lm stopped at a different token count than the "
                "server (an end-of-sequence token came earlier or later)."
            )
    return "\n".join(lines) + "\n"


def print_summary(console: Console, records: Sequence[QueryRecord], metrics: dict) -> None:

    # The terminal table leaves out the query text (the Markdown report has it).
    table = Table(title="profile: per query")
    for col in QUERY_COLUMNS[:1] + QUERY_COLUMNS[2:]:
        table.add_column(col, justify="left" if col == "query" else "right")
    for row in _per_query(records):
        table.add_row(*row[:1], *row[2:])
    console.print(table)
    summary = Table(title="profile: summary")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    for key, value in metrics.items():
        summary.add_row(key, _fmt(value, 4))
    console.print(summary)

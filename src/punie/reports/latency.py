"""Per-request latency in vLLM's words beside the lab's: a Markdown table for the reports.

The figures come from `punie.measurement.records.latency_stats` (one model request = one
agent turn; the names from `punie.measurement.latency`); this module only formats them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from punie.measurement.latency import VLLM_NAMES


def _ms(value: Any) -> str:
    return "–" if value is None else f"{value * 1e3:.1f}"


def latency_table(columns: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Markdown lines: one row per vLLM latency (TTFT, TPOT, ITL, E2EL) with what it is in
    the lab's terms, then median / p99 in milliseconds for each configuration in `columns`
    (name -> a mapping holding `latency_stats` keys; a missing key reads as –)."""
    names = list(columns)
    lines = [
        "Per model request, in vLLM's benchmark vocabulary (median / p99, ms; one request is "
        "one agent turn):",
        "",
        "| vLLM name | the lab's figure | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for key, (name, meaning) in VLLM_NAMES.items():
        cells = [
            f"{_ms(stats.get(f'{key}_median_s'))} / {_ms(stats.get(f'{key}_p99_s'))}"
            for stats in columns.values()
        ]
        lines.append(f"| {name} | {meaning} | " + " | ".join(cells) + " |")
    return [*lines, ""]

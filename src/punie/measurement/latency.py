"""vLLM's names for the lab's per-request latencies, and the percentile they are reported at.

Pure data and arithmetic (no pydantic-ai, no mlx), so a report can name the figures without
importing the measurement. `punie.measurement.records.latency_stats` computes them.
"""

from __future__ import annotations

from collections.abc import Sequence

# vLLM's benchmark names (`vllm bench serve`) for the lab's per-turn figures: one model
# request is one agent turn. The reports print them beside the lab's own words.
VLLM_NAMES: dict[str, tuple[str, str]] = {
    "ttft": (
        "TTFT (time to first token)",
        "the lab's time to first token of a turn: request sent -> prompt processed (the "
        "server's `: keepalive N/N`), else -> first streamed chunk",
    ),
    "tpot": (
        "TPOT (time per output token)",
        "per turn, (request time - TTFT) / (completion tokens - 1): the inverse of the "
        "lab's decode rate, over the whole turn",
    ),
    "itl": (
        "ITL (inter-token latency)",
        "every gap between two consecutive streamed chunks that carry a token (answer "
        "text, thinking or a tool call; the server sends a tool call whole: one long gap)",
    ),
    "e2el": (
        "E2EL (end-to-end latency)",
        "the time of one model request (one agent turn), not of a query: the lab's "
        "end-to-end time of a query (e2e) adds its other turns, tools and the framework",
    ),
}


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), interpolating linearly between the closest ranks (numpy's
    default, which vLLM's benchmark reports); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# The flat keys `latency_stats` returns: `<name>_median_s` and `<name>_p99_s` per name.
LATENCY_KEYS = tuple(f"{name}_{stat}_s" for name in VLLM_NAMES for stat in ("median", "p99"))

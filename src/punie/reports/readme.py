"""README.md's generated results section: a short table from metrics/*.json, never typed in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from punie.reports.final import COLUMNS, configurations, failed_criteria
from punie.reports.tables import fmt, table

README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"
# The README's short table: the final report's columns, without the latency split and memory.
ROWS = {
    k: COLUMNS[k]
    for k in (
        "e2e_mean_s",
        "latency_ratio",
        "completion_tokens_mean",
        "seed_accuracy",
        "heldout_accuracy",
        "wording_accuracy",
        "decisions_lost",
        "grounded_share",
    )
}


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def results_section(metrics_dir: Path) -> str:
    """The README results section, from whichever metrics files exist."""
    final = _load(metrics_dir / "final.json")
    boot = _load(metrics_dir / "bootstrap.json")
    spec = _load(metrics_dir / "speculative.json")
    parts = [
        "## Results",
        "",
        "_Written by `punie-lab readme` (run by `nox -s repro`) from `metrics/*.json`; "
        "history and sweeps are in `docs/experiments.md`._",
        "",
    ]
    if not final:
        return "\n".join([*parts, "No metrics yet: run `nox -s repro`.", ""])
    machine = boot or final
    if boot.get("main_params"):
        parts += [
            f"Embedded models: a {boot['main_params'] / 1e6:.2f}M-parameter main model and a "
            f"{boot.get('draft_params', 0) / 1e6:.2f}M-parameter draft, built by `bootstrap` in "
            f"{fmt(boot.get('total_seconds'), 0)} s on {machine.get('machine_cpu', '?')} "
            f"({machine.get('machine_cores', '?')} cores, {machine.get('machine_blas', '?')}). "
            "They show that the lab measures and decides; they are not a 30B model on a Mac.",
            "",
        ]
    rows = [(c, *(final.get(f"{k}_{c}") for k in ROWS)) for c in configurations(final)]
    parts += [table(("configuration", *ROWS.values()), rows), ""]
    verdict = (
        "all success criteria met"
        if final.get("criteria_met")
        else "criteria not met: " + ", ".join(failed_criteria(final))
    )
    parts += [
        f"Latency ratio optimized / baseline **{fmt(final.get('latency_ratio_optimized'))}** "
        f"(target {fmt(final.get('latency_ratio_target'), 2)}); {verdict}. "
        "Per lever and per query: `reports/final.md`.",
        "",
    ]
    if spec:
        parts += [
            f"Speculative decoding: best k = {spec.get('best_k')} at "
            f"{fmt(spec.get('best_speedup'), 2)}x decode throughput (Leviathan's prediction "
            f"{fmt(spec.get('predicted_speedup_best_k'), 2)}x, acceptance "
            f"{fmt(spec.get('acceptance_rate_best_k'))}); the stage chose k = "
            f"{spec.get('chosen_k')}. Details: `reports/speculative.md`.",
            "",
        ]
    return "\n".join(parts).rstrip() + "\n"


def rewrite_readme(readme: str, section: str) -> str:
    """Replace the text between the markers (appending them if absent). Idempotent."""
    block = f"{README_START}\n{section.rstrip()}\n{README_END}"
    start, end = readme.find(README_START), readme.find(README_END)
    if start == -1 or end == -1 or end < start:
        head = readme.rstrip()
        return (head + "\n\n" if head else "") + block + "\n"
    return readme[:start] + block + readme[end + len(README_END) :]

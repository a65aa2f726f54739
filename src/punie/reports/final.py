"""The seed's success criteria from measured numbers, the final report and the README section.

Everything here is pure: numbers in, flat metrics / Markdown out, so the criteria are tested
on recorded figures and the README is rewritten from metrics files only (never by hand).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"

CRITERIA = ("latency_ratio_ok", "seed_accuracy_ok", "heldout_accuracy_ok", "memory_ok")
CRITERIA_TEXT = {
    "latency_ratio_ok": "optimised / baseline end-to-end latency <= target (seed: ~25 s -> < 10 s)",
    "seed_accuracy_ok": "optimised accuracy is 100 % on the seed's 5 discrimination queries",
    "heldout_accuracy_ok": "optimised held-out accuracy is no lower than the baseline's",
    "memory_ok": "peak RSS of the optimised server is within the memory budget",
}


@dataclass(frozen=True)
class Measured:
    """Figures of one final run, both configurations measured in the same run."""

    baseline_e2e_mean_s: float
    optimized_e2e_mean_s: float
    baseline_seed_accuracy: float
    optimized_seed_accuracy: float
    baseline_heldout_accuracy: float
    optimized_heldout_accuracy: float
    baseline_accuracy: float
    optimized_accuracy: float
    baseline_completion_tokens_mean: float
    optimized_completion_tokens_mean: float
    server_peak_rss_mb: float


def final_metrics(m: Measured, *, latency_ratio_target: float, memory_budget_mb: float) -> dict:
    """Flat `metrics/final.json` keys with one boolean per success criterion and `criteria_met`."""
    latency_ratio = m.optimized_e2e_mean_s / m.baseline_e2e_mean_s
    tokens_ratio = (
        m.optimized_completion_tokens_mean / m.baseline_completion_tokens_mean
        if m.baseline_completion_tokens_mean > 0
        else float("nan")
    )
    checks = {
        "latency_ratio_ok": latency_ratio <= latency_ratio_target,
        "seed_accuracy_ok": m.optimized_seed_accuracy >= 1.0,
        "heldout_accuracy_ok": m.optimized_heldout_accuracy >= m.baseline_heldout_accuracy,
        "memory_ok": m.server_peak_rss_mb <= memory_budget_mb,
    }
    return {
        "baseline_e2e_mean_s": m.baseline_e2e_mean_s,
        "optimized_e2e_mean_s": m.optimized_e2e_mean_s,
        "latency_ratio": latency_ratio,
        "latency_ratio_target": latency_ratio_target,
        "accuracy_baseline": m.baseline_accuracy,
        "accuracy_optimized": m.optimized_accuracy,
        "seed_accuracy_baseline": m.baseline_seed_accuracy,
        "seed_accuracy_optimized": m.optimized_seed_accuracy,
        "heldout_accuracy_baseline": m.baseline_heldout_accuracy,
        "heldout_accuracy_optimized": m.optimized_heldout_accuracy,
        "completion_tokens_mean_baseline": m.baseline_completion_tokens_mean,
        "completion_tokens_mean_optimized": m.optimized_completion_tokens_mean,
        "completion_tokens_ratio": tokens_ratio,
        "server_peak_rss_mb": m.server_peak_rss_mb,
        "memory_budget_mb": memory_budget_mb,
        **checks,
        "criteria_met": all(checks.values()),
    }


def decode_budget(metrics: dict[str, Any]) -> dict[str, float | None]:
    """How much faster than the baseline's the optimised side's generation after the first
    token is (`after_first_token_speedup`), and how much faster it would have to be to reach
    the latency target with its time to first token and time outside the model as measured
    (`after_first_token_speedup_needed`; None when those two alone exceed the target)."""
    base = metrics.get("after_first_token_s_baseline")
    opt = metrics.get("after_first_token_s_optimized")
    fixed = _before_generation_s(metrics)
    if base is None or opt is None or fixed is None:
        return {"after_first_token_speedup": None, "after_first_token_speedup_needed": None}
    budget = _target_s(metrics) - fixed
    return {
        "after_first_token_speedup": base / opt if opt > 0 else None,
        "after_first_token_speedup_needed": base / budget if budget > 0 else None,
    }


def _target_s(metrics: dict[str, Any]) -> float:
    """The optimised side's end-to-end mean that meets the latency target."""
    return metrics["latency_ratio_target"] * metrics["baseline_e2e_mean_s"]


def _before_generation_s(metrics: dict[str, Any]) -> float | None:
    """The optimised side's time per query that faster generation does not shrink."""
    first = metrics.get("first_token_s_optimized")
    outside = metrics.get("outside_model_s_optimized")
    return None if first is None or outside is None else first + outside


def time_split_lines(metrics: dict[str, Any]) -> list[str]:
    """The per-query time split of both sides and what the target asks of generation."""
    parts = ("first_token", "after_first_token", "outside_model")
    if any(metrics.get(f"{p}_s_{k}") is None for p in parts for k in ("baseline", "optimized")):
        return []
    names = ("to each turn's first token", "generating after it", "tools and framework")
    rows = [
        (name, metrics[f"{p}_s_baseline"], metrics[f"{p}_s_optimized"])
        for name, p in zip(names, parts, strict=True)
    ]
    rows.append(
        ("end-to-end mean", metrics["baseline_e2e_mean_s"], metrics["optimized_e2e_mean_s"])
    )
    target_s, fixed = _target_s(metrics), _before_generation_s(metrics) or 0.0
    needed = metrics.get("after_first_token_speedup_needed")
    now = metrics.get("after_first_token_speedup")
    now_text = f"{now:.2f}x" if now is not None else "n/a"
    if needed is None:
        verdict = (
            f"The target ({target_s:.3f} s per query) is out of reach whatever the generation "
            f"speed: the optimised side's time to first token and outside the model alone take "
            f"{fixed:.3f} s."
        )
    else:
        verdict = (
            f"With the optimised side's time to first token and outside the model as measured "
            f"({fixed:.3f} s), the target ({target_s:.3f} s per query) leaves "
            f"{target_s - fixed:.3f} s for generating after the first token: {needed:.2f}x "
            f"faster than the baseline's, against {now_text} now."
        )
    return [
        "Where the time goes, mean seconds per query (the parts add up to the end-to-end mean):",
        "",
        _table(("", "baseline", "optimised"), rows),
        "",
        verdict,
    ]


def failed_criteria(metrics: dict[str, Any]) -> list[str]:
    return [c for c in CRITERIA if not metrics.get(c)]


def failure_banner(metrics: dict[str, Any]) -> str | None:
    """A loud multi-line banner naming each failed criterion, or None when all are met."""
    failed = failed_criteria(metrics)
    if not failed:
        return None
    bar = "!" * 78
    lines = [bar, f"FAILED: {len(failed)} of {len(CRITERIA)} success criteria not met"]
    lines += [f"  - {c}: {CRITERIA_TEXT[c]}" for c in failed]
    lines += [
        f"  latency_ratio={metrics['latency_ratio']:.3f} "
        f"(target {metrics['latency_ratio_target']:.2f}), "
        f"accuracy baseline={metrics['accuracy_baseline']:.2f} "
        f"optimised={metrics['accuracy_optimized']:.2f}",
        bar,
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Markdown


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    if value is None:
        return "none"
    return str(value)


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def before_after_table(metrics: dict[str, Any]) -> str:
    rows = [
        ("end-to-end mean (s)", metrics["baseline_e2e_mean_s"], metrics["optimized_e2e_mean_s"]),
        ("accuracy, all queries", metrics["accuracy_baseline"], metrics["accuracy_optimized"]),
        (
            "accuracy, seed queries",
            metrics["seed_accuracy_baseline"],
            metrics["seed_accuracy_optimized"],
        ),
        (
            "accuracy, held-out queries",
            metrics["heldout_accuracy_baseline"],
            metrics["heldout_accuracy_optimized"],
        ),
        (
            "tool answers that report the tool's result",
            metrics.get("grounded_share_baseline"),
            metrics.get("grounded_share_optimized"),
        ),
        (
            "completion tokens per query",
            metrics["completion_tokens_mean_baseline"],
            metrics["completion_tokens_mean_optimized"],
        ),
        (
            "turns cut off at max_tokens",
            metrics.get("cut_off_turns_baseline"),
            metrics.get("cut_off_turns_optimized"),
        ),
        (
            "their share of completion tokens",
            metrics.get("cut_off_tokens_share_baseline"),
            metrics.get("cut_off_tokens_share_optimized"),
        ),
        (
            "their queries' share of the end-to-end time",
            metrics.get("cut_off_time_share_baseline"),
            metrics.get("cut_off_time_share_optimized"),
        ),
        (
            "server peak RSS (MB)",
            metrics.get("baseline_server_peak_rss_mb"),
            metrics["server_peak_rss_mb"],
        ),
    ]
    return _table(("", "baseline", "optimised"), rows)


def criteria_table(metrics: dict[str, Any]) -> str:
    rows = [(CRITERIA_TEXT[c], bool(metrics.get(c))) for c in CRITERIA]
    rows.append(("all criteria met", bool(metrics.get("criteria_met"))))
    return _table(("criterion", "met"), rows)


def scalar_table(data: dict[str, Any]) -> str:
    """Every scalar key of a flat metrics file, in its own order."""
    rows = [(k, v) for k, v in data.items() if isinstance(v, (int, float, str, bool)) or v is None]
    return _table(("metric", "value"), rows)


def decisions_lines(decisions: dict[str, Any]) -> list[str]:
    gate = decisions.get("gate") or {}
    choice = decisions.get("speculative_choice") or {}
    retrain = decisions.get("retrain") or {}
    draft = choice.get("draft")
    spec = (
        f"draft `{draft}` with k = {choice.get('num_draft_tokens', choice.get('k'))}"
        if draft
        else "no draft"
    )
    if choice.get("reason"):
        spec += f" ({choice['reason']})"
    trained = retrain.get("trained")
    return [
        f"- Gate: retrain = {_fmt(gate.get('retrain'))} ({gate.get('reason', 'no gate decision')})",
        f"- Speculative decoding: {spec}",
        "- Conciseness retrain: "
        + ("the concise LoRA model replaced the main model" if trained else "main model stands"),
    ]


def render_final_report(
    metrics: dict[str, Any], decisions: dict[str, Any], configs: dict[str, str]
) -> str:
    banner = failure_banner(metrics)
    parts = [
        "# Final benchmark: baseline vs optimised",
        "",
        "Both configurations ran in the same run, alternating query by query.",
        "",
        *(f"- {name.replace('optimized', 'optimised')}: {desc}" for name, desc in configs.items()),
        "",
        "## Decisions taken",
        "",
        *decisions_lines(decisions),
        "",
        "## Before / after",
        "",
        before_after_table(metrics),
        "",
        f"Latency ratio (optimised / baseline): **{metrics['latency_ratio']:.3f}** "
        f"(target <= {metrics['latency_ratio_target']:.2f}); completion-token ratio "
        f"{_fmt(metrics['completion_tokens_ratio'])}.",
        "",
    ]
    if metrics.get("errors_baseline") or metrics.get("errors_optimized"):
        parts += [
            f"Failed queries (counted wrong, left out of the latency means): baseline "
            f"{metrics.get('errors_baseline', 0)}, optimised {metrics.get('errors_optimized', 0)}.",
            "",
        ]
    if split := time_split_lines(metrics):
        parts += [*split, ""]
    if metrics.get("draft_acceptance_rate") is not None:
        parts += [
            f"Draft acceptance on the optimised pair: {metrics['draft_acceptance_rate']:.3f}.",
            "",
        ]
    parts += ["## Success criteria", "", criteria_table(metrics), ""]
    if banner:
        parts += ["```", banner, "```", ""]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------
# README


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def results_section(metrics_dir: Path) -> str:
    """The README results section, generated from whichever metrics files exist."""
    final = _load(metrics_dir / "final.json")
    boot = _load(metrics_dir / "bootstrap.json") or {}
    sizes = "a small Qwen3-shaped main model and a smaller draft"
    if isinstance(boot.get("main_params"), int) and isinstance(boot.get("draft_params"), int):
        sizes = (
            f"a {boot['main_params'] / 1e6:.2f}M-parameter Qwen3-shaped main model and a "
            f"{boot['draft_params'] / 1e6:.2f}M-parameter draft"
        )
    shown = False
    parts = [
        "## Results",
        "",
        "_Generated by `punie-lab readme` from `metrics/*.json`; do not edit by hand._",
        "",
        f"These figures come from the embedded default models ({sizes}, trained by "
        "`bootstrap` on a CPU). They demonstrate that the workflow measures, decides and verifies; "
        "they are **not** the latency of the 30B model on a Mac. Point `models.main` and "
        "`models.draft` in `params.yaml` at real models and run `dvc repro` to get those.",
        "",
        "- Real models on a Mac: set `models.main` (e.g. `mlx-community/Qwen3-30B-A3B-5bit`) "
        "and `models.draft` (a small Qwen3 with the same tokenizer), and "
        "`speculative.interleave: false`, `conciseness.parallel_servers: 1` and "
        "`final.interleave: false` so that one 30B server runs at a time within 32 GB.",
        "- Compare runs: `dvc exp run -S final.repeats=3`, then `dvc exp show`, "
        "`dvc metrics diff` and `dvc plots diff`.",
        "- Rewrite this section after a run: `punie-lab readme`.",
        "",
    ]
    if final:
        shown = True
        decisions = {
            "gate": _load(metrics_dir / "gate.json"),
            "speculative_choice": _load(metrics_dir / "speculative_choice.json"),
            "retrain": _load(metrics_dir / "retrain.json"),
        }
        verdict = (
            "all success criteria met"
            if final.get("criteria_met")
            else ("criteria **not** met: " + ", ".join(failed_criteria(final)))
        )
        parts += [
            "### Final benchmark",
            "",
            f"Latency ratio (optimised / baseline): **{_fmt(final['latency_ratio'])}** "
            f"(target <= {_fmt(final['latency_ratio_target'])}); {verdict}.",
            "",
            *decisions_lines(decisions),
            "",
            before_after_table(final),
            "",
            criteria_table(final),
            "",
        ]
        if split := time_split_lines(final):
            parts += [*split, ""]
    for name, title in (
        ("profile.json", "Profile (where the time goes)"),
        ("speculative.json", "Speculative decoding"),
        ("retrain.json", "Conciseness retrain"),
        ("bootstrap.json", "Embedded models (bootstrap)"),
        ("bootstrap_eval.json", "Embedded models checked (`punie-lab eval`)"),
    ):
        data = _load(metrics_dir / name)
        if data:
            shown = True
            parts += [f"### {title}", "", f"From `metrics/{name}`:", "", scalar_table(data), ""]
    if not shown:
        parts += ["No metrics yet: run `dvc repro`.", ""]
    return "\n".join(parts).rstrip() + "\n"


def rewrite_readme(readme: str, section: str) -> str:
    """Replace the text between the markers (appending them if absent). Idempotent."""
    block = f"{README_START}\n{section.rstrip()}\n{README_END}"
    start, end = readme.find(README_START), readme.find(README_END)
    if start == -1 or end == -1 or end < start:
        head = readme.rstrip()
        return (head + "\n\n" if head else "") + block + "\n"
    return readme[:start] + block + readme[end + len(README_END) :]

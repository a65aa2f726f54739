"""The final stage's metrics, success criteria and report, from each configuration's figures.

Pure: figures in, flat metrics and Markdown out, so the criteria are tested on recorded
numbers. Keys read `<figure>_<configuration>`: `e2e_mean_s_baseline`, `latency_ratio_optimized`,
`decisions_lost_speculative` ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from punie.reports.tables import fmt, table

CRITERIA = ("latency_ratio_ok", "seed_accuracy_ok", "heldout_accuracy_ok", "memory_ok")
CRITERIA_TEXT = {
    "latency_ratio_ok": "optimized / baseline end-to-end latency <= target (seed: ~25 s -> < 10 s)",
    "seed_accuracy_ok": "optimized accuracy is 100 % on the seed's 5 discrimination queries",
    "heldout_accuracy_ok": (
        "optimized accuracy on both held-out sets (template and new wording) is no lower than "
        "the baseline's"
    ),
    "memory_ok": "peak RSS of the optimized server is within the memory budget",
}
HELD_OUT = ("heldout", "wording")
# Per configuration, in this order: the ablation table's columns and the metrics keys.
FIGURES = (
    "e2e_mean_s",
    "e2e_median_s",
    "latency_ratio",
    "first_token_s",
    "after_first_token_s",
    "outside_model_s",
    "completion_tokens_mean",
    "accuracy",
    "seed_accuracy",
    "heldout_accuracy",
    "wording_accuracy",
    "decisions_lost",
    "grounded_share",
    "grounded_lost",
    "thinking_tokens_mean",
    "loop_stops",
    "cut_off_turns",
    "cut_off_tokens_share",
    "decode_tps",
    "turns_mean",
    "server_peak_rss_mb",
    "errors",
)


def final_metrics(
    figures: Mapping[str, Mapping[str, Any]],
    *,
    latency_ratio_target: float,
    memory_budget_mb: float,
) -> dict[str, Any]:
    """Flat `metrics/final.json`: every figure of every configuration (`baseline` first,
    `optimized` last), the latency ratios against the baseline, one boolean per success
    criterion of the `optimized` configuration and `criteria_met`."""
    base = figures["baseline"]["e2e_mean_s"]
    out: dict[str, Any] = {"latency_ratio_target": latency_ratio_target}
    for name, f in figures.items():
        f = {**f, "latency_ratio": f["e2e_mean_s"] / base if base else None}
        for key in FIGURES:
            out[f"{key}_{name}"] = f.get(key)
    opt, b = figures["optimized"], figures["baseline"]
    checks = {
        "latency_ratio_ok": (out["latency_ratio_optimized"] or float("inf"))
        <= latency_ratio_target,
        "seed_accuracy_ok": (opt.get("seed_accuracy") or 0.0) >= 1.0,
        "heldout_accuracy_ok": all(
            (opt.get(f"{s}_accuracy") or 0.0) >= (b.get(f"{s}_accuracy") or 0.0) for s in HELD_OUT
        ),
        "memory_ok": opt["server_peak_rss_mb"] <= memory_budget_mb,
    }
    out |= {"memory_budget_mb": memory_budget_mb, **checks, "criteria_met": all(checks.values())}
    return out | decode_budget(out)


def decode_budget(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """How much faster than the baseline's the optimized side's generation after the first
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


def _target_s(metrics: Mapping[str, Any]) -> float:
    """The optimized side's end-to-end mean that meets the latency target."""
    return metrics["latency_ratio_target"] * metrics["e2e_mean_s_baseline"]


def _before_generation_s(metrics: Mapping[str, Any]) -> float | None:
    """The optimized side's time per query that faster generation does not shrink."""
    first = metrics.get("first_token_s_optimized")
    outside = metrics.get("outside_model_s_optimized")
    return None if first is None or outside is None else first + outside


def configurations(metrics: Mapping[str, Any]) -> list[str]:
    """The configurations in a final metrics file, in their order."""
    suffix = "e2e_mean_s_"
    return [k[len(suffix) :] for k in metrics if k.startswith(suffix)]


def regressions(metrics: Mapping[str, Any]) -> dict[str, int]:
    """Configurations that decided a query wrong that the baseline decided right."""
    return {c: n for c in configurations(metrics) if (n := metrics.get(f"decisions_lost_{c}") or 0)}


def failed_criteria(metrics: Mapping[str, Any]) -> list[str]:
    return [c for c in CRITERIA if not metrics.get(c)]


def failure_banner(metrics: Mapping[str, Any]) -> str | None:
    """A loud banner naming each failed criterion and every configuration that lost a
    decision, or None when all criteria are met and nothing regressed."""
    failed, lost = failed_criteria(metrics), regressions(metrics)
    if not failed and not lost:
        return None
    bar = "!" * 78
    lines = [bar]
    if failed:
        lines.append(f"FAILED: {len(failed)} of {len(CRITERIA)} success criteria not met")
        lines += [f"  - {c}: {CRITERIA_TEXT[c]}" for c in failed]
    if lost:
        lines.append("ACCURACY REGRESSION against the baseline (decisions it got right):")
        lines += [f"  - {c}: {n} decision(s) lost" for c, n in lost.items()]
    lines += [
        f"  latency_ratio_optimized={fmt(metrics.get('latency_ratio_optimized'))} "
        f"(target {metrics['latency_ratio_target']:.2f}), accuracy baseline="
        f"{fmt(metrics.get('accuracy_baseline'))} optimized="
        f"{fmt(metrics.get('accuracy_optimized'))}",
        bar,
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Markdown

COLUMNS = {
    "e2e_mean_s": "e2e mean s",
    "latency_ratio": "ratio",
    "first_token_s": "to 1st token s",
    "after_first_token_s": "after it s",
    "outside_model_s": "tools + framework s",
    "completion_tokens_mean": "tokens",
    "seed_accuracy": "seed",
    "heldout_accuracy": "held-out",
    "wording_accuracy": "wording",
    "decisions_lost": "lost",
    "grounded_share": "grounded",
    "loop_stops": "loops stopped",
    "cut_off_turns": "cut off",
    "server_peak_rss_mb": "server MB",
}


def ablation_table(metrics: Mapping[str, Any]) -> str:
    """One row per configuration: latency split (the three parts add up to the mean), tokens,
    decisions per query set and lost against the baseline, grounded answers, loops."""
    rows = [(c, *(metrics.get(f"{key}_{c}") for key in COLUMNS)) for c in configurations(metrics)]
    return table(("configuration", *COLUMNS.values()), rows)


def time_split_lines(metrics: Mapping[str, Any]) -> list[str]:
    """What the target asks of the optimized side's generation after the first token."""
    if metrics.get("first_token_s_optimized") is None:
        return []
    target_s, fixed = _target_s(metrics), _before_generation_s(metrics) or 0.0
    needed = metrics.get("after_first_token_speedup_needed")
    now = metrics.get("after_first_token_speedup")
    now_text = f"{now:.2f}x" if now is not None else "n/a"
    if needed is None:
        return [
            f"The target ({target_s:.3f} s per query) is out of reach whatever the generation "
            f"speed: the optimized side's time to first token and outside the model alone take "
            f"{fixed:.3f} s."
        ]
    return [
        f"With the optimized side's time to first token and outside the model as measured "
        f"({fixed:.3f} s), the target ({target_s:.3f} s per query) leaves "
        f"{target_s - fixed:.3f} s for generating after the first token: {needed:.2f}x "
        f"faster than the baseline's, against {now_text} now."
    ]


def criteria_table(metrics: Mapping[str, Any]) -> str:
    rows = [(CRITERIA_TEXT[c], bool(metrics.get(c))) for c in CRITERIA]
    rows.append(("all criteria met", bool(metrics.get("criteria_met"))))
    return table(("criterion", "met"), rows)


def decisions_lines(decisions: Mapping[str, Any]) -> list[str]:
    gate = decisions.get("gate") or {}
    choice = decisions.get("speculative_choice") or {}
    retrain = decisions.get("retrain") or {}
    draft = choice.get("draft")
    spec = f"draft `{draft}` with k = {choice.get('num_draft_tokens')}" if draft else "no draft"
    if choice.get("reason"):
        spec += f" ({choice['reason']})"
    trained = retrain.get("trained")
    return [
        f"- Gate: retrain = {fmt(gate.get('retrain'))} ({gate.get('reason', 'no gate decision')})",
        f"- Speculative decoding: {spec}",
        "- Conciseness retrain: "
        + ("the concise LoRA model replaced the main model" if trained else "main model stands"),
    ]


def render_final_report(
    metrics: Mapping[str, Any],
    decisions: Mapping[str, Any],
    described: Mapping[str, str],
    skipped: Mapping[str, str],
    lost: Mapping[str, Sequence[str]],
    method: str,
) -> str:
    """reports/final.md: what ran, the ablation table, the criteria and what regressed."""
    parts = [
        "# Final benchmark: the seed's configuration, each lever alone, all together",
        "",
        f"Measured {method}. Every configuration has its own server.",
        "",
        *(f"- **{name}**: {desc}" for name, desc in described.items()),
        *(f"- {lever}: not measured, {why}" for lever, why in skipped.items()),
        "",
        "## Decisions taken by the earlier stages",
        "",
        *decisions_lines(decisions),
        "",
        "## Ablation",
        "",
        "Mean seconds per query: to each turn's first token + generating after it + tools and "
        "framework = the end-to-end mean. Accuracy per query set counts the decision and the "
        "first tool; *lost* counts the queries the baseline got right and this configuration "
        "got wrong; *grounded* is the share of answers after a tool call that state a fact of "
        "the tool's output.",
        "",
        ablation_table(metrics),
        "",
        f"Latency ratio (optimized / baseline): **{fmt(metrics.get('latency_ratio_optimized'))}** "
        f"(target <= {metrics['latency_ratio_target']:.2f}).",
        "",
        *time_split_lines(metrics),
        "",
    ]
    ratios = [
        f"{c} {fmt(v)}"
        for c in configurations(metrics)
        if (v := metrics.get(f"pipeline_overhead_ratio_{c}")) is not None
    ]
    if ratios:
        parts += [
            "Pipeline / direct generation (the same turns generated in-process by mlx-lm, "
            f"server stopped): {', '.join(ratios)}.",
            "",
        ]
    if metrics.get("draft_acceptance_rate") is not None:
        parts += [
            f"Draft acceptance on the optimized pair (in-process, its own recorded prompts): "
            f"{fmt(metrics['draft_acceptance_rate'])}.",
            "",
        ]
    if any(lost.values()):
        parts += ["## Decisions lost against the baseline", ""]
        parts += [f"- {c}: {', '.join(qs)}" for c, qs in lost.items() if qs]
        parts.append("")
    parts += ["## Success criteria (the optimized configuration)", "", criteria_table(metrics), ""]
    if banner := failure_banner(metrics):
        parts += ["```", banner, "```", ""]
    return "\n".join(parts)

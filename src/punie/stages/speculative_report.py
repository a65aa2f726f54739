"""`punie-lab speculative-report`: aggregate the results of `punie-lab speculative`
(`punie.stages.speculative`) for the k values currently in params only (stale per-k files are
ignored), compare measured with predicted speedups, and choose the configuration.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from punie import paths
from punie.errors import StageError
from punie.machine import machine_keys
from punie.measurement.latency import LATENCY_KEYS
from punie.measurement.speculative import (
    CONTROL_FILE,
    Choice,
    ConfigRow,
    acceptance_needed,
    choose_configuration,
    predicted_speedup,
    vllm_acceptance,
)
from punie.params import load_params
from punie.reports.latency import latency_table
from punie.results import read_json, write_json, write_rows, write_text_atomic

if TYPE_CHECKING:
    from punie.params import Params


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    paths.add_path_option(
        parser, "--results", paths.SPECULATIVE_RESULTS, "results to aggregate", metavar="DIR"
    )
    paths.add_path_option(
        parser, "--out", None, "write metrics, plot rows, choice and report here", metavar="DIR"
    )


def run(name: str, args: argparse.Namespace) -> int:
    params = load_params()
    base = args.out or Path()
    outputs = {
        "metrics": base / paths.SPECULATIVE_METRICS,
        "by_k": base / paths.SPECULATIVE_BY_K,
        "choice": base / paths.SPECULATIVE_CHOICE,
        "report": base / paths.SPECULATIVE_REPORT,
    }
    report(params, args.results, outputs)
    return 0


def _read(path: Path) -> dict[str, Any]:
    try:
        return read_json(path)
    except FileNotFoundError:
        raise StageError(f"{path}: missing; run `punie-lab speculative` first") from None
    except json.JSONDecodeError as e:
        raise StageError(f"{path}: not valid JSON: {e}") from None


def load_results(results: Path, ks: Sequence[int]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """baseline.json and k<k>.json for exactly the k values given (others are ignored)."""
    baseline = _read(results / "baseline.json")
    per_k = []
    for k in dict.fromkeys(ks):
        data = _read(results / f"k{k}.json")
        if data.get("k") != k:
            raise StageError(f"{results / f'k{k}.json'}: holds k={data.get('k')!r}, not {k}")
        per_k.append(data)
    return baseline, per_k


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def by_k_rows(
    baseline: dict[str, Any],
    per_k: Sequence[dict[str, Any]],
    control: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One row per k: measured speedups next to the predicted ones. Against the k=0 control
    (same draft server, nothing drafted) the speedup is drafting's alone."""
    b = baseline["summary"]
    ctl = control["summary"]["decode_tps"] if control else None
    c = baseline["cost"]["cost_ratio"]
    rows = []
    for data in per_k:
        k, s, acc = data["k"], data["summary"], data["acceptance"]
        a = acc["acceptance_rate"]
        rows.append(
            {
                "k": k,
                "speedup": _ratio(s["decode_tps"], b["decode_tps"]),
                "speedup_vs_control": _ratio(s["decode_tps"], ctl),
                "predicted_speedup": predicted_speedup(a, k, c),
                "predicted_speedup_cpu": predicted_speedup(a, k, c, acc["verify_cost"]),
                "inprocess_speedup": acc["inprocess_speedup"],
                "acceptance_needed_1_5x": acceptance_needed(1.5, k, c, acc["verify_cost"]),
                "e2e_speedup": _ratio(b["e2e_mean_s"], s["e2e_mean_s"]),
                "acceptance_rate": a,
                # vLLM's names: accepted / drafted, and 1 + accepted per step.
                **vllm_acceptance(acc),
                "mean_accepted_per_step": acc["mean_accepted_per_step"],
                "verify_cost": acc["verify_cost"],
                "step_cost": acc.get("step_cost"),
                "by_kind": acc.get("by_kind", {}),
                "cost_ratio": c,
                "e2e_mean_s": s["e2e_mean_s"],
                "e2e_median_s": s["e2e_median_s"],
                "generation_mean_s": s["generation_mean_s"],
                "decode_tps": s["decode_tps"],
                "accuracy": s["accuracy"],
                "tool_accuracy": s["tool_accuracy"],
                "answer_mismatches": data["answer_mismatches"],
                "token_mismatches": acc["token_mismatches"],
                "peak_rss_mb": s["peak_rss_mb"],
                **{key: s.get(key) for key in LATENCY_KEYS},
            }
        )
    return rows


def _row(k: int | None, s: dict[str, Any]) -> ConfigRow:
    return ConfigRow(
        k,
        s["e2e_mean_s"],
        s["decode_tps"] or 0.0,
        s["accuracy"] or 0.0,
        s["tool_accuracy"] or 0.0,
        s["peak_rss_mb"],
    )


def report(params: Params, results: Path, outputs: dict[str, Path]) -> None:
    ks = params.speculative.num_draft_tokens
    baseline, per_k = load_results(results, ks)
    control = _read(results / CONTROL_FILE) if params.speculative.control else None
    b = baseline["summary"]
    rows = by_k_rows(baseline, per_k, control)
    base_row = _row(None, b)
    choice = choose_configuration(
        base_row, [_row(d["k"], d["summary"]) for d in per_k], params.speculative.memory_budget_mb
    )
    same = [
        r
        for r in rows
        if r["accuracy"] == b["accuracy"] and r["tool_accuracy"] == b["tool_accuracy"]
    ]
    best = max(same or rows, key=lambda r: r["speedup"] or 0.0)
    metrics: dict[str, Any] = {
        "baseline_e2e_mean_s": b["e2e_mean_s"],
        "baseline_decode_tps": b["decode_tps"],
        "best_k": best["k"],
        "best_speedup": best["speedup"],
        "best_e2e_speedup": best["e2e_speedup"],
        "accuracy_min": min([b["accuracy"], *(r["accuracy"] for r in rows)]),
        "acceptance_rate_best_k": best["acceptance_rate"],
        "draft_acceptance_rate_best_k": best["draft_acceptance_rate"],
        "mean_acceptance_length_best_k": best["mean_acceptance_length"],
        "predicted_speedup_best_k": best["predicted_speedup"],
        "measured_over_predicted_best_k": _ratio(best["speedup"], best["predicted_speedup"]),
        "cost_ratio": baseline["cost"]["cost_ratio"],
        "server_peak_rss_mb_max": max([b["peak_rss_mb"], *(r["peak_rss_mb"] for r in rows)]),
        "answer_mismatches_total": sum(r["answer_mismatches"] for r in rows),
        "chosen_k": choice.k or 0,
    }
    if control is not None:
        metrics["control_decode_tps"] = control["summary"]["decode_tps"]
        metrics["control_over_baseline_decode"] = _ratio(
            control["summary"]["decode_tps"], b["decode_tps"]
        )
        metrics["best_speedup_vs_control"] = best["speedup_vs_control"]
    for kind, acc in best["by_kind"].items():
        metrics[f"acceptance_rate_best_k_{kind}"] = acc["acceptance_rate"]
    if best["step_cost"] is not None:
        metrics["step_cost_best_k"] = best["step_cost"]
        metrics["step_rest_best_k"] = step_rest(best)
    for r in rows:
        for key in (
            "speedup",
            "e2e_speedup",
            "acceptance_rate",
            "draft_acceptance_rate",
            "mean_acceptance_length",
            "predicted_speedup",
        ):
            metrics[f"{key}_k{r['k']}"] = r[key]
    for key in LATENCY_KEYS:  # vLLM's per-request latencies, `<metric>_<configuration>`
        metrics[f"{key}_baseline"] = b.get(key)
        metrics[f"{key}_best_k"] = best[key]
    metrics.update(machine_keys(params.runtime.blas))
    write_json(
        outputs["metrics"],
        {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()},
    )
    write_rows(
        outputs["by_k"],
        [
            {
                key: r[key]
                for key in (
                    "k",
                    "speedup",
                    "predicted_speedup",
                    "acceptance_rate",
                    "draft_acceptance_rate",
                    "mean_acceptance_length",
                    "inprocess_speedup",
                    "e2e_speedup",
                )
            }
            for r in rows
        ],
    )
    write_json(
        outputs["choice"],
        {
            "draft": baseline["draft"] if choice.k is not None else None,
            "num_draft_tokens": choice.k,
            "reason": choice.reason,
            "rejected": {f"k{k}": why for k, why in choice.rejected.items()},
            "memory_budget_mb": params.speculative.memory_budget_mb,
        },
    )
    write_text_atomic(
        outputs["report"],
        render_report(baseline, rows, choice, per_k, control),
    )


def step_rest(row: dict[str, Any]) -> float:
    """The part of a measured speculative step that is neither drafting (k c) nor the
    verify pass: the draft catching up on the main model's token, cache trims, sampling,
    Python. All in single-token main passes."""
    return row["step_cost"] - row["k"] * row["cost_ratio"] - row["verify_cost"]


def _breakdown(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Acceptance per turn kind, and a speculative step's measured time split into parts."""
    if not rows or not rows[0]["by_kind"]:
        return []
    kinds = rows[0]["by_kind"]
    lines = [
        "Where acceptance is lost (in-process; turn kind by the main model's own output):",
        "",
        "| turn | prompts | main tokens | " + " | ".join(f"a at k={r['k']}" for r in rows) + " |",
        "|---" * (3 + len(rows)) + "|",
    ]
    for kind, first in kinds.items():
        lines.append(
            f"| {kind.replace('_', ' ')} | {first['prompts']} | {first['tokens']} | "
            + " | ".join(_f(r["by_kind"][kind]["acceptance_rate"]) for r in rows)
            + " |"
        )
    timed = [r for r in rows if r["step_cost"] is not None]
    if timed:
        lines += [
            "",
            "One speculative step, measured in-process, in units of one single-token main "
            "pass (Leviathan's model counts only k c + verify):",
            "",
            "| k | measured step | drafting k c | verify pass | rest |",
            "|---|---|---|---|---|",
            *(
                f"| {r['k']} | {_f(r['step_cost'])} | {_f(r['k'] * r['cost_ratio'])} | "
                f"{_f(r['verify_cost'])} | {_f(step_rest(r))} |"
                for r in timed
            ),
            "",
            "The rest (the draft catching up on the main model's token, cache trims, "
            "sampling, Python) is left out of the prediction: the larger it is, the further "
            "the in-process speedup falls short of the predicted one.",
        ]
    return [*lines, ""]


def acceptance_vocabulary(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Acceptance in Leviathan's terms and in vLLM's: three figures, two vocabularies."""
    return [
        "Acceptance in two vocabularies (in-process, the same speculative steps):",
        "",
        "| k | acceptance a (Leviathan, the lab's `acceptance_rate`) | draft acceptance rate "
        "(vLLM) | mean acceptance length (vLLM) | accepted drafts per step |",
        "|---|---|---|---|---|",
        *(
            f"| {r['k']} | {_f(r['acceptance_rate'])} | {_f(r['draft_acceptance_rate'])} | "
            f"{_f(r['mean_acceptance_length'])} | {_f(r['mean_accepted_per_step'])} |"
            for r in rows
        ),
        "",
        "- a (`acceptance_rate_k<k>`) is Leviathan et al.'s per-token acceptance probability: "
        "kept drafts over the drafts the main model checked, each step checking up to its first "
        "rejection. It is what the predicted speedup takes.",
        "- vLLM's draft acceptance rate (`draft_acceptance_rate_k<k>`) = kept drafts / drafted "
        "tokens: the drafts after a step's first rejection are never checked and count as "
        "lost, so it is below a whenever a step rejects before its last draft.",
        "- vLLM's mean acceptance length (`mean_acceptance_length_k<k>`) = 1 + kept drafts per "
        "step: the tokens one main-model pass emits (at most k + 1).",
        "",
    ]


def _f(v: Any, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def render_report(
    baseline: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    choice: Choice,
    per_k: Sequence[dict[str, Any]],
    control: dict[str, Any] | None = None,
) -> str:
    b, cost = baseline["summary"], baseline["cost"]
    lines = [
        "# Speculative decoding",
        "",
        f"Main `{baseline['main']}`, draft `{baseline['draft']}`; {b['n_queries']} queries per "
        f"configuration. Measured with {baseline['method']}.",
        "",
        "| configuration | e2e mean s | e2e median s | generation s | decode tok/s | decode "
        "speedup | vs k=0 | predicted (Leviathan) | predicted (CPU verify) | in-process "
        "speedup | acceptance a | accepted/step | accuracy | tool acc. | answers ≠ baseline | "
        "server peak RSS MB |",
        "|---" * 16 + "|",
        f"| baseline (no draft) | {_f(b['e2e_mean_s'])} | {_f(b['e2e_median_s'])} | "
        f"{_f(b['generation_mean_s'])} | {_f(b['decode_tps'], 1)} | 1.00 | – | – | – | – | – | "
        f"– | {_f(b['accuracy'])} | {_f(b['tool_accuracy'])} | – | {_f(b['peak_rss_mb'], 0)} |",
    ]
    if control is not None:
        s = control["summary"]
        lines.append(
            f"| k = 0 (draft loaded, nothing drafted) | {_f(s['e2e_mean_s'])} | "
            f"{_f(s['e2e_median_s'])} | {_f(s['generation_mean_s'])} | "
            f"{_f(s['decode_tps'], 1)} | {_f(_ratio(s['decode_tps'], b['decode_tps']))} | 1.00 | "
            f"– | – | – | – | – | {_f(s['accuracy'])} | {_f(s['tool_accuracy'])} | "
            f"{control['answer_mismatches']} | {_f(s['peak_rss_mb'], 0)} |"
        )
    for r in rows:
        lines.append(
            f"| k = {r['k']} | {_f(r['e2e_mean_s'])} | {_f(r['e2e_median_s'])} | "
            f"{_f(r['generation_mean_s'])} | {_f(r['decode_tps'], 1)} | {_f(r['speedup'])} | "
            f"{_f(r['speedup_vs_control'])} | "
            f"{_f(r['predicted_speedup'])} | {_f(r['predicted_speedup_cpu'])} | "
            f"{_f(r['inprocess_speedup'])} | {_f(r['acceptance_rate'])} | "
            f"{_f(r['mean_accepted_per_step'])} | {_f(r['accuracy'])} | "
            f"{_f(r['tool_accuracy'])} | {r['answer_mismatches']} | {_f(r['peak_rss_mb'], 0)} |"
        )
    lines += [
        "",
        f"Cost ratio c = draft / main per-token decode time = {_f(cost['draft_token_s'] * 1e3)} "
        f"/ {_f(cost['main_token_s'] * 1e3)} ms = {_f(cost['cost_ratio'], 3)} (in-process, "
        f"{cost['prompts']} prompts of {_f(cost['prompt_tokens_mean'], 0)} tokens on average).",
        "Predicted (Leviathan et al.) = (1 - a^(k+1)) / ((1 - a)(k c + 1)); the CPU column "
        "replaces the 1 (one main pass) by the measured cost of one main pass over k+1 tokens "
        "relative to a single-token pass: "
        + ", ".join(f"k={r['k']}: {_f(r['verify_cost'])}" for r in rows)
        + ". At these costs a 1.5x decode speedup needs an acceptance rate of "
        + ", ".join(
            f"k={r['k']}: {_f(r['acceptance_needed_1_5x'])}"
            if r["acceptance_needed_1_5x"] is not None
            else f"k={r['k']}: unreachable"
            for r in rows
        )
        + " (measured: "
        + ", ".join(f"{_f(r['acceptance_rate'])}" for r in rows)
        + ").",
        "Decode tok/s counts streamed answer-text tokens after each turn's first chunk, over "
        "the time from the first chunk to the last (tool calls are sent whole, so they are "
        "timed by the in-process probe only). The draft server's RSS includes both "
        "models. In-process speedup: the same prompts decoded by mlx-lm in one process, "
        "without the server. The k = 0 row is the draft server asked to draft nothing: it "
        "isolates the server's speculative path (no batching, draft prefill) from drafting "
        "itself, so 'vs k=0' is drafting's own speedup.",
        "",
    ]
    lines += acceptance_vocabulary(rows)
    lines += latency_table(
        {
            "baseline": b,
            **({"k = 0": control["summary"]} if control is not None else {}),
            **{f"k = {r['k']}": r for r in rows},
        }
    )
    lines += _breakdown(rows)
    mism = [
        (d["k"], d) for d in per_k if d["answer_mismatches"] or d["acceptance"]["token_mismatches"]
    ]
    if mism:
        lines.append("**Finding: speculative output differs from the baseline at temperature 0.**")
        for k, d in mism:
            example = d["mismatch_example"] or d["acceptance"]["mismatch_example"]
            lines.append(
                f"- k={k}: {d['answer_mismatches']} of {d['summary']['n_queries']} agent "
                "answers differ, "
                f"{d['acceptance']['token_mismatches']} in-process generations differ; "
                f"example: `{json.dumps(example)[:600]}`"
            )
        if control is not None and control["answer_mismatches"]:
            lines.append(
                f"- k=0 (draft loaded, nothing drafted): {control['answer_mismatches']} answers "
                "differ too, so the difference comes from the draft server's own path (prompt "
                "cache reuse, prefill shapes), not from drafting; compare the in-process "
                "token mismatches, where only drafting differs."
            )
        lines.append("")
    else:
        lines += [
            "Answers are identical to the baseline's for every k (agent runs and "
            "in-process tokens), as greedy speculative decoding must be.",
            "",
        ]
    picked = "no draft" if choice.k is None else f"draft with k = {choice.k}"
    evidence = f" ({choice.evidence})" if choice.evidence else ""
    lines += [f"**Choice:** {picked} — {choice.reason}{evidence}.", ""]
    if choice.rejected:
        lines += [*(f"- k = {k}: {why}" for k, why in sorted(choice.rejected.items())), ""]
    return "\n".join(lines)

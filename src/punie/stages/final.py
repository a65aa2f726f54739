"""`punie-lab final`: the before/after benchmark.

final   baseline (main model, no draft) vs optimised (concise model if trained, plus the
        speculative stage's draft and k) in the same run, seed + held-out queries, through
        the production agent; draft acceptance of the optimised pair measured in-process.
        Writes metrics/final.json (flat, one boolean per success criterion), the records,
        plot rows and reports/final.md. Unmet criteria print a loud banner; the stage still
        exits 0 so the report and metrics land (a less accurate concise model already failed
        the retrain stage).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console

from punie import paths
from punie.agent.queries import query_sets
from punie.errors import StageError
from punie.measurement.benchmark import measure_configs, record_printer, server_config
from punie.measurement.records import accuracy_by_set, cut_off, summarize, time_split
from punie.measurement.spec_probe import ProbeError, ProbeRequest, probe_body, run_probe
from punie.measurement.timing import load_cases
from punie.params import load_params
from punie.reports.final import (
    Measured,
    decode_budget,
    failure_banner,
    final_metrics,
    render_final_report,
)
from punie.results import read_object, write_json, write_rows, write_text_atomic
from punie.serving.preflight import fast_checks

if TYPE_CHECKING:
    from punie.measurement.benchmark import ConfigRun
    from punie.params import Params


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    pass


def run(name: str, args: argparse.Namespace) -> int:
    return run_final(load_params(), Console())


def optimised_model(params: Params, retrain: dict[str, Any]) -> str:
    """models/concise when the retrain stage trained it, else the main model."""
    if not retrain.get("trained"):
        return params.models.main
    if not (paths.CONCISE_MODEL / "config.json").exists():
        raise StageError(
            f"{paths.RETRAIN_METRICS}: trained is true but {paths.CONCISE_MODEL} holds no model"
        )
    return str(paths.CONCISE_MODEL)


def serving_draft(model: str, draft: str | None) -> str | None:
    """models/concise_draft (distilled on the concise model's answers) when the concise model
    serves and the concise-draft stage trained one; else the speculative stage's draft."""
    if (
        draft
        and model == str(paths.CONCISE_MODEL)
        and (paths.CONCISE_DRAFT / "config.json").exists()
    ):
        return str(paths.CONCISE_DRAFT)
    return draft


def speculative_pick(choice: dict[str, Any]) -> tuple[str | None, int | None]:
    """(draft, k) from metrics/speculative_choice.json; (None, None) when no draft pays."""
    draft = choice.get("draft")
    if not draft:
        return None, None
    k = choice.get("num_draft_tokens", choice.get("k"))
    if not isinstance(k, int) or k < 1:
        raise StageError(
            f"{paths.SPECULATIVE_CHOICE}: draft is {draft!r} but num_draft_tokens/k is {k!r}"
        )
    return str(draft), k


def run_final(params: Params, console: Console) -> int:
    gate, retrain, choice = (
        read_object(paths.GATE),
        read_object(paths.RETRAIN_METRICS),
        read_object(paths.SPECULATIVE_CHOICE),
    )
    model = optimised_model(params, retrain)
    draft, k = speculative_pick(choice)
    draft = serving_draft(model, draft)
    # In seconds, before any server: every model present (hub ids resolved from the local
    # cache), the draft sharing the served model's tokenizer. Servers and the acceptance
    # probe load the resolved directories; the report names what params.yaml names.
    main_dir, _ = fast_checks(params, use_draft=False)
    model_dir, draft_dir = fast_checks(params, model, draft, use_draft=draft is not None)
    configs = {
        "baseline": server_config(params, str(main_dir)),
        "optimized": server_config(
            params, str(model_dir), str(draft_dir) if draft_dir else None, k
        ),
    }
    described = {
        "baseline": f"`{params.models.main}`, no draft",
        "optimized": f"`{model}`" + (f" + draft `{draft}`, k = {k}" if draft else ", no draft"),
    }
    cases = load_cases(query_sets(params))
    f = params.final
    order = "alternating query by query" if f.interleave else "one configuration after the other"
    console.print(
        f"[bold]final[/]: {len(cases)} queries x {f.repeats} on baseline ({described['baseline']}) "
        f"and optimised ({described['optimized']}), {order}"
    )

    runs = asyncio.run(
        measure_configs(
            params,
            configs,
            cases,
            repeats=f.repeats,
            interleave=f.interleave,
            log_dir=paths.FINAL_LOGS,
            on_record=record_printer(console, 9),
        )
    )
    acceptance = None
    if draft_dir and k and f.acceptance_prompts > 0:
        acceptance = measure_acceptance(
            params, str(model_dir), str(draft_dir), k, runs["optimized"], console
        )
    metrics = metrics_from_runs(runs["baseline"], runs["optimized"], params)
    metrics["draft_acceptance_rate"] = acceptance
    metrics["num_draft_tokens"] = k or 0
    metrics["concise_model"] = bool(retrain.get("trained"))
    write_outputs(
        params,
        metrics,
        runs,
        {"gate": gate, "speculative_choice": choice, "retrain": retrain},
        described,
    )
    print_summary(metrics, console)
    return 0


def measure_acceptance(
    params: Params, model: str, draft: str, k: int, run: ConfigRun, console: Console
) -> float:
    """Draft acceptance on the optimised model's own recorded prompts, replayed in-process."""

    bodies = [b for r in run.records for b in r.requests if b is not None]
    bodies = bodies[: params.final.acceptance_prompts]
    if not bodies:
        raise StageError("no recorded optimised requests to measure draft acceptance on")
    console.print(f"[bold]final[/]: draft acceptance on {len(bodies)} recorded prompts, k = {k}")
    request = ProbeRequest(
        main=model,
        draft=draft,
        bodies=[probe_body(b) for b in bodies],
        ks=[k],
        max_tokens=params.server.max_tokens,
        chat_template_args=dict(params.server.chat_template_args),
        verify_reps=5,
    )
    try:
        result = run_probe(request, paths.FINAL_LOGS / "acceptance", blas=params.runtime.blas)
    except ProbeError as e:
        raise StageError(f"draft acceptance probe failed: {e}") from None
    return float(result["by_k"][str(k)]["acceptance_rate"])


def metrics_from_runs(baseline: ConfigRun, optimized: ConfigRun, params: Params) -> dict[str, Any]:
    b, o = summarize(baseline.records), summarize(optimized.records)
    if b["e2e_mean_s"] is None or o["e2e_mean_s"] is None:
        raise StageError(
            f"every query failed on a configuration (errors: baseline {b['n_errors']}, "
            f"optimised {o['n_errors']}); see {paths.FINAL_LOGS}"
        )
    bs, os_ = accuracy_by_set(baseline.records), accuracy_by_set(optimized.records)
    measured = Measured(
        baseline_e2e_mean_s=b["e2e_mean_s"],
        optimized_e2e_mean_s=o["e2e_mean_s"],
        baseline_seed_accuracy=bs.get("seed") or 0.0,
        optimized_seed_accuracy=os_.get("seed") or 0.0,
        baseline_heldout_accuracy=bs.get("heldout") or 0.0,
        optimized_heldout_accuracy=os_.get("heldout") or 0.0,
        baseline_accuracy=b["accuracy"] or 0.0,
        optimized_accuracy=o["accuracy"] or 0.0,
        baseline_completion_tokens_mean=b["completion_tokens_mean"] or 0.0,
        optimized_completion_tokens_mean=o["completion_tokens_mean"] or 0.0,
        server_peak_rss_mb=optimized.peak_rss_mb,
    )
    metrics = final_metrics(
        measured,
        latency_ratio_target=params.final.latency_ratio_target,
        memory_budget_mb=params.final.memory_budget_mb,
    )
    metrics["baseline_server_peak_rss_mb"] = baseline.peak_rss_mb
    metrics["baseline_decode_tps"] = b["decode_tps"]
    metrics["optimized_decode_tps"] = o["decode_tps"]
    metrics["grounded_share_baseline"] = b["grounded_share"]
    metrics["grounded_share_optimized"] = o["grounded_share"]
    metrics["baseline_turns_mean"] = b["turns_mean"]
    metrics["optimized_turns_mean"] = o["turns_mean"]
    metrics["errors_baseline"] = b["n_errors"]
    metrics["errors_optimized"] = o["n_errors"]
    for key, run in (("baseline", baseline), ("optimized", optimized)):
        for part, value in (time_split(run.records) | cut_off(run.records)).items():
            metrics[f"{part}_{key}"] = value
    return metrics | decode_budget(metrics)


def comparison_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "configuration": label,
            "e2e_mean_s": metrics[f"{key}_e2e_mean_s"],
            "accuracy": metrics[f"accuracy_{key}"],
            "completion_tokens_mean": metrics[f"completion_tokens_mean_{key}"],
        }
        for label, key in (("baseline", "baseline"), ("optimised", "optimized"))
    ]


def write_outputs(
    params: Params,
    metrics: dict[str, Any],
    runs: dict[str, ConfigRun],
    decisions: dict[str, Any],
    described: dict[str, str],
) -> None:
    rounded = {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}
    write_json(
        paths.FINAL_RECORDS,
        {
            "configurations": {label: run.config.model_dump() for label, run in runs.items()},
            "records": {label: [r.to_dict() for r in run.records] for label, run in runs.items()},
        },
    )
    write_rows(paths.FINAL_COMPARISON, comparison_rows(rounded))
    write_text_atomic(paths.FINAL_REPORT, render_final_report(rounded, decisions, described))
    write_json(paths.FINAL_METRICS, rounded)  # last: it is what DVC and the README read


def print_summary(metrics: dict[str, Any], console: Console) -> None:
    console.print(
        f"[bold]final[/]: e2e {metrics['baseline_e2e_mean_s']:.3f}s -> "
        f"{metrics['optimized_e2e_mean_s']:.3f}s (ratio {metrics['latency_ratio']:.3f}, target "
        f"{metrics['latency_ratio_target']:.2f}); accuracy {metrics['accuracy_baseline']:.3f} -> "
        f"{metrics['accuracy_optimized']:.3f}; completion tokens ratio "
        f"{metrics['completion_tokens_ratio']:.3f}; "
        f"server peak {metrics['server_peak_rss_mb']:.0f} MB"
    )
    console.print(
        f"wrote {paths.FINAL_METRICS}, {paths.FINAL_RECORDS}, {paths.FINAL_COMPARISON}, "
        f"{paths.FINAL_REPORT}"
    )
    banner = failure_banner(metrics)
    if banner:
        print(banner, file=sys.stderr)
    else:
        console.print("[bold green]final: all success criteria met[/]")

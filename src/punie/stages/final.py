"""`punie-lab final`: the seed's configuration, each lever added alone, and all together.

The levers (`punie.measurement.levers`, params `final.levers`) are what the earlier stages
found or built: no thinking, the loop guard, the cheaper server path, the speculative draft,
the concise model. Every configuration runs the seed, template held-out and new-wording
queries through the production agent on its own server, alternating query by query
(`final.interleave`), so drift on a shared machine falls on all alike. Writes
metrics/final.json (`<figure>_<configuration>` keys, one boolean per success criterion of
`optimized`), the records, plot rows and reports/final.md. Unmet criteria and lost decisions
print a loud banner; the stage exits 0 so the report and metrics land.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console

from punie import paths
from punie.agent.queries import query_sets
from punie.errors import StageError
from punie.machine import machine_keys
from punie.measurement.benchmark import ConfigRun, measure_configs, record_printer
from punie.measurement.direct import direct_prompts, overhead_ratio, run_direct
from punie.measurement.levers import Optimizations, Setup, ablation
from punie.measurement.records import (
    accuracy_by_set,
    cut_off,
    lost_queries,
    paired,
    summarize,
    time_split,
)
from punie.measurement.spec_probe import ProbeError, ProbeRequest, probe_body, run_probe
from punie.measurement.timing import load_cases
from punie.params import Params, load_params
from punie.reports.final import failure_banner, final_metrics, render_final_report
from punie.results import read_object, round_floats, write_json, write_rows, write_text_atomic
from punie.serving.patching import check_patches
from punie.serving.preflight import fast_checks, load_tokenizer


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    pass


def run(name: str, args: argparse.Namespace) -> int:
    return run_final(load_params(), Console())


def concise_model(retrain: Mapping[str, Any]) -> str | None:
    """models/concise when the retrain stage kept a concise model, else None."""
    if not retrain.get("trained"):
        return None
    if not (paths.CONCISE_MODEL / "config.json").exists():
        raise StageError(
            f"{paths.RETRAIN_METRICS}: trained is true but {paths.CONCISE_MODEL} holds no model"
        )
    return str(paths.CONCISE_MODEL)


def speculative_pick(choice: Mapping[str, Any]) -> tuple[str | None, int | None]:
    """(draft, k) from metrics/speculative_choice.json; (None, None) when no draft pays."""
    draft = choice.get("draft")
    if not draft:
        return None, None
    k = choice.get("num_draft_tokens")
    if not isinstance(k, int) or k < 1:
        raise StageError(
            f"{paths.SPECULATIVE_CHOICE}: draft is {draft!r} but num_draft_tokens is {k!r}"
        )
    return str(draft), k


def optimizations(params: Params, retrain: Mapping[str, Any], choice: Mapping[str, Any]):
    """What the earlier stages decided, every model checked present (hub ids resolved from the
    local cache) and sharing the main model's tokenizer, in seconds, before any server."""
    concise = concise_model(retrain)
    draft, k = speculative_pick(choice)
    main_dir, draft_dir = fast_checks(params, draft=draft, use_draft=draft is not None)
    if concise:
        fast_checks(params, concise, draft, use_draft=draft is not None)
    concise_draft = (
        str(paths.CONCISE_DRAFT) if (paths.CONCISE_DRAFT / "config.json").exists() else None
    )
    tokenizer = load_tokenizer(main_dir)
    return Optimizations(
        main=str(main_dir),
        concise=concise,
        draft=str(draft_dir) if draft_dir else None,
        k=k,
        concise_draft=concise_draft if concise and draft else None,
        thinking_switch=bool(getattr(tokenizer, "has_thinking", False)),
    )


def run_final(params: Params, console: Console) -> int:
    f = params.final
    try:
        check_patches(f.server_patches)
    except ValueError as e:
        raise StageError(f"params final.server_patches: {e}") from None
    decisions = {
        "gate": read_object(paths.GATE),
        "retrain": read_object(paths.RETRAIN_METRICS),
        "speculative_choice": read_object(paths.SPECULATIVE_CHOICE),
    }
    o = optimizations(params, decisions["retrain"], decisions["speculative_choice"])
    setups, skipped = ablation(params, o)
    named = {str(Path(o.main)): params.models.main}  # the report names what params.yaml names
    described = {name: _named(s.describe(), named) for name, s in setups.items()}
    cases = load_cases(query_sets(params), params.queries.per_set)
    method = (
        "alternating query by query, every server up at once"
        if f.interleave
        else "one configuration after the other, one server at a time"
    )
    console.print(
        f"[bold]final[/]: {len(cases)} queries x {f.repeats} on {len(setups)} configurations "
        f"({', '.join(setups)}), {method}"
    )
    for lever, why in skipped.items():
        console.print(f"  {lever}: not measured, {why}")
    runs = asyncio.run(
        measure_configs(
            params,
            setups,
            cases,
            repeats=f.repeats,
            interleave=f.interleave,
            log_dir=paths.FINAL_LOGS,
            on_record=record_printer(console, max(map(len, setups))),
        )
    )
    figures = {name: configuration_figures(run, runs["baseline"]) for name, run in runs.items()}
    metrics = final_metrics(
        figures, latency_ratio_target=f.latency_ratio_target, memory_budget_mb=f.memory_budget_mb
    )
    for name in ("baseline", "server_path"):
        if name in runs:
            metrics[f"pipeline_overhead_ratio_{name}"] = pipeline_overhead(params, runs[name])
    opt = setups["optimized"]
    metrics["draft_acceptance_rate"] = (
        measure_acceptance(params, opt, runs["optimized"], console)
        if opt.config.draft_model and f.acceptance_prompts > 0
        else None
    )
    metrics |= machine_keys(params.runtime.blas)
    lost = {name: lost_queries(runs["baseline"].records, run.records) for name, run in runs.items()}
    report = render_final_report(round_floats(metrics), decisions, described, skipped, lost, method)
    write_outputs(metrics, runs, report)
    print_summary(metrics, console)
    return 0


def _named(text: str, names: Mapping[str, str]) -> str:
    for local, name in names.items():
        text = text.replace(f"`{local}`", f"`{name}`")
    return text


def configuration_figures(run: ConfigRun, baseline: ConfigRun) -> dict[str, Any]:
    """One configuration's figures (the names of `punie.reports.final.FIGURES`)."""
    records = run.records
    s = summarize(records)
    if s["e2e_mean_s"] is None:
        raise StageError(
            f"every query failed on configuration {run.label} ({s['n_errors']} errors); "
            f"see {paths.FINAL_LOGS}"
        )
    sets = {f"{name}_accuracy": acc for name, acc in accuracy_by_set(records).items()}
    pairs = paired(baseline.records, records)
    return {
        **s,
        **sets,
        **time_split(records),
        **cut_off(records),
        "decisions_lost": sum(b.correct and not r.correct for b, r in pairs),
        "grounded_lost": sum(bool(b.grounded) and r.grounded is False for b, r in pairs),
        "server_peak_rss_mb": run.peak_rss_mb,
        "errors": s["n_errors"],
    }


def pipeline_overhead(params: Params, run: ConfigRun) -> float | None:
    """Pipeline / direct: the configuration's model turns generated again in-process by
    mlx-lm (same prompts, same token counts), after every server has stopped."""
    if run.config.draft_model:
        return None  # the direct floor is single-model generation
    turns = direct_prompts(run.records)
    if not turns:
        return None
    with tempfile.TemporaryDirectory(prefix="punie-direct-") as tmp:
        rows = run_direct(
            run.config.model_path,
            turns,
            Path(tmp),
            blas=params.runtime.blas,
            chat_template_args=params.server.chat_template_args,
        )
    return overhead_ratio(rows)


def measure_acceptance(params: Params, setup: Setup, run: ConfigRun, console: Console) -> float:
    """Draft acceptance on the optimized model's own recorded prompts, replayed in-process."""
    config = setup.config
    assert config.draft_model is not None and config.num_draft_tokens is not None
    k = config.num_draft_tokens
    bodies = [b for r in run.records for b in r.requests if b is not None]
    bodies = bodies[: params.final.acceptance_prompts]
    if not bodies:
        raise StageError("no recorded optimized requests to measure draft acceptance on")
    console.print(f"[bold]final[/]: draft acceptance on {len(bodies)} recorded prompts, k = {k}")
    request = ProbeRequest(
        main=config.model_path,
        draft=config.draft_model,
        bodies=[probe_body(b) for b in bodies],
        ks=[k],
        max_tokens=params.server.max_tokens,
        chat_template_args={**params.server.chat_template_args, **_template_kwargs(setup)},
        verify_reps=5,
    )
    try:
        result = run_probe(request, paths.FINAL_LOGS / "acceptance", blas=params.runtime.blas)
    except ProbeError as e:
        raise StageError(f"draft acceptance probe failed: {e}") from None
    return float(result["by_k"][str(k)]["acceptance_rate"])


def _template_kwargs(setup: Setup) -> dict[str, Any]:
    return dict(setup.request.get("chat_template_kwargs") or {})


def plot_rows(metrics: Mapping[str, Any], runs: Mapping[str, ConfigRun]) -> dict[Path, list]:
    """The final stage's plots: latency per configuration (bars), its split into parts
    (stacked), and every query's latency on the baseline and the optimized configuration."""
    names = list(runs)
    parts = ("first_token_s", "after_first_token_s", "outside_model_s")
    per_query: list[dict[str, Any]] = []
    for name in ("baseline", "optimized"):
        per_query += [
            {"query": r.label, "configuration": name, "seconds": round(r.total_s, 4)}
            for r in runs[name].records
            if r.error is None
        ]
    return {
        paths.FINAL_COMPARISON: [
            {"configuration": n, "e2e_mean_s": metrics[f"e2e_mean_s_{n}"]} for n in names
        ],
        paths.FINAL_ABLATION: [
            {"configuration": n, "component": p.removesuffix("_s"), "seconds": metrics[f"{p}_{n}"]}
            for n in names
            for p in parts
        ],
        paths.FINAL_PER_QUERY: per_query,
    }


def configuration_json(setup: Setup) -> dict[str, Any]:
    """How a configuration ran: its server's settings, patches, request fields, loop guard."""
    return {
        **setup.config.model_dump(),
        "patches": list(setup.patches),
        "request": dict(setup.request),
        "loop_guard_words": setup.loop_guard_words,
    }


def write_outputs(metrics: dict[str, Any], runs: Mapping[str, ConfigRun], report: str) -> None:
    rounded = round_floats(metrics)
    write_json(
        paths.FINAL_RECORDS,
        {
            "configurations": {n: configuration_json(run.setup) for n, run in runs.items()},
            "records": {n: [r.to_dict() for r in run.records] for n, run in runs.items()},
        },
    )
    for path, rows in plot_rows(rounded, runs).items():
        write_rows(path, rows)
    write_text_atomic(paths.FINAL_REPORT, report)
    write_json(paths.FINAL_METRICS, rounded)  # last: it is what DVC and the README read


def print_summary(metrics: Mapping[str, Any], console: Console) -> None:
    console.print(
        f"[bold]final[/]: e2e {metrics['e2e_mean_s_baseline']:.3f}s -> "
        f"{metrics['e2e_mean_s_optimized']:.3f}s (ratio {metrics['latency_ratio_optimized']:.3f}"
        f", target {metrics['latency_ratio_target']:.2f}); accuracy "
        f"{metrics['accuracy_baseline']:.3f} -> {metrics['accuracy_optimized']:.3f}; server "
        f"peak {metrics['server_peak_rss_mb_optimized']:.0f} MB"
    )
    console.print(f"wrote {paths.FINAL_METRICS}, {paths.FINAL_REPORT} and the plot rows")
    banner = failure_banner(metrics)
    if banner:
        print(banner, file=sys.stderr)
    else:
        console.print("[bold green]final: all success criteria met, no decision lost[/]")

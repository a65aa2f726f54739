"""`punie-lab retrain`: LoRA-train the main model for conciseness, only when the gate says so.

One LoRA run (mlx-lm's trainer, punie.models.train_worker) to the largest of
`conciseness.lora.iters` saves a checkpoint at each candidate (its loss curve goes to
metrics/retrain_loss.json); `mlx_lm fuse` turns each into a model, and the main model and every
candidate answer the seed and held-out queries through the real server and agent. The candidate
with the fewest completion tokens that loses no accuracy becomes models/concise; when all lose
some, they are discarded loudly (or the stage fails) and a marker says the main model stands, as
it does when the gate says no.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from punie import paths
from punie.agent.queries import query_sets
from punie.errors import StageError
from punie.machine import machine_keys
from punie.measurement.benchmark import measure_configs, record_printer
from punie.measurement.levers import server_config
from punie.measurement.records import (
    accuracy_by_set,
    answer_of,
    cut_off,
    lost_queries,
    paired,
    summarize,
)
from punie.measurement.timing import load_cases
from punie.models.conciseness import (
    GateDecision,
    accuracy_regressions,
    candidate_faults,
    checkpoint_name,
    choose_candidate,
    fuse_command,
    longest_example,
    lora_request,
    read_gate,
)
from punie.models.train_worker import Report, TrainRequest, loss_rows, run_training
from punie.params import load_params
from punie.results import write_json
from punie.serving.preflight import TokenizerMismatch, check_draft_tokenizer, local_models
from punie.serving.runtime import run_mlx

if TYPE_CHECKING:
    from punie.measurement.benchmark import ConfigRun
    from punie.measurement.timing import Case
    from punie.params import Params

MAIN_STANDS = "MAIN_MODEL_STANDS.json"


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    paths.add_path_option(parser, "--out", paths.CONCISE_MODEL, "fused model", "DIR")


def run(name: str, args: argparse.Namespace) -> int:
    return run_retrain(load_params(), read_gate(), args.out, Console())


def run_retrain(params: Params, gate: GateDecision, out: Path, console: Console) -> int:
    if out.exists():
        shutil.rmtree(out)
    if not gate.retrain:
        out.mkdir(parents=True)
        marker = {"trained": False, "model": params.models.main, "reason": f"gate: {gate.reason}"}
        write_json(out / MAIN_STANDS, marker)
        write_metrics(params, {"trained": False, "reason": f"gate: {gate.reason}"})
        write_json(paths.RETRAIN_LOSS, [])  # no training, no curve
        console.print(f"[bold]retrain[/]: skipped, the main model stands ({gate.reason})")
        return 0
    data = paths.CONCISE_DATA
    if not (data / "train.jsonl").exists():
        raise StageError(
            f"{data}/train.jsonl: missing although the gate says retrain "
            f"(run `punie-lab concise-data`)"
        )
    # In seconds, before minutes of training: the main model present (a hub id resolved from
    # the local cache, punie.serving.hub); LoRA, fuse and the servers load that directory.
    params = local_models(params)
    paths.RETRAIN_LOGS.mkdir(parents=True, exist_ok=True)
    adapters = paths.RETRAIN_LOGS / "adapters"
    train_lora(params, data, adapters, console)
    fused = fuse_candidates(params, adapters, console)
    try:
        choose_and_record(params, fused, out, console)
    finally:  # the kept candidate has moved to `out`; the others are not needed
        shutil.rmtree(paths.RETRAIN_LOGS / "fused", ignore_errors=True)
    return 0


def _model_layers(model: str) -> int | None:
    """num_hidden_layers of a local model directory (None for a hub name: mlx-lm checks)."""
    try:
        config = json.loads((Path(model) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    layers = config.get("num_hidden_layers")
    return layers if isinstance(layers, int) else None


def train_lora(params: Params, data: Path, adapters: Path, console: Console) -> None:
    lora = params.conciseness.lora
    layers = _model_layers(params.models.main)
    if layers is not None and lora.num_layers > layers:
        raise StageError(
            f"conciseness.lora.num_layers: {lora.num_layers} but {params.models.main} has "
            f"{layers} layers; use at most {layers} (or -1 for all)"
        )
    try:
        longest = longest_example(params.models.main, [data / "train.jsonl", data / "valid.jsonl"])
    except ValueError as e:
        raise StageError(f"cannot tokenize {data}: {e}") from None
    if longest > lora.max_seq_length:
        raise StageError(
            f"conciseness.lora.max_seq_length: {lora.max_seq_length} is shorter than the longest "
            f"concise example ({longest} tokens); raise it to at least {longest}"
        )
    if adapters.exists():
        shutil.rmtree(adapters)
    iters = max(lora.iters)
    fields = lora_request(
        params.models.main,
        data,
        adapters,
        paths.RETRAIN_LOGS / "lora.jsonl",
        iters=iters,
        rank=lora.rank,
        learning_rate=lora.learning_rate,
        num_layers=lora.num_layers,
        batch_size=lora.batch_size,
        seed=params.runtime.seed,
        max_seq_length=lora.max_seq_length,
        save_every=math.gcd(*lora.iters),
    )
    console.print(
        f"[bold]retrain[/]: LoRA rank {lora.rank} on {params.models.main}, {iters} iters, "
        f"candidates at {', '.join(map(str, lora.iters))}"
    )
    interactive = console.is_terminal
    log_path = paths.RETRAIN_LOGS / "lora.log"
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not interactive,
    ) as progress:
        task = progress.add_task("lora", total=iters)

        def on_report(report: Report) -> None:
            what = "val loss" if report.split == "val" else "loss"
            progress.update(
                task, completed=report.iteration, description=f"lora {what} {report.loss:.3f}"
            )
            if not interactive:  # DVC or CI log: one plain line per report
                console.print(f"  iter {report.iteration}/{iters} {what} {report.loss:.3f}")

        log = run_training(
            TrainRequest(**fields),
            paths.RETRAIN_LOGS / "lora_request.json",
            label=f"conciseness LoRA of {params.models.main}",
            blas=params.runtime.blas,
            log_path=log_path,
            on_report=on_report,
        )
    write_json(paths.RETRAIN_LOSS, loss_rows(log, "run", run_name(params)))
    if not log.train:
        raise StageError(f"LoRA training reported no loss (see {log_path})")
    missing = [n for n in lora.iters if not (adapters / checkpoint_name(n)).exists()]
    if missing or not (adapters / "adapter_config.json").exists():
        raise StageError(
            f"{adapters}: LoRA training finished without the checkpoints of iterations {missing} "
            f"(see {log_path})"
        )


def write_metrics(params: Params, metrics: dict[str, Any]) -> None:
    """metrics/retrain.json, with the machine it was measured on."""
    write_json(paths.RETRAIN_METRICS, {**metrics, **machine_keys(params.runtime.blas)})


def run_name(params: Params) -> str:
    """The LoRA run's name in metrics/retrain_loss.json: the candidates are its checkpoints."""
    lora = params.conciseness.lora
    layers = "all layers" if lora.num_layers == -1 else f"top {lora.num_layers} layers"
    return (
        f"lora rank {lora.rank}, lr {lora.learning_rate:g}, {layers}, "
        f"candidates {', '.join(map(str, lora.iters))}"
    )


def adapter_dir(n: int) -> Path:
    """The adapters of candidate `n` as `mlx_lm fuse` and `--adapter-path` read them."""
    return paths.RETRAIN_LOGS / "candidates" / f"i{n}"


def fuse_candidates(params: Params, adapters: Path, console: Console) -> dict[int, Path]:
    """Each candidate's checkpoint fused into the main model, under logs/retrain/fused/i<n>."""

    fused: dict[int, Path] = {}
    for root in (paths.RETRAIN_LOGS / "candidates", paths.RETRAIN_LOGS / "fused"):
        shutil.rmtree(root, ignore_errors=True)
    for n in params.conciseness.lora.iters:
        one = adapter_dir(n)  # `mlx_lm fuse` reads adapters.safetensors
        one.mkdir(parents=True)
        shutil.copy(adapters / "adapter_config.json", one)
        shutil.copy(adapters / checkpoint_name(n), one / "adapters.safetensors")
        out = paths.RETRAIN_LOGS / "fused" / f"i{n}"
        console.print(f"[bold]retrain[/]: fusing the adapters of iteration {n} into {out}")
        run_mlx(
            fuse_command(params.models.main, one, out),
            blas=params.runtime.blas,
            log_path=paths.RETRAIN_LOGS / f"fuse_i{n}.log",
        )
        if not (out / "config.json").exists():
            raise StageError(
                f"{out}: mlx_lm fuse did not write a model (see {paths.RETRAIN_LOGS}/fuse_i{n}.log)"
            )
        try:  # the draft serves the concise model next: it must keep the main model's vocabulary
            check_draft_tokenizer(params.models.main, str(out))
        except TokenizerMismatch as e:
            raise StageError(f"{out}: fused model changed the tokenizer: {e}") from None
        fused[n] = out
    return fused


def choose_and_record(
    params: Params, fused: dict[int, Path], out: Path, console: Console
) -> dict[str, Any]:
    """Main vs every candidate through the real agent on seed + held-out; keep the candidate
    with the fewest completion tokens that loses no accuracy as `out`, or discard them all."""

    cases = load_cases(query_sets(params), params.queries.per_set)
    configs = {"main": server_config(params, params.models.main)}
    configs |= {f"i{n}": server_config(params, str(path)) for n, path in fused.items()}
    console.print(
        f"[bold]retrain[/]: accuracy check, {len(cases)} queries on the main model and on "
        f"each candidate ({', '.join(configs)}), "
        f"{params.conciseness.parallel_servers} server(s) at a time"
    )

    runs = asyncio.run(
        measure_configs(
            params,
            configs,
            cases,
            repeats=1,
            interleave=False,
            log_dir=paths.RETRAIN_LOGS,
            on_record=record_printer(console, 7),
            concurrent=params.conciseness.parallel_servers,
        )
    )
    records = {label: [r.to_dict() for r in run.records] for label, run in runs.items()}
    write_json(paths.RETRAIN_LOGS / "records.json", records)  # what each model answered, for review
    by_n = {n: retrain_metrics(runs["main"], runs[f"i{n}"]) for n in fused}
    main_cut = cut_off(runs["main"].records)["cut_off_turns"]
    for n, m in by_n.items():
        faults = "; ".join(candidate_faults(m))
        lost = lost_queries(runs["main"].records, runs[f"i{n}"].records)
        cut = cut_off(runs[f"i{n}"].records)["cut_off_turns"]
        console.print(
            f"  iters {n:>4}: accuracy {m['accuracy_concise']:.3f}, grounded answers "
            f"{_share(m['grounded_share_concise'])}, completion tokens "
            f"{m['completion_tokens_mean_concise']:.1f} (main {m['accuracy_main']:.3f}, "
            f"{_share(m['grounded_share_main'])}, {m['completion_tokens_mean_main']:.1f}), "
            f"turns cut off at max_tokens {cut} (main {main_cut})"
            + (f", REJECTED {faults}" if faults else "")
            + (f"; decided wrong: {', '.join(lost)}" if lost else "")
        )
    chosen = choose_candidate(by_n)
    # The candidate that would ship is checked against what it was trained to be: fusing
    # (requantizing a quantized model) must not change a greedy token. The original Punie
    # shipped a fused 5-bit model that had stopped calling tools.
    while chosen is not None and (differ := fuse_changes(params, chosen, runs, cases, console)):
        by_n[chosen] |= {"fused_mismatches": len(differ)}
        console.print(
            f"[bold red]retrain: REJECTED iteration {chosen}: the fused model answers "
            f"{len(differ)} queries differently from the main model + its adapter "
            f"(--adapter-path): {'; '.join(differ[:3])}[/]"
        )
        chosen = choose_candidate(by_n)
    sweep = {f"i{n}_{key}": m[f"{key}_concise"] for n, m in by_n.items() for key in SWEPT}
    if chosen is None:
        return _discard(params, by_n, sweep, out, console)
    shutil.move(fused[chosen], out)
    metrics = {**by_n[chosen], "fused_mismatches": 0, "lora_iters": chosen, **sweep}
    write_metrics(params, metrics)
    tokens = metrics["completion_tokens_mean_main"], metrics["completion_tokens_mean_concise"]
    console.print(
        f"[bold green]retrain[/]: kept iteration {chosen}: accuracy kept "
        f"({metrics['accuracy_main']:.3f} -> {metrics['accuracy_concise']:.3f}); completion "
        f"tokens {tokens[0]:.1f} -> {tokens[1]:.1f}"
    )
    return metrics


def fuse_changes(
    params: Params,
    n: int,
    runs: Mapping[str, ConfigRun],
    cases: Sequence[Case],
    console: Console,
) -> list[str]:
    """The queries whose answer differs between fused candidate `n` and the main model served
    with that candidate's adapter (`--adapter-path`), at temperature 0; [] when all match."""
    console.print(f"[bold]retrain[/]: iteration {n}: fused model vs main model + adapter")
    config = server_config(params, params.models.main).model_copy(
        update={"adapter_path": str(adapter_dir(n))}
    )
    adapter = asyncio.run(
        measure_configs(
            params,
            {f"a{n}": config},
            cases,
            repeats=1,
            interleave=False,
            log_dir=paths.RETRAIN_LOGS,
            on_record=record_printer(console, 7),
        )
    )[f"a{n}"]
    return [
        f"{a.query!r}" for f, a in paired(runs[f"i{n}"].records, adapter.records)
        if answer_of(f) != answer_of(a)
    ]  # fmt: skip


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


# Per-candidate figures in metrics/retrain.json (i20_heldout_accuracy, ...).
SWEPT = (
    "accuracy",
    "seed_accuracy",
    "heldout_accuracy",
    "wording_accuracy",
    "grounded_share",
    "completion_tokens_mean",
)


def _discard(
    params: Params,
    by_n: dict[int, dict[str, Any]],
    sweep: dict[str, Any],
    out: Path,
    console: Console,
) -> dict[str, Any]:
    """No candidate may replace the main model. When every one lost accuracy: fail, or
    (keep_main) leave a marker that the main model stands, so the regressed models are never
    benchmarked as "optimised"; when those that kept it answered no shorter, the marker only."""

    faults = [f"iters {n}: {r}" for n, m in by_n.items() for r in candidate_faults(m)]
    regression = all(accuracy_regressions(m) for m in by_n.values())
    if regression:
        message = (
            f"ACCURACY REGRESSION: every concise candidate is less accurate than the main model "
            f"({'; '.join(faults)}). None may replace the main model; see {paths.RETRAIN_METRICS} "
            "and try fewer conciseness.lora.iters or a lower learning_rate, or set "
            "conciseness.force: false."
        )
        reason = "retrained model lost accuracy; discarded"
    else:
        message = (
            f"no concise candidate kept the main model's accuracy with shorter answers "
            f"({'; '.join(faults)}); see {paths.RETRAIN_METRICS} and try more "
            "conciseness.lora.iters."
        )
        reason = "no candidate answered shorter without losing accuracy; discarded"
    fewest = min(by_n)  # the least changed candidate stands for the sweep in the flat keys
    metrics = {**by_n[fewest], "lora_iters": fewest, **sweep}
    if regression and params.conciseness.on_regression == "fail":
        write_metrics(params, metrics)
        raise StageError(message)
    out.mkdir(parents=True)
    marker = {"trained": False, "model": params.models.main, "reason": reason}
    write_json(out / MAIN_STANDS, {**marker, "regressions": faults})
    metrics = {**metrics, "trained": False, "regression": regression, "reason": reason}
    write_metrics(params, metrics)
    style = "bold red" if regression else "bold yellow"
    console.print(f"[{style}]{message}[/]\n[{style}]retrain: the main model stands[/]")
    print(f"punie-lab retrain: WARNING: {message} The main model stands.", file=sys.stderr)
    return metrics


def retrain_metrics(main: ConfigRun, concise: ConfigRun) -> dict[str, Any]:
    out: dict[str, Any] = {"trained": True}
    for label, run in (("main", main), ("concise", concise)):
        s = summarize(run.records)
        out[f"accuracy_{label}"] = s["accuracy"]
        for set_name, acc in accuracy_by_set(run.records).items():
            out[f"{set_name}_accuracy_{label}"] = acc
        out[f"completion_tokens_mean_{label}"] = s["completion_tokens_mean"]
        out[f"grounded_share_{label}"] = s["grounded_share"]
        out[f"errors_{label}"] = s["n_errors"]
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}

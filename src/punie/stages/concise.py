"""`punie-lab gate`, `concise-data` and `retrain`: conciseness training when generation dominates.

gate          metrics/profile.json + params -> metrics/gate.json (decision and reason only)
concise-data  gate says retrain -> data/concise/{train,valid}.jsonl (short answers, tool calls
              without preamble, rendered from the agent's own requests); else a skipped marker
retrain       gate says retrain -> LoRA on the main model, fuse into models/concise, then check
              its accuracy against the main model's through the real agent; else a marker that
              the main model stands
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from punie.conciseness import GATE_FILE, GateDecision, decide_gate, gate_from_json
from punie.errors import StageError

if TYPE_CHECKING:
    from rich.console import Console

    from punie.benchmark import ConfigRun
    from punie.params import Params

PROFILE_FILE = Path("metrics/profile.json")
CONCISE_DIR = Path("data/concise")
SKIPPED = "skipped.json"
CONCISE_MODEL = Path("models/concise")
MAIN_STANDS = "MAIN_MODEL_STANDS.json"
RETRAIN_METRICS = Path("metrics/retrain.json")
RETRAIN_LOGS = Path("logs/retrain")
# Held back for validation, per kind, as a share of the training sizes in params.
VALID_SHARE = 0.15


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "gate":
        parser.add_argument("--profile", type=Path, default=PROFILE_FILE, help="profile metrics")
        parser.add_argument("--out", type=Path, default=GATE_FILE, help="gate decision file")
    elif name == "concise-data":
        parser.add_argument("--out", type=Path, default=CONCISE_DIR, help="output directory")
    elif name == "retrain":
        parser.add_argument("--out", type=Path, default=CONCISE_MODEL, help="fused model dir")


def run(name: str, args: argparse.Namespace) -> int:
    from rich.console import Console

    from punie.params import load_params

    params = load_params()
    console = Console()
    if name == "gate":
        return run_gate(params, args.profile, args.out, console)
    if name == "concise-data":
        return run_concise_data(params, read_gate(), args.out, console)
    if name == "retrain":
        return run_retrain(params, read_gate(), args.out, console)
    raise StageError(f"unknown subcommand {name!r} for punie.stages.concise")


# --- gate -------------------------------------------------------------------------------


def run_gate(params: Params, profile: Path, out: Path, console: Console) -> int:
    from punie.results import write_json

    c = params.conciseness
    share = None
    if c.force is None:
        share = _read_share(profile)
    try:
        decision = decide_gate(share, c.generation_share_threshold, c.force)
    except ValueError as e:
        raise StageError(f"{profile}: {e}") from None
    write_json(out, decision.to_json())
    shown = f" (measured share {share:.3f})" if share is not None else ""
    console.print(f"[bold]gate[/]: retrain={decision.retrain}: {decision.reason}{shown}")
    return 0


def _read_share(profile: Path) -> float:
    try:
        data = json.loads(profile.read_text())
    except FileNotFoundError:
        raise StageError(f"{profile}: not found (run `punie-lab profile` first)") from None
    except ValueError as e:
        raise StageError(f"{profile}: not valid JSON: {e}") from None
    share = data.get("generation_share") if isinstance(data, dict) else None
    if not isinstance(share, (int, float)) or isinstance(share, bool):
        raise StageError(f"{profile}: generation_share: expected a number, got {share!r}")
    return float(share)


def read_gate(path: Path = GATE_FILE) -> GateDecision:
    try:
        return gate_from_json(json.loads(path.read_text()), path)
    except FileNotFoundError:
        raise StageError(f"{path}: not found (run `punie-lab gate` first)") from None
    except ValueError as e:
        raise StageError(str(e)) from None


# --- concise data -------------------------------------------------------------------------


def valid_size(train_size: int) -> int:
    return max(1, math.ceil(train_size * VALID_SHARE))


def build_concise_groups(params: Params, seed: int) -> list[dict[str, Any]]:
    """One group per query: its kind and its rendered rows (1 direct, or tool call + answer).

    Queries of the seed and held-out sets are excluded, so the accuracy check and the final
    benchmark never see a training query.
    """
    from punie.corpus import Spec, make_specs, render_all, workspace_facts
    from punie.queries import QueryFileError, default_query_paths, load_queries
    from punie.tools import Workspace

    c = params.conciseness
    root = Path(params.agent.workspace)
    ws = Workspace(root, params.agent.tool_timeout_s, params.agent.tool_output_cap)
    try:
        exclude = [q.query for p in default_query_paths(params) for q in load_queries(p)]
    except QueryFileError as e:
        raise StageError(str(e)) from None
    facts = workspace_facts(root)
    n_tool = c.tool_examples + valid_size(c.tool_examples)
    n_direct = c.direct_examples + valid_size(c.direct_examples)
    tool_specs = make_specs(n_tool, facts, seed, exclude, tool_share=1.0, concise=True)
    direct_specs = make_specs(n_direct, facts, seed + 1, exclude, tool_share=0.0, concise=True)
    specs: list[Spec] = [*tool_specs, *direct_specs]
    rendered = [
        with_opener(rows, c.openers, random.Random(f"{seed}:{s.query}"))
        for s, rows in zip(specs, render_all(specs, ws, seed, concise=True), strict=True)
    ]
    return [
        {"kind": "direct" if s.tool is None else "tool", "query": s.query, "rows": json.dumps(rows)}
        for s, rows in zip(specs, rendered, strict=True)
    ]


def with_opener(
    rows: list[dict[str, Any]], openers: str, rng: random.Random
) -> list[dict[str, Any]]:
    """`rows` with the verbose style's opener before each text answer that `openers` names:
    "direct" (direct answers) or "all" (also answers written from a tool's output)."""
    from punie.corpus_text import DIRECT_OPENERS, TOOL_OPENERS

    keep = {"none": (), "direct": ("direct",), "all": ("direct", "tool_answer")}[openers]
    out = []
    for row in rows:
        if row["kind"] in keep:
            pool = DIRECT_OPENERS if row["kind"] == "direct" else TOOL_OPENERS
            answer = row["messages"][-1]
            row = {
                **row,
                "messages": [
                    *row["messages"][:-1],
                    {**answer, "content": f"{rng.choice(pool)} {answer['content']}"},
                ],
            }
        out.append(row)
    return out


def split_groups(
    groups: list[dict[str, Any]], n_valid: dict[str, int], seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Stratified train/valid split by query with `datasets` (a query's turns stay together)."""
    import datasets

    datasets.disable_progress_bars()
    parts: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for kind, k in n_valid.items():
        ds = datasets.Dataset.from_list([g for g in groups if g["kind"] == kind])
        split = ds.train_test_split(test_size=k, seed=seed, shuffle=True)
        parts[kind] = (list(split["train"]), list(split["test"]))
    train = datasets.Dataset.from_list([g for t, _ in parts.values() for g in t])
    valid = datasets.Dataset.from_list([g for _, v in parts.values() for g in v])
    return list(train.shuffle(seed=seed)), list(valid.shuffle(seed=seed))


def _rows(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for g in groups for row in json.loads(g["rows"])]


def run_concise_data(params: Params, gate: GateDecision, out: Path, console: Console) -> int:
    from punie.corpus import to_jsonl
    from punie.results import write_json, write_text_atomic

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    if not gate.retrain:
        write_json(out / SKIPPED, {"skipped": True, "reason": f"gate: {gate.reason}"})
        console.print(f"[bold]concise-data[/]: skipped ({gate.reason})")
        return 0
    c = params.conciseness
    seed = params.runtime.seed
    groups = build_concise_groups(params, seed)
    n_valid = {"tool": valid_size(c.tool_examples), "direct": valid_size(c.direct_examples)}
    train, valid = split_groups(groups, n_valid, seed)
    train_rows, valid_rows = _rows(train), _rows(valid)
    write_text_atomic(out / "train.jsonl", to_jsonl(train_rows))
    write_text_atomic(out / "valid.jsonl", to_jsonl(valid_rows))
    info = {
        "train_queries": {k: sum(g["kind"] == k for g in train) for k in ("tool", "direct")},
        "valid_queries": {k: sum(g["kind"] == k for g in valid) for k in ("tool", "direct")},
        "train_rows": len(train_rows),
        "valid_rows": len(valid_rows),
        "rows_by_kind": {
            k: sum(r["kind"] == k for r in train_rows)
            for k in ("tool_call", "tool_answer", "direct")
        },
        "answer_chars_mean": _answer_chars(train_rows),
    }
    write_json(out / "info.json", info)
    console.print(
        f"[bold]concise-data[/]: {len(train_rows)} train rows "
        f"({info['train_queries']['tool']} tool + {info['train_queries']['direct']} direct "
        f"queries), {len(valid_rows)} valid rows -> {out}"
    )
    return 0


def _answer_chars(rows: list[dict[str, Any]]) -> float:
    texts = [r["messages"][-1].get("content") or "" for r in rows if r["kind"] != "tool_call"]
    return round(sum(map(len, texts)) / len(texts), 1) if texts else 0.0


# --- retrain ------------------------------------------------------------------------------


def run_retrain(params: Params, gate: GateDecision, out: Path, console: Console) -> int:
    from punie.results import write_json

    if out.exists():
        shutil.rmtree(out)
    if not gate.retrain:
        out.mkdir(parents=True)
        marker = {"trained": False, "model": params.models.main, "reason": f"gate: {gate.reason}"}
        write_json(out / MAIN_STANDS, marker)
        write_json(RETRAIN_METRICS, {"trained": False, "reason": f"gate: {gate.reason}"})
        console.print(f"[bold]retrain[/]: skipped, the main model stands ({gate.reason})")
        return 0
    data = CONCISE_DIR
    if not (data / "train.jsonl").exists():
        raise StageError(
            f"{data}/train.jsonl: missing although the gate says retrain "
            f"(run `punie-lab concise-data`)"
        )
    RETRAIN_LOGS.mkdir(parents=True, exist_ok=True)
    adapters = RETRAIN_LOGS / "adapters"
    train_lora(params, data, adapters, console)
    fused = fuse_candidates(params, adapters, console)
    try:
        choose_and_record(params, fused, out, console)
    finally:  # the kept candidate has moved to `out`; the others are not needed
        shutil.rmtree(RETRAIN_LOGS / "fused", ignore_errors=True)
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
    import yaml
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from punie.conciseness import longest_example, lora_command, parse_lora_line
    from punie.mlx_runtime import run_mlx

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
    args, config = lora_command(
        params.models.main,
        data,
        adapters,
        iters=iters,
        rank=lora.rank,
        learning_rate=lora.learning_rate,
        num_layers=lora.num_layers,
        batch_size=lora.batch_size,
        seed=params.runtime.seed,
        max_seq_length=lora.max_seq_length,
        save_every=math.gcd(*lora.iters),
    )
    config_path = RETRAIN_LOGS / "lora_config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    args += ["--config", str(config_path)]
    console.print(
        f"[bold]retrain[/]: LoRA rank {lora.rank} on {params.models.main}, {iters} iters, "
        f"candidates at {', '.join(map(str, lora.iters))}"
    )
    interactive = console.is_terminal
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not interactive,
    ) as progress:
        task = progress.add_task("lora", total=iters)
        losses: list[float] = []

        def on_line(line: str) -> None:
            step = parse_lora_line(line)
            if step is None:
                return
            if not step.validation:
                losses.append(step.loss)
            what = "val loss" if step.validation else "loss"
            progress.update(
                task, completed=step.iteration, description=f"lora {what} {step.loss:.3f}"
            )
            if not interactive:  # DVC or CI log: one plain line per report
                console.print(f"  iter {step.iteration}/{iters} {what} {step.loss:.3f}")

        run_mlx(args, blas=params.runtime.blas, log_path=RETRAIN_LOGS / "lora.log", on_line=on_line)
    if not losses or not math.isfinite(losses[-1]):
        raise StageError(
            f"LoRA training loss is {losses[-1] if losses else 'missing'} (see "
            f"{RETRAIN_LOGS / 'lora.log'}); lower conciseness.lora.learning_rate"
        )
    from punie.conciseness import checkpoint_name

    missing = [n for n in lora.iters if not (adapters / checkpoint_name(n)).exists()]
    if missing or not (adapters / "adapter_config.json").exists():
        raise StageError(
            f"{adapters}: mlx_lm lora finished without the checkpoints of iterations {missing} "
            f"(see {RETRAIN_LOGS / 'lora.log'})"
        )


def fuse_candidates(params: Params, adapters: Path, console: Console) -> dict[int, Path]:
    """Each candidate's checkpoint fused into the main model, under logs/retrain/fused/i<n>."""
    from punie.conciseness import checkpoint_name, fuse_command
    from punie.mlx_runtime import run_mlx
    from punie.speculative import TokenizerMismatch, check_draft_tokenizer

    fused: dict[int, Path] = {}
    for root in (RETRAIN_LOGS / "candidates", RETRAIN_LOGS / "fused"):
        shutil.rmtree(root, ignore_errors=True)
    for n in params.conciseness.lora.iters:
        one = RETRAIN_LOGS / "candidates" / f"i{n}"  # `mlx_lm fuse` reads adapters.safetensors
        one.mkdir(parents=True)
        shutil.copy(adapters / "adapter_config.json", one)
        shutil.copy(adapters / checkpoint_name(n), one / "adapters.safetensors")
        out = RETRAIN_LOGS / "fused" / f"i{n}"
        console.print(f"[bold]retrain[/]: fusing the adapters of iteration {n} into {out}")
        run_mlx(
            fuse_command(params.models.main, one, out),
            blas=params.runtime.blas,
            log_path=RETRAIN_LOGS / f"fuse_i{n}.log",
        )
        if not (out / "config.json").exists():
            raise StageError(
                f"{out}: mlx_lm fuse did not write a model (see {RETRAIN_LOGS}/fuse_i{n}.log)"
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
    import asyncio

    from punie.benchmark import measure_configs, server_config
    from punie.conciseness import accuracy_regressions, choose_candidate
    from punie.measure import load_cases
    from punie.queries import default_query_paths
    from punie.results import write_json

    cases = load_cases(default_query_paths(params), ["seed", "heldout"])
    configs = {"main": server_config(params, params.models.main)}
    configs |= {f"i{n}": server_config(params, str(path)) for n, path in fused.items()}
    console.print(
        f"[bold]retrain[/]: accuracy check, {len(cases)} queries on the main model, then on "
        f"each candidate ({', '.join(configs)})"
    )

    def show(label: str, r: Any) -> None:
        mark = "ok" if r.correct else ("ERROR " + r.error[:60] if r.error else "WRONG")
        console.print(
            f"  {label:<7} {r.label:<11} {r.total_s:5.2f}s {r.completion_tokens:4d} tok {mark}"
        )

    runs = asyncio.run(
        measure_configs(
            params,
            configs,
            cases,
            repeats=1,
            interleave=False,
            log_dir=RETRAIN_LOGS,
            on_record=show,
        )
    )
    records = {label: [r.to_dict() for r in run.records] for label, run in runs.items()}
    write_json(RETRAIN_LOGS / "records.json", records)  # what each model answered, for review
    by_n = {n: retrain_metrics(runs["main"], runs[f"i{n}"]) for n in fused}
    for n, m in by_n.items():
        lost = "; ".join(accuracy_regressions(m))
        console.print(
            f"  iters {n:>4}: accuracy {m['accuracy_concise']:.3f}, completion tokens "
            f"{m['completion_tokens_mean_concise']:.1f} (main {m['accuracy_main']:.3f}, "
            f"{m['completion_tokens_mean_main']:.1f})" + (f", LOST {lost}" if lost else "")
        )
    chosen = choose_candidate(by_n)
    sweep = {f"i{n}_{key}": m[f"{key}_concise"] for n, m in by_n.items() for key in SWEPT}
    if chosen is None:
        return _discard(params, by_n, sweep, out, console)
    shutil.move(fused[chosen], out)
    metrics = {**by_n[chosen], "lora_iters": chosen, **sweep}
    write_json(RETRAIN_METRICS, metrics)
    tokens = metrics["completion_tokens_mean_main"], metrics["completion_tokens_mean_concise"]
    console.print(
        f"[bold green]retrain[/]: kept iteration {chosen}: accuracy kept "
        f"({metrics['accuracy_main']:.3f} -> {metrics['accuracy_concise']:.3f}); completion "
        f"tokens {tokens[0]:.1f} -> {tokens[1]:.1f}"
    )
    return metrics


# Per-candidate figures in metrics/retrain.json (i20_heldout_accuracy, ...).
SWEPT = ("accuracy", "seed_accuracy", "heldout_accuracy", "completion_tokens_mean")


def _discard(
    params: Params,
    by_n: dict[int, dict[str, Any]],
    sweep: dict[str, Any],
    out: Path,
    console: Console,
) -> dict[str, Any]:
    """Every candidate lost accuracy: fail, or (keep_main) leave a marker that the main model
    stands, so the regressed models are never benchmarked as "optimised"."""
    from punie.conciseness import accuracy_regressions
    from punie.results import write_json

    lost = "; ".join(f"iters {n}: {', '.join(accuracy_regressions(m))}" for n, m in by_n.items())
    message = (
        f"ACCURACY REGRESSION: every concise candidate is less accurate than the main model "
        f"({lost}). None may replace the main model; see {RETRAIN_METRICS} and try fewer "
        "conciseness.lora.iters or a lower learning_rate, or set conciseness.force: false."
    )
    fewest = min(by_n)  # the least changed candidate stands for the sweep in the flat keys
    metrics = {**by_n[fewest], "lora_iters": fewest, **sweep}
    if params.conciseness.on_regression == "fail":
        write_json(RETRAIN_METRICS, metrics)
        raise StageError(message)
    out.mkdir(parents=True)
    reason = "retrained model lost accuracy; discarded"
    regressions = [f"iters {n}: {r}" for n, m in by_n.items() for r in accuracy_regressions(m)]
    marker = {"trained": False, "model": params.models.main, "reason": reason}
    write_json(out / MAIN_STANDS, {**marker, "regressions": regressions})
    metrics = {**metrics, "trained": False, "regression": True, "reason": reason}
    write_json(RETRAIN_METRICS, metrics)
    console.print(f"[bold red]{message}[/]\n[bold red]retrain: the main model stands[/]")
    print(f"punie-lab retrain: WARNING: {message} The main model stands.", file=sys.stderr)
    return metrics


def retrain_metrics(main: ConfigRun, concise: ConfigRun) -> dict[str, Any]:
    from punie.records import accuracy_by_set, summarize

    out: dict[str, Any] = {"trained": True}
    for label, run in (("main", main), ("concise", concise)):
        s = summarize(run.records)
        out[f"accuracy_{label}"] = s["accuracy"]
        for set_name, acc in accuracy_by_set(run.records).items():
            out[f"{set_name}_accuracy_{label}"] = acc
        out[f"completion_tokens_mean_{label}"] = s["completion_tokens_mean"]
        out[f"e2e_mean_s_{label}"] = s["e2e_mean_s"]
        out[f"errors_{label}"] = s["n_errors"]
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}

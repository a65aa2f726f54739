"""`mlx_lm lora` and `mlx_lm fuse` runs: trainers side by side with live progress, fusing,
and a teacher model's greedy answers for distillation.

Every run is a subprocess of the real mlx-lm (OpenBLAS preloaded on Linux, `punie.serving.runtime`);
none outlives its caller, on success, error or Ctrl-C.
"""

from __future__ import annotations

import functools
import json
import re
import resource
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from punie import paths
from punie.models.corpus import contiguous_shards, read_jsonl, to_jsonl
from punie.params import Distill, ModelShape, Params
from punie.results import atomic_dir
from punie.serving.runtime import run_mlx, run_parallel

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# mlx_lm's trainer prints "  <iter>    <loss> ▼    <tok/s>    <k tokens>" and
# "  <iter>    val <loss>    <seconds>s"; a changed format only loses the live display.
_TRAIN_LINE = re.compile(r"^\s*(\d+)\s+([\d.]+)\s+[▼▲]\s+([\d,]+)")
_VAL_LINE = re.compile(r"^\s*(\d+)\s+val\s+([\d.]+)")


@dataclass
class TrainLog:
    """Losses parsed from the trainer's output lines."""

    train: list[tuple[int, float]] = field(default_factory=list)
    val: list[tuple[int, float]] = field(default_factory=list)
    tokens_per_s: list[float] = field(default_factory=list)

    def feed(self, line: str) -> None:
        line = _ANSI.sub("", line)
        if m := _TRAIN_LINE.match(line):
            self.train.append((int(m.group(1)), float(m.group(2))))
            self.tokens_per_s.append(float(m.group(3).replace(",", "")))
        elif m := _VAL_LINE.match(line):
            self.val.append((int(m.group(1)), float(m.group(2))))


def lora_args(
    model_dir: Path, data_dir: Path, adapter_dir: Path, m: ModelShape, seed: int, iters: int
) -> list[str]:
    """`mlx_lm lora` full fine-tune of every layer, loss on the assistant turn only."""
    config = adapter_dir.parent / f"{adapter_dir.name}.yaml"
    warmup = max(1, iters // 10)
    # Cosine decay to 10 % after a short warm-up: a from-scratch run this short needs it.
    schedule = {
        "lr_schedule": {
            "name": "cosine_decay",
            "warmup": warmup,
            "arguments": [m.learning_rate, max(iters - warmup, 1), m.learning_rate * 0.1],
        }
    }
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(schedule))  # JSON is YAML
    return [
        "lora", "--model", str(model_dir), "--train", "--data", str(data_dir),
        "--fine-tune-type", "full", "--num-layers", "-1", "--mask-prompt",
        "--batch-size", str(m.batch_size), "--iters", str(iters),
        "--learning-rate", str(m.learning_rate), "--max-seq-length", str(m.max_seq_length),
        "--steps-per-report", "10", "--steps-per-eval", str(max(iters, 1)),
        "--val-batches", str(m.val_batches), "--save-every", str(iters + 1), "--seed", str(seed),
        "--adapter-path", str(adapter_dir), "-c", str(config),
    ]  # fmt: skip


@dataclass(frozen=True)
class Job:
    """One model to train: its label, random init and shape."""

    label: str
    model_dir: Path
    shape: ModelShape
    iters: int | None = None


@dataclass(frozen=True)
class Trained:
    log: TrainLog
    seconds: float
    cpu_seconds: float = 0.0  # the trainer process's user + system CPU time


_CPU_LOCK = threading.Lock()
_cpu_reaped = [0.0]  # children CPU seen so far by `_job_cpu` (this process's reaped children)


def children_cpu() -> float:
    """User + system CPU seconds of every child process reaped so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _job_cpu() -> float:
    """CPU of the child reaped since the last call: called right after each trainer returns,
    the jobs of `train_many` finish one at a time, so each gets its own trainer's CPU."""
    with _CPU_LOCK:
        now = children_cpu()
        delta, _cpu_reaped[0] = now - _cpu_reaped[0], now
        return delta


def train_many(
    jobs: list[Job], data_dir: Path, work: Path, *, seed: int, blas: str, show: bool = True
) -> dict[str, Trained]:
    """Run one trainer per job at the same time, with one live progress bar each.

    Each trainer is a single-threaded process, so on a 2-core machine the main model and
    the draft train side by side in the time of the main model alone. When one fails or
    we are interrupted, the others are killed: no trainer outlives the stage.
    """

    def one(job: Job, progress: Progress) -> Trained:
        iters = job.iters or job.shape.iters
        log = TrainLog()
        args = lora_args(
            job.model_dir, data_dir, work / f"{job.label}-adapters", job.shape, seed, iters
        )
        task = progress.add_task(job.label, total=iters, loss="")
        # A bar is only drawn on a terminal: in a CI log or a piped `dvc repro` it would stay
        # silent for the whole stage, so there a line is printed at every tenth of the run.
        plain = show and not progress.console.is_terminal
        tenth = max(iters // 10, 1)
        shown = 0  # the iteration of the last plain line

        def on_line(line: str) -> None:
            nonlocal shown
            log.feed(line)
            if log.train:
                it, loss = log.train[-1]
                val = f" val {log.val[-1][1]:.3f}" if log.val else ""
                progress.update(task, completed=it, loss=f"loss {loss:.3f}{val}")
                if plain and it // tenth > shown // tenth:  # crossed into a new tenth
                    shown = it
                    elapsed = time.perf_counter() - t0
                    progress.console.print(
                        f"{job.label}: {it}/{iters} it, loss {loss:.3f}{val}, {elapsed:.0f} s"
                    )

        t0 = time.perf_counter()
        log_path = work / f"{job.label}-train.log"
        run_mlx(args, blas=blas, log_path=log_path, on_line=on_line, threads=job.shape.blas_threads)
        progress.update(task, completed=iters)
        return Trained(log, time.perf_counter() - t0, _job_cpu())

    _job_cpu()  # children reaped before the trainers are not theirs
    with Progress(
        TextColumn("[bold]{task.description:<6}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} it"),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        disable=not show,
    ) as progress:
        results = run_parallel([functools.partial(one, job, progress) for job in jobs])
    return {job.label: result for job, result in zip(jobs, results, strict=True)}


def train(
    label: str,
    model_dir: Path,
    data_dir: Path,
    work: Path,
    m: ModelShape,
    *,
    seed: int,
    blas: str,
    iters: int | None = None,
    show: bool = True,
) -> TrainLog:
    """One trainer with a live progress bar; returns the parsed losses."""
    job = Job(label, model_dir, m, iters)
    return train_many([job], data_dir, work, seed=seed, blas=blas, show=show)[label].log


def fuse(model_dir: Path, adapter_dir: Path, out_dir: Path, tokenizer_dir: Path, blas: str) -> None:
    """`mlx_lm fuse` (loads the trained tensors over the init), then our exact tokenizer files:
    transformers' save_pretrained would drop `tool_parser_type`."""

    # Built aside and swapped in whole: a failed or interrupted fuse keeps the previous model.
    with atomic_dir(out_dir) as tmp:
        run_mlx(
            ["fuse", "--model", str(model_dir), "--adapter-path", str(adapter_dir),
             "--save-path", str(tmp)],
            blas=blas,
        )  # fmt: skip
        (tmp / "chat_template.jinja").unlink(missing_ok=True)
        for name in TOKENIZER_FILES:
            shutil.copy(tokenizer_dir / name, tmp / name)


def train_metrics(label: str, trained: Trained) -> dict[str, Any]:
    log = trained.log
    return {
        f"{label}_train_seconds": trained.seconds,
        f"{label}_train_cpu_seconds": trained.cpu_seconds,
        f"{label}_train_loss": log.train[-1][1] if log.train else None,
        f"{label}_valid_loss": log.val[-1][1] if log.val else None,
        f"{label}_tokens_per_s": (
            sum(log.tokens_per_s) / len(log.tokens_per_s) if log.tokens_per_s else None
        ),
    }


def teacher_answers(
    teacher: Path,
    rows: list[dict[str, Any]],
    work: Path,
    *,
    max_tokens: int,
    processes: int,
    blas: str,
    threads: int,
) -> list[dict[str, Any]]:
    """`rows` with each assistant turn replaced by `teacher`'s greedy answer (punie.models.distill),
    in order. The rows are split over `processes` processes run at once: mlx computes one op
    at a time per process, so one process leaves the second core of this machine idle."""

    work.mkdir(parents=True, exist_ok=True)
    shards = contiguous_shards(rows, processes)

    def one(i: int, shard: list[dict[str, Any]]) -> list[dict[str, Any]]:
        prompts, out = work / f"distill-prompts-{i}.jsonl", work / f"distill-answers-{i}.jsonl"
        prompts.write_text(to_jsonl(shard))
        run_mlx(
            [str(teacher), str(prompts), str(out), "--max-tokens", str(max_tokens)],
            blas=blas, module="punie.models.distill", threads=threads,
            on_line=lambda line: print(f"  [{i + 1}/{len(shards)}] {line}", flush=True),
        )  # fmt: skip
        return read_jsonl(out)

    parts = run_parallel([functools.partial(one, i, s) for i, s in enumerate(shards)])
    return [row for part in parts for row in part]


def distill_draft(
    params: Params,
    draft_dir: Path,
    work: Path,
    tok_dir: Path,
    *,
    teacher: Path = paths.MAIN_MODEL,
    out: Path = paths.DRAFT_MODEL,
    distill: Distill | None = None,
) -> dict[str, Any]:
    """Fine-tune the draft in `draft_dir` on the `teacher` model's greedy answers to corpus
    train prompts (punie.models.distill), then fuse it into `out` (default: models/draft)."""
    b = params.bootstrap
    d = distill or b.distill
    blas = params.runtime.blas
    data = work / "distill"
    data.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cpu0 = children_cpu()
    train_rows = read_jsonl(paths.CORPUS / "train.jsonl")[: d.rows]
    valid_rows = read_jsonl(paths.CORPUS / "valid.jsonl")[: d.valid_rows]
    print(
        f"distill: {teacher} answers {len(train_rows)} train and {len(valid_rows)} valid "
        f"prompts for the draft ({d.processes} processes)"
    )
    answers = teacher_answers(
        teacher, [*train_rows, *valid_rows], work, max_tokens=d.max_tokens,
        processes=d.processes, blas=blas, threads=b.main.blas_threads,
    )  # fmt: skip
    (data / "train.jsonl").write_text(to_jsonl(answers[: len(train_rows)]))
    (data / "valid.jsonl").write_text(to_jsonl(answers[len(train_rows) :]))
    seconds = time.perf_counter() - t0
    generate_cpu = children_cpu() - cpu0
    shape = b.draft.model_copy(update={"iters": d.iters, "learning_rate": d.learning_rate})
    job = Job("draft-distill", draft_dir, shape)
    trained = train_many([job], data, work, seed=params.runtime.seed, blas=blas)[job.label]
    fuse(draft_dir, work / "draft-distill-adapters", out, tok_dir, blas)
    return {
        "distill_rows": d.rows,
        "distill_generate_seconds": seconds,
        "distill_generate_cpu_seconds": generate_cpu,
        **train_metrics("draft_distill", trained),
    }

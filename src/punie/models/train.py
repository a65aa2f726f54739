"""Training runs (mlx-lm's trainer in `punie.models.train_worker`) side by side with live
progress, `mlx_lm fuse`, and a teacher model's greedy answers for distillation.

Every run is a subprocess (OpenBLAS preloaded on Linux, `punie.serving.runtime`); none
outlives its caller, on success, error or Ctrl-C.
"""

from __future__ import annotations

import functools
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from punie import paths
from punie.models.corpus import contiguous_shards, read_jsonl, to_jsonl
from punie.models.train_worker import Report, TrainLog, TrainRequest, run_training
from punie.params import Distill, ModelShape, Params
from punie.results import atomic_dir
from punie.serving.runtime import run_mlx, run_parallel

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
DISTILL = "draft-distill"  # the label of the draft's distillation run


def train_request(
    model_dir: Path,
    data_dir: Path,
    adapter_dir: Path,
    m: ModelShape,
    seed: int,
    iters: int,
    *,
    knob: str = "learning_rate",
) -> TrainRequest:
    """A full fine-tune of every layer, loss on the assistant turn only, cosine decay to 10 %
    after a short warm-up (a from-scratch run this short needs it). Reports every 10 steps,
    validation at the first and last, no numbered checkpoints. Its JSON lines go to
    `<adapter_dir>.jsonl` (`reports_of`)."""
    warmup = max(1, iters // 10)
    schedule = {
        "name": "cosine_decay",
        "warmup": warmup,
        "arguments": [m.learning_rate, max(iters - warmup, 1), m.learning_rate * 0.1],
    }
    return TrainRequest(
        model=str(model_dir), data=str(data_dir), adapter_path=str(adapter_dir),
        metrics=str(_reports(adapter_dir)),
        iters=iters, batch_size=m.batch_size, learning_rate=m.learning_rate,
        max_seq_length=m.max_seq_length, seed=seed,
        fine_tune_type="full", num_layers=-1, lr_schedule=schedule, mask_prompt=True,
        steps_per_report=10, steps_per_eval=max(iters, 1), val_batches=m.val_batches,
        save_every=iters + 1, learning_rate_knob=knob,
    )  # fmt: skip


@dataclass(frozen=True)
class Job:
    """One model to train: its label, random init and shape, and the params key of its
    learning rate (named when the loss turns NaN)."""

    label: str
    model_dir: Path
    shape: ModelShape
    iters: int | None = None
    knob: str = "learning_rate"


@dataclass(frozen=True)
class Trained:
    log: TrainLog
    seconds: float


def adapters_of(work: Path, label: str) -> Path:
    """Where `train_many` leaves job `label`'s trained tensors."""
    return work / f"{label}-adapters"


def reports_of(work: Path, label: str) -> Path:
    """The JSON lines of job `label`'s reports (`TrainLog.read` reads them back)."""
    return _reports(adapters_of(work, label))


def _reports(adapter_dir: Path) -> Path:
    return adapter_dir.parent / f"{adapter_dir.name}.jsonl"


def train_many(
    jobs: list[Job], data_dir: Path, work: Path, *, seed: int, blas: str, show: bool = True
) -> dict[str, Trained]:
    """Run one trainer per job at the same time, with one live progress bar each.

    Each trainer is a single-threaded process, so on a 2-core machine the main model and
    the draft train side by side in the time of the main model alone. When one fails or
    we are interrupted, the others are killed: no trainer outlives the stage. A NaN or inf
    loss stops the stage with a StageError naming the model, the iteration and the knob.
    """

    def one(job: Job, progress: Progress) -> Trained:
        iters = job.iters or job.shape.iters
        adapters = adapters_of(work, job.label)
        request = train_request(
            job.model_dir, data_dir, adapters, job.shape, seed, iters, knob=job.knob
        )
        task = progress.add_task(job.label, total=iters, loss="")
        # A bar is only drawn on a terminal: in a CI log or a piped `dvc repro` it would stay
        # silent for the whole stage, so there a line is printed at every tenth of the run.
        plain = show and not progress.console.is_terminal
        tenth = max(iters // 10, 1)
        shown = 0  # the iteration of the last plain line
        val = ""

        def on_report(report: Report) -> None:
            nonlocal shown, val
            if report.split == "val":
                val = f" val {report.loss:.3f}"
                return
            it, loss = report.iteration, report.loss
            progress.update(task, completed=it, loss=f"loss {loss:.3f}{val}")
            if plain and it // tenth > shown // tenth:  # crossed into a new tenth
                shown = it
                elapsed = time.perf_counter() - t0
                progress.console.print(
                    f"{job.label}: {it}/{iters} it, loss {loss:.3f}{val}, {elapsed:.0f} s"
                )

        t0 = time.perf_counter()
        log = run_training(
            request, work / f"{job.label}-request.json", label=job.label, blas=blas,
            threads=job.shape.blas_threads, log_path=work / f"{job.label}-train.log",
            on_report=on_report,
        )  # fmt: skip
        progress.update(task, completed=iters)
        return Trained(log, time.perf_counter() - t0)

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
    """One trainer with a live progress bar; returns its reports."""
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
    train prompts (punie.models.distill), then fuse it into `out` (default: models/draft).
    Its reports stay in `work` (`TrainLog.read(reports_of(work, DISTILL))`)."""
    b = params.bootstrap
    d = distill or b.distill
    blas = params.runtime.blas
    data = work / "distill"
    data.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
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
    shape = b.draft.model_copy(update={"iters": d.iters, "learning_rate": d.learning_rate})
    sections = {"bootstrap.distill": b.distill, "conciseness.draft": params.conciseness.draft}
    key = next((k for k, section in sections.items() if section is d), "distill")
    job = Job(DISTILL, draft_dir, shape, knob=f"{key}.learning_rate")
    trained = train_many([job], data, work, seed=params.runtime.seed, blas=blas)[job.label]
    fuse(draft_dir, adapters_of(work, DISTILL), out, tok_dir, blas)
    return {
        "distill_rows": d.rows,
        "distill_generate_seconds": seconds,
        **train_metrics("draft_distill", trained),
    }

"""`punie-lab bootstrap`: the embedded default main and draft models, built from scratch.

1. corpus   - agent chat examples rendered from the real agent's requests (punie.models.corpus)
2. tokenizer - byte-level BPE trained on the corpus text
3. models   - random Qwen3 inits fully fine-tuned by mlx-lm's trainer (punie.models.train_worker),
              fused with `mlx_lm fuse`
4. metrics  - corpus sizes, parameter counts, losses, seconds, BLAS; the loss curves of every
              run as plot rows (metrics/bootstrap_loss.json)

When params.yaml points `models` at other models (a hub id on a Mac), only the corpus is built
(the concise stages use it) and models/main, models/draft hold a marker saying why.

`punie-lab eval` checks the built models; `punie-lab step-cost` and `blas-benchmark` time
their training.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from punie import paths
from punie.errors import StageError
from punie.machine import machine_keys
from punie.measurement.memory import ServerMemorySampler
from punie.models.corpus import build_corpus
from punie.models.embedded import build_tokenizer, embed_scale, prompt_lengths, shape_of
from punie.models.modelgen import init_model_dir
from punie.models.train import (
    DISTILL,
    Job,
    adapters_of,
    distill_draft,
    fuse,
    reports_of,
    train_many,
    train_metrics,
)
from punie.models.train_worker import TrainLog, loss_rows
from punie.params import Params, load_params
from punie.results import atomic_dir, round_floats, write_json
from punie.serving.runtime import blas_in_use

NOT_BUILT = "NOT_BUILT.json"


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    pass


def run(name: str, args: argparse.Namespace) -> int:
    # With the CPU shared, one OpenBLAS thread trains these small models faster than two
    # (spinning threads fight the other trainer for the cores).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    build(load_params())
    return 0


def build(params: Params) -> dict[str, Any]:

    # The stage's whole process tree (this process, the trainers side by side, fuse, distil
    # generation), summed at each sample: what the machine must hold at once.
    with ServerMemorySampler(os.getpid(), interval_s=0.5) as memory:
        metrics = _build(params) if uses_embedded(params) else _corpus_only(params)
    metrics["peak_rss_mb"] = round(memory.peak_rss_mb, 1)
    metrics.update(machine_keys(params.runtime.blas))
    write_json(paths.BOOTSTRAP_METRICS, metrics)
    print(json.dumps(metrics, indent=2))
    return metrics


def uses_embedded(params: Params) -> bool:
    """Whether params.yaml serves the embedded models (models/main or models/draft)."""
    m = params.models
    return Path(m.main) == paths.MAIN_MODEL or (
        m.draft is not None and Path(m.draft) == paths.DRAFT_MODEL
    )


def _corpus_only(params: Params) -> dict[str, Any]:
    """The corpus, and a marker in each model output: the pipeline runs on other models."""
    t0 = time.perf_counter()
    print(f"bootstrap: models.main is {params.models.main}: building the corpus only")
    metrics: dict[str, Any] = {"embedded": False, **build_corpus(params)}
    reason = (
        f"not built: models.main is {params.models.main} and models.draft is "
        f"{params.models.draft}, so the embedded models are not used"
    )
    for out in (paths.MAIN_MODEL, paths.DRAFT_MODEL):
        with atomic_dir(out) as tmp:
            write_json(tmp / NOT_BUILT, {"built": False, "reason": reason})
    write_json(paths.BOOTSTRAP_LOSS, [])
    metrics["total_seconds"] = time.perf_counter() - t0
    return round_floats(metrics)


def _build(params: Params) -> dict[str, Any]:
    b = params.bootstrap
    blas = params.runtime.blas
    seed = params.runtime.seed
    t_all = time.perf_counter()
    metrics: dict[str, Any] = {"embedded": True}
    print("bootstrap: rendering the agent corpus from the agent's own requests")
    t0 = time.perf_counter()
    metrics.update(build_corpus(params))
    metrics["corpus_seconds"] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="punie-bootstrap-") as tmp:
        work = Path(tmp)
        tok_dir = work / "tokenizer"
        build_tokenizer(params, tok_dir)
        # Always the DVC outputs, whatever params.models points the other stages at.
        outputs = {"main": paths.MAIN_MODEL, "draft": paths.DRAFT_MODEL}
        jobs = []
        for label, shape in (("main", b.main), ("draft", b.draft)):
            init = work / f"{label}-init"
            n = init_model_dir(
                init, shape_of(shape), tok_dir, seed=seed, embed_scale=embed_scale(shape)
            )
            metrics[f"{label}_params"] = n
            if label == "main":
                metrics.update(prompt_lengths(init))
            if metrics["max_example_tokens"] > shape.max_seq_length:
                raise StageError(
                    f"bootstrap.{label}.max_seq_length={shape.max_seq_length} is below the "
                    f"longest example ({metrics['max_example_tokens']} tokens)"
                )
            jobs.append(Job(label, init, shape, knob=f"bootstrap.{label}.learning_rate"))
        t0 = time.perf_counter()
        trained = train_many(jobs, paths.CORPUS, work, seed=seed, blas=blas)
        metrics["train_seconds"] = time.perf_counter() - t0
        logs = {job.label: trained[job.label].log for job in jobs}
        distilling = b.distill.rows > 0
        # A distilled draft is fused aside first, then fine-tuned on the main model's answers.
        if distilling:
            outputs["draft"] = work / "draft-corpus"
        for job in jobs:
            metrics.update(train_metrics(job.label, trained[job.label]))
            fuse(job.model_dir, adapters_of(work, job.label), outputs[job.label], tok_dir, blas)
        if distilling:
            metrics.update(distill_draft(params, outputs["draft"], work, tok_dir))
            logs[DISTILL] = TrainLog.read(reports_of(work, DISTILL))
    write_json(
        paths.BOOTSTRAP_LOSS, [r for m, log in logs.items() for r in loss_rows(log, "model", m)]
    )
    if metrics["main_params"] < 10 * metrics["draft_params"]:
        print("bootstrap: warning: the draft has fewer than 10x fewer parameters than main")
    metrics["total_seconds"] = time.perf_counter() - t_all
    metrics["blas"] = blas_in_use(blas)
    return round_floats(metrics)

"""`punie-lab bootstrap`: the embedded default main and draft models, built from scratch.

1. corpus   - agent chat examples rendered from the real agent's requests (punie.models.corpus)
2. tokenizer - byte-level BPE trained on the corpus text
3. models   - random Qwen3 inits trained with `mlx_lm lora --fine-tune-type full`, fused
4. metrics  - corpus sizes, parameter counts, losses, seconds, BLAS

`punie-lab eval` checks the built models; `punie-lab step-cost` and `blas-benchmark` time
their training.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from punie import paths
from punie.errors import StageError
from punie.measurement.memory import ServerMemorySampler
from punie.models.corpus import build_corpus
from punie.models.embedded import build_tokenizer, embed_scale, prompt_lengths, shape_of
from punie.models.modelgen import init_model_dir
from punie.models.train import (
    Job,
    children_cpu,
    distill_draft,
    fuse,
    train_many,
    train_metrics,
)
from punie.params import Params, load_params
from punie.results import round_floats, write_json
from punie.serving.runtime import blas_in_use


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
        metrics = _build(params)
    metrics["peak_rss_mb"] = round(memory.peak_rss_mb, 1)
    write_json(paths.BOOTSTRAP_METRICS, metrics)
    print(json.dumps(metrics, indent=2))
    return metrics


def _build(params: Params) -> dict[str, Any]:
    b = params.bootstrap
    blas = params.runtime.blas
    seed = params.runtime.seed
    t_all = time.perf_counter()
    cpu_all = _cpu()
    metrics: dict[str, Any] = {}
    print("bootstrap: rendering the agent corpus from the agent's own requests")
    t0 = time.perf_counter()
    metrics.update(build_corpus(params))
    metrics["corpus_seconds"] = time.perf_counter() - t0
    metrics["corpus_cpu_seconds"] = _cpu() - cpu_all
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
            jobs.append(Job(label, init, shape))
        t0 = time.perf_counter()
        trained = train_many(jobs, paths.CORPUS, work, seed=seed, blas=blas)
        metrics["train_seconds"] = time.perf_counter() - t0
        distilling = b.distill.rows > 0
        # A distilled draft is fused aside first, then fine-tuned on the main model's answers.
        if distilling:
            outputs["draft"] = work / "draft-corpus"
        for job in jobs:
            metrics.update(train_metrics(job.label, trained[job.label]))
            fuse(job.model_dir, work / f"{job.label}-adapters", outputs[job.label], tok_dir, blas)
        if distilling:
            metrics.update(distill_draft(params, outputs["draft"], work, tok_dir))
    if metrics["main_params"] < 10 * metrics["draft_params"]:
        print("bootstrap: warning: the draft has fewer than 10x fewer parameters than main")
    metrics["total_seconds"] = time.perf_counter() - t_all
    metrics["total_cpu_seconds"] = _cpu() - cpu_all
    metrics["alone_estimate_seconds"] = alone_estimate(metrics, params)
    metrics["blas"] = blas_in_use(blas)
    return round_floats(metrics)


def _cpu() -> float:
    """User + system CPU seconds of this process and its reaped children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime + children_cpu()


def alone_estimate(metrics: dict[str, Any], params: Params) -> float:
    """The stage's wall time on an otherwise idle machine, from CPU times (a shared machine
    stretches wall time, not CPU time): everything runs one process at a time except the
    corpus and the distillation answers (`processes` at once) and the draft, which trains
    beside the main model (its CPU is hidden unless it is the longer of the two)."""
    b = params.bootstrap
    cpus = [metrics.get(f"{m}_train_cpu_seconds", 0) for m in ("main", "draft")]
    hidden = min(cpus)
    corpus = metrics.get("corpus_cpu_seconds", 0)
    generate = metrics.get("distill_generate_cpu_seconds", 0)
    return (
        metrics["total_cpu_seconds"]
        - hidden
        - corpus * (1 - 1 / max(1, min(b.corpus.processes, 2)))
        - generate * (1 - 1 / max(1, min(b.distill.processes, 2)))
    )

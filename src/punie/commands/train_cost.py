"""`punie-lab step-cost` and `punie-lab blas-benchmark`: where the embedded models' training
time goes, and what the system OpenBLAS is worth (see `punie.measurement.step_cost`)."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from punie import paths
from punie.errors import StageError
from punie.measurement.step_cost import epoch_seconds, epoch_shares
from punie.models.embedded import random_main
from punie.models.train import train
from punie.params import Params, load_params
from punie.serving.runtime import find_openblas, run_mlx


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "blas-benchmark":
        parser.add_argument("--iters", type=int, default=12, help="training iterations per side")
    else:
        parser.add_argument("--reps", type=int, default=3, help="timed steps per length")


def run(name: str, args: argparse.Namespace) -> int:
    params = load_params()
    if name == "blas-benchmark":
        return blas_benchmark(params, args.iters)
    return step_cost(params, args.reps)


def step_cost(params: Params, reps: int = 3) -> int:
    """mlx-lm's training step of `bootstrap.main` timed at each padded batch length of the
    corpus, and each length's share of an epoch: which examples the training time goes to."""

    m = params.bootstrap.main
    with tempfile.TemporaryDirectory(prefix="punie-step-cost-") as tmp:
        work = Path(tmp)
        request = {
            "model": str(random_main(params, work)), "data": str(paths.CORPUS),
            "batch_size": m.batch_size, "max_seq_length": m.max_seq_length,
            "learning_rate": m.learning_rate, "reps": reps,
            "hidden_size": m.hidden_size, "intermediate_size": m.intermediate_size,
        }  # fmt: skip
        (work / "request.json").write_text(json.dumps(request))
        args = [str(work / "request.json"), str(work / "result.json")]
        run_mlx(
            args, module="punie.measurement.step_cost", blas=params.runtime.blas,
            threads=m.blas_threads, on_line=print,
        )  # fmt: skip
        result = json.loads((work / "result.json").read_text())
    rows = epoch_shares(result["rows"])
    steps = sum(r["batches"] for r in rows)
    epoch = epoch_seconds(rows)
    print(f"\nbootstrap.main training step (batch {m.batch_size}, median of {reps}):")
    print(" length  batches  ms/step  share of the steps  share of the time")
    for r in rows:
        print(f"{r['length']:>7}  {r['batches']:>7}  {r['step_s'] * 1e3:>7.0f}  "
              f"{r['batches'] / steps:>18.1%}  {r['share']:>17.1%}")  # fmt: skip
    print(
        f"one epoch: {steps} steps, {epoch:.0f} s ({epoch / steps * 1e3:.0f} ms per step); "
        f"{m.iters} iterations of this mix: {m.iters * epoch / steps:.0f} s"
    )
    exp, mul = result["exp_ns_per_element"], result["multiply_ns_per_element"]
    print(
        f"CPU kernels: mlx exp {exp:.2f} ns per element (numpy's "
        f"{result['numpy_exp_ns_per_element']:.2f}), multiply {mul:.2f} ns ({exp / mul:.0f}x); "
        f"a {m.hidden_size}x{m.intermediate_size} projection of 384 tokens "
        f"{result['matmul_gflops']:.0f} GFLOP/s"
    )
    return 0


def blas_benchmark(params: Params, iters: int = 12) -> int:
    """The same short training job with OpenBLAS preloaded and without; prints the ratio."""

    if find_openblas() is None:
        raise StageError("no system OpenBLAS found (install libopenblas0-pthread)")
    m = params.bootstrap.main
    with tempfile.TemporaryDirectory(prefix="punie-blas-") as tmp:
        work = Path(tmp)
        init = random_main(params, work)
        seconds: dict[str, float] = {}
        losses: dict[str, float | None] = {}
        for blas in ("auto", "off"):
            t0 = time.perf_counter()
            log = train(f"blas-{blas}", init, paths.CORPUS, work, m, seed=0, blas=blas, iters=iters)
            seconds[blas] = time.perf_counter() - t0
            losses[blas] = log.train[-1][1] if log.train else None
    ratio = seconds["off"] / seconds["auto"]
    print(
        f"blas benchmark ({iters} iters of bootstrap.main, same job, same run): "
        f"bundled {seconds['off']:.1f} s, OpenBLAS {seconds['auto']:.1f} s, "
        f"speedup {ratio:.2f}x; final losses {losses['off']} vs {losses['auto']}"
    )
    return 0

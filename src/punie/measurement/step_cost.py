"""Where a training run's time goes: mlx-lm's own training step timed at each padded batch
length of a corpus, weighted by how many batches of that length one epoch has.

`mlx_lm lora` sorts the examples by length, cuts batches and pads each to one more than a
multiple of 32 tokens, so one epoch is a fixed mix of a few shapes. Timing one step per shape
(its default loss, gradients and Adam update, compiled as the trainer compiles them) says
which examples the time goes to. A short second part times the CPU work the step is made of:
a matrix product of the model's size and the element-wise `exp` that softmax, SiLU and the
cross-entropy evaluate for every score, activation and vocabulary entry.

`python -m punie.measurement.step_cost REQUEST.json RESULT.json` runs in a child process so
that OpenBLAS is preloaded as for every mlx process of the lab (`punie-lab bootstrap --step-cost`).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from types import SimpleNamespace
from typing import Any, cast

from punie.measurement.progress import Progress
from punie.serving.runtime import worker_main


def epoch_shares(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each length's share of one epoch's step time (batches x seconds per step); the shares
    add up to 1."""
    total = epoch_seconds(rows)
    return [r | {"share": r["batches"] * r["step_s"] / total if total else 0.0} for r in rows]


def epoch_seconds(rows: list[dict[str, Any]]) -> float:
    return sum(r["batches"] * r["step_s"] for r in rows)


def measure(request: dict[str, Any]) -> dict[str, Any]:
    """Time mlx-lm's training step per padded length (median of `reps` after a compiling one)
    and the CPU kernels it is made of. Runs inside the child."""

    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx_lm.tuner.datasets import CacheDataset, load_dataset
    from mlx_lm.tuner.trainer import default_loss, iterate_batches
    from mlx_lm.utils import load

    loaded = load(request["model"])  # (model, tokenizer[, config])
    model, tokenizer = loaded[0], cast(Any, loaded[1])  # a wrapper of the HF tokenizer
    data = SimpleNamespace(data=request["data"], train=True, test=False, hf_dataset=None,
                           mask_prompt=True, prompt_feature="prompt", chat_feature="messages",
                           completion_feature="completion", text_feature="text")  # fmt: skip
    train = CacheDataset(load_dataset(data, tokenizer)[0])
    # As `mlx_lm lora --fine-tune-type full --num-layers -1`: every layer trains, the
    # embedding stays frozen.
    model.freeze()
    for layer in model.layers:
        layer.unfreeze()
    optimizer = optim.Adam(learning_rate=request["learning_rate"])
    state = [model.state, optimizer.state, mx.random.state]
    loss_and_grad = nn.value_and_grad(model, default_loss)

    @partial(mx.compile, inputs=state, outputs=state)
    def step(inputs: mx.array, lengths: mx.array) -> tuple[mx.array, mx.array]:
        (loss, ntoks), grad = loss_and_grad(model, inputs, lengths)
        optimizer.update(model, grad)
        return loss, ntoks

    by_length: dict[int, list[tuple[mx.array, mx.array]]] = {}
    batches = iterate_batches(train, request["batch_size"], request["max_seq_length"], seed=0)
    for batch in batches:
        by_length.setdefault(int(batch[0].shape[1]), []).append(batch)
    rows = []
    progress = Progress(len(by_length), every_s=0)
    for done, (length, group) in enumerate(sorted(by_length.items()), start=1):
        seconds = []
        for i in range(request["reps"] + 1):  # the first one compiles for this shape
            t0 = time.perf_counter()
            loss, ntoks = step(*group[i % len(group)])
            mx.eval(state, loss, ntoks)
            seconds.append(time.perf_counter() - t0)
        rows.append({"length": length, "batches": len(group),
                     "step_s": statistics.median(seconds[1:])})  # fmt: skip
        note = f"length {length}: {rows[-1]['step_s'] * 1e3:.0f} ms per step"
        progress.report(done, "step cost", "lengths", note=note)
    return {"rows": rows, **kernels(request["hidden_size"], request["intermediate_size"])}


def kernels(hidden: int, intermediate: int, reps: int = 20) -> dict[str, float]:
    """Nanoseconds per element of `exp` and of a multiply, and GFLOP/s of one MLP projection
    over 384 tokens (a batch of 4 x 96): what one step spends its time on. numpy's `exp` on
    the same CPU says what an `exp` can cost here."""
    import mlx.core as mx
    import numpy as np

    def seconds(run: Callable[[], object]) -> float:
        run()  # warm-up
        t0 = time.perf_counter()
        for _ in range(reps):
            run()
        return (time.perf_counter() - t0) / reps

    x = mx.random.normal((1 << 20,))
    a, w = mx.random.normal((384, hidden)), mx.random.normal((intermediate, hidden))
    mx.eval(x, a, w)
    x_np = np.array(x)
    flops = 2 * 384 * hidden * intermediate
    return {
        "exp_ns_per_element": seconds(lambda: mx.eval(mx.exp(x))) / x.size * 1e9,
        "numpy_exp_ns_per_element": seconds(lambda: np.exp(x_np)) / x.size * 1e9,
        "multiply_ns_per_element": seconds(lambda: mx.eval(x * x)) / x.size * 1e9,
        "matmul_gflops": flops / seconds(lambda: mx.eval(a @ w.T)) / 1e9,
    }


if __name__ == "__main__":
    sys.exit(worker_main("punie.measurement.step_cost", measure, sys.argv[1:]))

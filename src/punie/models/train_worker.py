"""One training run through mlx-lm's own trainer API, reporting in JSON lines.

`python -m punie.models.train_worker REQUEST.json` trains as `mlx_lm lora` would for the same
settings (same data loading and masking, seeds, batching, LoRA layers, Adam and schedule; the
same `adapters.safetensors`, numbered checkpoints and `adapter_config.json`, so `mlx_lm fuse`
reads them unchanged) and writes one JSON object per training report and per validation, to
the request's JSONL file and to stdout:

    {"split": "train", "iteration": 10, "loss": 7.853, "learning_rate": 0.003,
     "tokens_per_s": 1096.0, "iterations_per_s": 2.1, "peak_memory_gb": 0.05,
     "trained_tokens": 4100}
    {"split": "val", "iteration": 0, "loss": 9.944, "seconds": 14.3}

A validation's iteration is the number of optimizer steps taken before it (mlx-lm validates
at the start of step 1 and of the last step). A train report's loss is the mean over the
steps since the previous report. The loss is checked at every step: the first NaN or inf
stops the run with a message naming the iteration and the knob to lower, exit status 3.

The parent side (`run_training`) starts the worker with `punie.serving.runtime.run_mlx`
(OpenBLAS preloaded, killed on error or Ctrl-C), reads the JSON lines and turns a non-finite
loss into a StageError. This module imports mlx only in the worker.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any, Literal, cast

from punie.errors import StageError
from punie.serving.runtime import run_mlx

MODULE = "punie.models.train_worker"
NON_FINITE_EXIT = 3


@dataclass(frozen=True)
class TrainRequest:
    """The settings of one run, with `mlx_lm lora`'s option names."""

    model: str
    data: str  # directory with train.jsonl and valid.jsonl
    adapter_path: str  # adapters.safetensors, numbered checkpoints and adapter_config.json
    metrics: str  # the JSONL file the reports are appended to
    iters: int
    batch_size: int
    learning_rate: float
    max_seq_length: int
    seed: int
    fine_tune_type: Literal["full", "lora"] = "lora"
    num_layers: int = 16  # the top layers trained (-1: all)
    lora_parameters: dict[str, float] | None = None  # rank, scale, dropout (LoRA only)
    lr_schedule: dict[str, Any] | None = None  # mlx_lm's {name, warmup, arguments}
    mask_prompt: bool = False
    steps_per_report: int = 10
    steps_per_eval: int = 200
    val_batches: int = 25
    save_every: int = 100
    # The params.yaml key to lower when the loss turns NaN or inf (in the error messages).
    learning_rate_knob: str = "learning_rate"
    # With `mask_prompt`: compute the vocabulary logits at the answer's positions only
    # (`answer_window_loss`), the same loss for a fraction of the cost on a large vocabulary.
    answer_window: bool = False

    def __post_init__(self) -> None:
        if self.fine_tune_type == "lora" and not self.lora_parameters:
            raise ValueError("a LoRA run needs lora_parameters (rank, scale, dropout)")

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def read(cls, path: Path) -> TrainRequest:
        data = json.loads(path.read_text())
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(data) - known):
            raise ValueError(f"{path}: unknown request keys {unknown}")
        return cls(**data)


@dataclass(frozen=True)
class Report:
    """One JSON line of the worker: a training report or a validation."""

    split: Literal["train", "val"]
    iteration: int
    loss: float
    learning_rate: float | None = None
    tokens_per_s: float | None = None
    iterations_per_s: float | None = None
    peak_memory_gb: float | None = None
    trained_tokens: int | None = None
    seconds: float | None = None  # time the validation took

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None})

    @classmethod
    def parse(cls, line: str) -> Report | None:
        """The report on `line`, or None for any other output (mlx-lm's own messages)."""
        if not line.startswith('{"split"'):
            return None
        try:
            data = json.loads(line)  # NaN and Infinity parse as floats
            return cls(**data)
        except (ValueError, TypeError):
            return None

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss)


def non_finite_message(report: Report, request: TrainRequest) -> str:
    """Why a run stopped: which loss, at which iteration, and what to change."""
    loss = f"{'validation' if report.split == 'val' else 'training'} loss is {report.loss}"
    # The first validation and the loss of step 1 are the initial model's: no update yet.
    if report.iteration <= (0 if report.split == "val" else 1):
        where = "at iteration 1" if report.split == "train" else "at the start"
        return (
            f"{loss} {where}, before any update, so not the learning rate: an example cut off "
            f"at max_seq_length {request.max_seq_length} keeps no answer token to score (raise "
            "it), or the initial weights are not finite"
        )
    where = "at" if report.split == "train" else "after"
    return (
        f"{loss} {where} iteration {report.iteration}; lower {request.learning_rate_knob} "
        f"(now {request.learning_rate:g})"
    )


@dataclass
class TrainLog:
    """The reports of one run, in order."""

    reports: list[Report] = field(default_factory=list)

    @property
    def train(self) -> list[tuple[int, float]]:
        return [(r.iteration, r.loss) for r in self.reports if r.split == "train"]

    @property
    def val(self) -> list[tuple[int, float]]:
        return [(r.iteration, r.loss) for r in self.reports if r.split == "val"]

    @property
    def tokens_per_s(self) -> list[float]:
        return [r.tokens_per_s for r in self.reports if r.tokens_per_s is not None]

    @classmethod
    def read(cls, path: Path) -> TrainLog:
        reports = (Report.parse(line) for line in path.read_text().splitlines())
        return cls([r for r in reports if r is not None])


def loss_rows(log: TrainLog, key: str, value: str) -> list[dict[str, Any]]:
    """Plot rows {key: value, iteration, loss, split} of a run, for a DVC loss plot."""
    return [
        {key: value, "iteration": r.iteration, "loss": round(r.loss, 4), "split": r.split}
        for r in log.reports
        if r.finite
    ]


def run_training(
    request: TrainRequest,
    request_path: Path,
    *,
    label: str,
    blas: str,
    threads: int | None = None,
    log_path: Path | None = None,
    on_report: Callable[[Report], None] | None = None,
) -> TrainLog:
    """Train in a worker subprocess; `on_report` sees each report as it comes. A NaN or inf
    loss kills the worker and raises a StageError naming `label`, the iteration and the knob."""
    request.write(request_path)
    Path(request.metrics).unlink(missing_ok=True)
    log = TrainLog()

    def on_line(line: str) -> None:
        report = Report.parse(line)
        if report is None:
            return
        log.reports.append(report)
        if not report.finite:
            raise StageError(f"{label}: {non_finite_message(report, request)}")
        if on_report:
            on_report(report)

    run_mlx([str(request_path)], blas=blas, log_path=log_path, on_line=on_line,
            threads=threads, module=MODULE)  # fmt: skip
    return log


# ---------------------------------------------------------------------------------------
# The worker (mlx is imported here only)


class NonFiniteLoss(Exception):
    pass


class _Reporter:
    """mlx-lm's TrainingCallback (duck-typed, so this module loads without mlx). The trainer
    reports every step; each step's loss is checked, and the steps are summed into one line
    per `steps_per_report` exactly as mlx-lm sums them (mean loss, tokens over time)."""

    def __init__(self, request: TrainRequest, out: IO[str]) -> None:
        self.request = request
        self.out = out
        self.window: list[tuple[float, float, int]] = []  # loss, seconds, tokens of each step
        self.trained_tokens = 0

    def emit(self, report: Report) -> None:
        line = report.to_json()
        self.out.write(line + "\n")
        self.out.flush()
        print(line, flush=True)
        if not report.finite:
            raise NonFiniteLoss(non_finite_message(report, self.request))

    def on_train_loss_report(self, info: dict[str, Any]) -> None:
        it = int(info["iteration"])
        tokens = int(info["trained_tokens"]) - self.trained_tokens
        self.trained_tokens = int(info["trained_tokens"])
        self.window.append((float(info["train_loss"]), 1 / info["iterations_per_second"], tokens))
        last = self.window[-1][0]
        if it % self.request.steps_per_report and it != self.request.iters and math.isfinite(last):
            return
        losses, seconds, counts = zip(*self.window, strict=True)
        self.window = []
        self.emit(
            Report(
                "train",
                it,
                sum(losses) / len(losses),  # NaN or inf when a step's loss is
                learning_rate=float(info["learning_rate"]),
                tokens_per_s=sum(counts) / sum(seconds),
                iterations_per_s=len(losses) / sum(seconds),
                peak_memory_gb=float(info["peak_memory"]),
                trained_tokens=self.trained_tokens,
            )
        )

    def on_val_loss_report(self, info: dict[str, Any]) -> None:
        it, loss = int(info["iteration"]), float(info["val_loss"])
        self.emit(Report("val", it, loss, seconds=float(info["val_time"])))


def cli_config(request: TrainRequest) -> dict[str, Any]:
    """The options `mlx_lm lora` would hold for this run (its defaults under ours): what it
    saves as adapter_config.json, which `mlx_lm fuse` reads back."""
    from mlx_lm.lora import CONFIG_DEFAULTS

    ours = asdict(request)
    for key in ("metrics", "learning_rate_knob"):
        ours.pop(key)
    config = {**CONFIG_DEFAULTS, **ours, "train": True}
    if request.fine_tune_type == "full":
        config["lora_parameters"] = None  # as `mlx_lm lora` records a full fine-tune
    return config


def train(request: TrainRequest) -> None:
    """`mlx_lm lora --train` for `request`, step by step as mlx_lm/lora.py does it."""
    import types

    import mlx.core as mx
    import mlx.optimizers as optim
    import numpy as np
    from mlx_lm.cli_ui import make_console
    from mlx_lm.tuner.datasets import CacheDataset, load_dataset
    from mlx_lm.tuner.trainer import TrainingArgs, TrainingCallback, default_loss
    from mlx_lm.tuner.trainer import train as mlx_train
    from mlx_lm.tuner.utils import build_schedule, linear_to_lora_layers, print_trainable_parameters
    from mlx_lm.utils import load, save_config

    make_console().quiet = True  # mlx-lm's own table and bar: our JSON lines replace them
    config = cli_config(request)
    args = types.SimpleNamespace(**config)

    np.random.seed(request.seed)  # the batch order (mlx_lm's iterate_batches)
    model, tokenizer = load(
        request.model, tokenizer_config={"trust_remote_code": False}, trust_remote_code=False
    )[:2]
    # mlx-lm annotates a transformers tokenizer and passes its own wrapper, as here.
    train_set, valid_set, _ = load_dataset(args, tokenizer)  # ty: ignore[invalid-argument-type]

    mx.random.seed(request.seed)  # LoRA inits and dropout
    model.freeze()
    layers = model.layers
    if request.num_layers > len(layers):
        raise ValueError(
            f"Requested to train {request.num_layers} layers "
            f"but the model only has {len(layers)} layers."
        )
    if request.fine_tune_type == "full":
        for layer in layers[-max(request.num_layers, 0) :]:
            layer.unfreeze()
    else:
        linear_to_lora_layers(model, request.num_layers, config["lora_parameters"])
    print_trainable_parameters(model)

    adapter_path = Path(request.adapter_path)
    adapter_path.mkdir(parents=True, exist_ok=True)
    save_config(config, adapter_path / "adapter_config.json")

    schedule = build_schedule(request.lr_schedule) if request.lr_schedule else None
    optimizer = optim.Adam(learning_rate=schedule or request.learning_rate)
    training_args = TrainingArgs(
        batch_size=request.batch_size,
        iters=request.iters,
        val_batches=request.val_batches,
        steps_per_report=1,  # every step reaches the callback; it sums them per report
        steps_per_eval=request.steps_per_eval,
        steps_per_save=request.save_every,
        adapter_file=str(adapter_path / "adapters.safetensors"),
        max_seq_length=request.max_seq_length,
    )
    train_data, valid_data = CacheDataset(train_set), CacheDataset(valid_set)
    loss = default_loss
    if request.answer_window:
        if not request.mask_prompt:
            raise ValueError("answer_window needs mask_prompt (the loss's positions)")
        window = answer_span([train_data, valid_data], request.max_seq_length)
        loss = functools.partial(answer_window_loss, window=window)
    metrics = Path(request.metrics)
    metrics.parent.mkdir(parents=True, exist_ok=True)
    with metrics.open("a") as out:
        mlx_train(
            model,
            optimizer,
            train_data,
            valid_data,
            args=training_args,
            loss=loss,
            training_callback=cast("TrainingCallback", _Reporter(request, out)),
        )


def answer_span(datasets: Sequence[Any], max_seq_length: int) -> int:
    """The most target positions an example's answer spans (its tokens after the prompt, and
    the position before them), rounded up to a multiple of 8: the loss window."""
    longest = 1
    for data in datasets:
        for i in range(len(data)):
            tokens, offset = data[i]
            longest = max(longest, min(len(tokens), max_seq_length) - offset + 1)
    return -(-longest // 8) * 8


def answer_window_loss(model: Any, batch: Any, lengths: Any, *, window: int) -> tuple[Any, Any]:
    """mlx-lm's `default_loss` with the prompt masked, computed on the last `window` target
    positions of each example only: the same (position, target) terms, but the output head
    (a 151,936-row matmul and softmax per position for Qwen3) runs on the answer, not on the
    prompt too. The transformer runs on every position, as the answer attends to the prompt."""
    import mlx.core as mx
    import mlx.nn as nn

    inputs, targets = batch[:, :-1], batch[:, 1:]
    hidden = model.model(inputs)
    # Example e's answer targets sit at positions offset-1 .. length-1: take the window ending
    # at length-1 (the positions before 0 are clipped, and masked out with the prompt).
    last = lengths[:, 1:] - 1
    wanted = last - window + 1 + mx.arange(window)[None, :]
    positions = mx.clip(wanted, 0, targets.shape[1] - 1)
    mask = mx.logical_and(wanted >= 0, wanted + 1 >= lengths[:, 0:1])
    h = mx.take_along_axis(hidden, positions[..., None], axis=1)
    head = getattr(model, "lm_head", None) or model.model.embed_tokens.as_linear
    logits = head(h)
    ce = nn.losses.cross_entropy(logits, mx.take_along_axis(targets, positions, axis=1)) * mask
    ntoks = mask.sum()
    return ce.astype(mx.float32).sum() / ntoks, ntoks


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(f"usage: python -m {MODULE} REQUEST.json", file=sys.stderr)
        return 2
    request = TrainRequest.read(Path(argv[0]))
    try:
        train(request)
    except NonFiniteLoss as e:
        print(f"train_worker: training stopped: {e}", file=sys.stderr, flush=True)
        return NON_FINITE_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The training worker: mlx-lm's trainer through its API, one JSON line per report, a NaN or
inf loss stopping the run, adapters `mlx_lm fuse` reads, and the same run as `mlx_lm lora`."""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from punie.errors import StageError
from punie.models import train as T
from punie.models import train_worker as W
from punie.models.conciseness import checkpoint_name, fuse_command, lora_request
from punie.models.corpus import to_jsonl
from punie.params import ModelShape
from punie.serving.runtime import mlx_env, run_mlx

ROOT = Path(__file__).resolve().parents[1]

TINY = ModelShape(
    hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
    intermediate_size=64, iters=12, batch_size=2, learning_rate=1e-2, max_seq_length=256,
    val_batches=-1, blas_threads=1,
)  # fmt: skip

TRAIN_KEYS = {"split", "iteration", "loss", "learning_rate", "tokens_per_s", "iterations_per_s",
              "peak_memory_gb", "trained_tokens"}  # fmt: skip


def _chat(question: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question},
                         {"role": "assistant", "content": answer}], "tools": []}  # fmt: skip


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Chats of a few lengths in mlx-lm's JSONL layout (train and valid)."""
    data = tmp_path_factory.mktemp("chat-data")
    answers = ["It is a way to pass collaborators in.", "class UserSerializer: pass",
               "async def fetch(): await client.get(url) " * 3, "Find all views."]  # fmt: skip
    rows = [_chat(f"Question {i}?", answers[i % len(answers)]) for i in range(16)]
    (data / "train.jsonl").write_text(to_jsonl(rows))
    (data / "valid.jsonl").write_text(to_jsonl(rows[:4]))
    return data


def _lora(model: Path, data: Path, out: Path, **update: Any) -> W.TrainRequest:
    fields = lora_request(
        str(model), data, out / "adapters", out / "lora.jsonl", iters=6, rank=4,
        learning_rate=1e-2, num_layers=-1, batch_size=2, seed=0, max_seq_length=256,
        save_every=2,
    )  # fmt: skip
    return W.TrainRequest(**(fields | update))


# --- the JSON lines, without mlx -----------------------------------------------------------


def _request(**update: Any) -> W.TrainRequest:
    base = dict(model="m", data="d", adapter_path="a", metrics="m.jsonl", iters=5,
                batch_size=2, learning_rate=1e-3, max_seq_length=64, seed=0,
                fine_tune_type="full", steps_per_report=2,
                learning_rate_knob="bootstrap.main.learning_rate")  # fmt: skip
    return W.TrainRequest(**(base | update))  # ty: ignore[invalid-argument-type]


def _step(it: int, loss: float, seconds: float, tokens: int) -> dict[str, Any]:
    """What mlx-lm's trainer passes the callback at one step (steps_per_report 1)."""
    return {"iteration": it, "train_loss": loss, "learning_rate": 1e-3 / it,
            "iterations_per_second": 1 / seconds, "tokens_per_second": tokens / seconds,
            "trained_tokens": 100 * it, "peak_memory": 0.5}  # fmt: skip


def test_reports_sum_the_steps_of_each_report_as_mlx_lm_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = io.StringIO()
    reporter = W._Reporter(_request(), out)
    reporter.on_val_loss_report({"iteration": 0, "val_loss": 9.5, "val_time": 0.25})
    for it, (loss, seconds) in enumerate([(8.0, 0.1), (6.0, 0.3), (5.0, 0.2), (4.0, 0.2),
                                          (3.0, 0.5)], start=1):  # fmt: skip
        reporter.on_train_loss_report(_step(it, loss, seconds, 100))
    lines = out.getvalue().splitlines()
    assert capsys.readouterr().out.splitlines() == lines  # to stdout too
    rows = [json.loads(line) for line in lines]
    assert rows[0] == {"split": "val", "iteration": 0, "loss": 9.5, "seconds": 0.25}
    assert [(r["iteration"], r["loss"]) for r in rows[1:]] == [(2, 7.0), (4, 4.5), (5, 3.0)]
    first = rows[1]
    assert set(first) == TRAIN_KEYS
    assert first["tokens_per_s"] == pytest.approx(200 / 0.4)
    assert first["iterations_per_s"] == pytest.approx(2 / 0.4)
    assert first["learning_rate"] == pytest.approx(1e-3 / 2)  # the last step's
    assert (first["trained_tokens"], first["peak_memory_gb"]) == (200, 0.5)
    assert rows[3]["iterations_per_s"] == pytest.approx(1 / 0.5)  # the last, a shorter report


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_loss_stops_at_its_own_step(bad: float) -> None:
    out = io.StringIO()
    reporter = W._Reporter(_request(steps_per_report=10, iters=50), out)
    reporter.on_train_loss_report(_step(1, 8.0, 0.1, 100))
    reporter.on_train_loss_report(_step(2, 7.0, 0.1, 100))
    with pytest.raises(W.NonFiniteLoss) as e:
        reporter.on_train_loss_report(_step(3, bad, 0.1, 100))
    assert str(e.value) == (
        f"training loss is {bad} at iteration 3; lower bootstrap.main.learning_rate (now 0.001)"
    )
    (line,) = out.getvalue().splitlines()  # no report was due; the bad step is one
    report = W.Report.parse(line)
    assert report is not None and report.iteration == 3 and not report.finite


def test_a_loss_that_is_bad_before_any_update_points_at_the_data() -> None:
    request = _request(max_seq_length=16)
    for report in (W.Report("val", 0, math.nan), W.Report("train", 1, math.inf)):
        message = W.non_finite_message(report, request)
        assert "before any update, so not the learning rate" in message
        assert "max_seq_length 16" in message
    later = W.non_finite_message(W.Report("val", 19, math.nan), request)
    assert later.startswith("validation loss is nan after iteration 19; lower bootstrap.main")


def test_reports_are_told_from_other_output() -> None:
    train = W.Report("train", 10, 7.85, learning_rate=1e-3, tokens_per_s=1096.0)
    assert W.Report.parse(train.to_json()) == train
    nan = W.Report.parse('{"split": "val", "iteration": 0, "loss": NaN, "seconds": 1.0}')
    assert nan is not None and math.isnan(nan.loss)
    for other in ("Trainable parameters: 18.391% (0.004M/0.022M)", "Loading datasets",
                  '{"not": "a report"}', '{"split": "train"', ""):  # fmt: skip
        assert W.Report.parse(other) is None


def test_the_jsonl_becomes_plot_rows(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    reports = [W.Report("val", 0, 9.61234), W.Report("train", 10, 7.5),
               W.Report("train", 20, 6.25), W.Report("val", 19, 6.5)]  # fmt: skip
    path.write_text("".join(r.to_json() + "\n" for r in reports))
    log = W.TrainLog.read(path)
    assert log.train == [(10, 7.5), (20, 6.25)] and log.val == [(0, 9.61234), (19, 6.5)]
    assert W.loss_rows(log, "model", "main") == [
        {"model": "main", "iteration": 0, "loss": 9.6123, "split": "val"},
        {"model": "main", "iteration": 10, "loss": 7.5, "split": "train"},
        {"model": "main", "iteration": 20, "loss": 6.25, "split": "train"},
        {"model": "main", "iteration": 19, "loss": 6.5, "split": "val"},
    ]


def test_a_request_reads_back_and_refuses_unknown_keys(tmp_path: Path) -> None:
    request = _request(lr_schedule={"name": "cosine_decay", "warmup": 1, "arguments": [1, 2, 3]})
    request.write(tmp_path / "r.json")
    assert W.TrainRequest.read(tmp_path / "r.json") == request
    (tmp_path / "bad.json").write_text(json.dumps({**json.loads((tmp_path / "r.json").read_text()),
                                                   "learning_rte": 1}))  # fmt: skip
    with pytest.raises(ValueError, match="learning_rte"):
        W.TrainRequest.read(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="lora_parameters"):
        _request(fine_tune_type="lora")


def test_the_adapter_config_is_the_one_mlx_lm_lora_saves() -> None:
    from mlx_lm.lora import CONFIG_DEFAULTS

    full = W.cli_config(_request(num_layers=-1))
    assert set(CONFIG_DEFAULTS) <= set(full)
    assert (full["fine_tune_type"], full["num_layers"], full["lora_parameters"]) == (
        "full",
        -1,
        None,
    )
    assert full["optimizer"] == "adam" and full["train"] is True
    assert "metrics" not in full and "learning_rate_knob" not in full
    lora = W.cli_config(_lora(Path("m"), Path("d"), Path("o")))
    assert lora["lora_parameters"] == {"rank": 4, "scale": 20.0, "dropout": 0.0}


def test_loss_plots_render_with_the_loss_template() -> None:
    """dvc.yaml's `template: loss` resolves to .dvc/plots/loss.json: one line per model (or
    run) and split."""
    import yaml
    from dvc_render.vega import VegaRenderer
    from dvc_render.vega_templates import get_template

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage, out in (("bootstrap", "metrics/bootstrap_loss.json"),
                       ("retrain", "metrics/retrain_loss.json")):  # fmt: skip
        (plot,) = [p[out] for p in stages[stage]["plots"] if out in p]
        assert plot == {"cache": False, "template": "loss", "x": "iteration", "y": "loss"}
    rows = [{"model": "main", "iteration": 0, "loss": 9.6, "split": "val"},
            {"model": "draft", "iteration": 10, "loss": 7.1, "split": "train"}]  # fmt: skip
    rows = [{**row, "rev": "workspace"} for row in rows]
    template = get_template("loss", str(ROOT / ".dvc" / "plots"))
    content = VegaRenderer(
        rows, "loss", template=template, x="iteration", y="loss"
    ).get_filled_template()
    assert content["mark"]["type"] == "line"
    assert content["encoding"]["x"]["field"] == "iteration"
    assert content["encoding"]["color"]["field"] == "series"
    assert "datum.model || datum.run" in content["transform"][0]["calculate"]
    assert "<DVC_METRIC" not in json.dumps(content)


# --- real runs on the tiny model (seconds each) ----------------------------------------------


def test_the_worker_reports_json_lines_and_saves_what_mlx_lm_fuse_reads(
    tiny_model_dir: Path, chat_data: Path, tmp_path: Path
) -> None:
    request = _lora(tiny_model_dir, chat_data, tmp_path)
    lines: list[str] = []
    log = W.run_training(
        request, tmp_path / "request.json", label="tiny", blas="auto", threads=1,
        log_path=tmp_path / "lora.log", on_report=lambda r: lines.append(r.to_json()),
    )  # fmt: skip
    # LoRA over 6 iterations: ~20 reports means one per step; validation at the start and the end.
    assert [it for it, _ in log.train] == [1, 2, 3, 4, 5, 6]
    assert [it for it, _ in log.val] == [0, 5]  # steps taken before each validation
    assert W.TrainLog.read(Path(request.metrics)) == log  # the JSONL file holds the same
    assert len(lines) == 8 and lines == [r.to_json() for r in log.reports]
    train = [r for r in log.reports if r.split == "train"]
    assert all(set(json.loads(r.to_json())) == TRAIN_KEYS for r in train)
    assert all(r.tokens_per_s and r.iterations_per_s and r.peak_memory_gb for r in train)
    assert [r.trained_tokens for r in train] == sorted({r.trained_tokens for r in train})
    adapters = Path(request.adapter_path)
    assert sorted(p.name for p in adapters.iterdir()) == sorted(
        ["adapter_config.json", "adapters.safetensors", *(checkpoint_name(n) for n in (2, 4, 6))]
    )
    config = json.loads((adapters / "adapter_config.json").read_text())
    assert (config["fine_tune_type"], config["lora_parameters"]["rank"]) == ("lora", 4)

    fused = tmp_path / "fused"
    run_mlx(fuse_command(str(tiny_model_dir), adapters, fused), blas="auto")
    from mlx_lm import load

    model, _ = load(str(fused))[:2]
    assert len(model.layers) == 1  # ty: ignore[unresolved-attribute]


def test_a_full_fine_tune_fuses_into_a_model(
    tiny_model_dir: Path, chat_data: Path, tmp_path: Path
) -> None:
    log = T.train(
        "full", tiny_model_dir, chat_data, tmp_path, TINY, seed=0, blas="auto", show=False
    )
    assert [it for it, _ in log.train] == [10, 12] and [it for it, _ in log.val] == [0, 11]
    T.fuse(tiny_model_dir, T.adapters_of(tmp_path, "full"), tmp_path / "model",
           tiny_model_dir, "auto")  # fmt: skip
    assert (tmp_path / "model" / "config.json").exists()
    assert W.TrainLog.read(T.reports_of(tmp_path, "full")) == log


def test_a_nan_loss_stops_the_worker_with_the_iteration_and_the_knob(
    tiny_model_dir: Path, chat_data: Path, tmp_path: Path
) -> None:
    """Run as `python -m punie.models.train_worker`: a learning rate of 1e30 overflows within a
    few steps; the worker stops there with exit status 3 and says what to lower."""
    request = _lora(tiny_model_dir, chat_data, tmp_path, learning_rate=1e30, iters=50)
    request.write(tmp_path / "request.json")
    done = subprocess.run(
        [sys.executable, "-m", W.MODULE, str(tmp_path / "request.json")],
        capture_output=True, text=True, env=mlx_env("auto"), timeout=300,
    )  # fmt: skip
    assert done.returncode == W.NON_FINITE_EXIT, done.stderr
    message = re.search(r"train_worker: training stopped: (.*)", done.stderr)
    assert message, done.stderr
    assert re.fullmatch(
        r"training loss is (nan|inf) at iteration \d+; lower conciseness\.lora\.learning_rate "
        r"\(now 1e\+30\)",
        message.group(1),
    )
    last = W.TrainLog.read(Path(request.metrics)).reports[-1]
    assert not last.finite and f"at iteration {last.iteration};" in message.group(1)
    assert last.iteration < 50
    assert not (Path(request.adapter_path) / "adapters.safetensors").exists()


def test_a_nan_loss_is_a_stage_error_naming_the_model(
    tiny_model_dir: Path, chat_data: Path, tmp_path: Path
) -> None:
    from punie.serving.runtime import live_children

    hot = TINY.model_copy(update={"learning_rate": 1e30, "iters": 200})
    job = T.Job("main", tiny_model_dir, hot, knob="bootstrap.main.learning_rate")
    with pytest.raises(StageError) as e:
        T.train_many([job], chat_data, tmp_path, seed=0, blas="auto", show=False)
    assert re.fullmatch(
        r"main: training loss is (nan|inf) at iteration \d+; lower "
        r"bootstrap\.main\.learning_rate \(now 1e\+30\)",
        str(e.value),
    ), str(e.value)
    assert not live_children()


def test_an_answer_cut_off_by_max_seq_length_is_caught_before_training(
    tiny_model_dir: Path, chat_data: Path, tmp_path: Path
) -> None:
    """The injected NaN: with the prompt masked, examples truncated before their answer score
    no token, and the first validation is 0/0."""
    request = _lora(tiny_model_dir, chat_data, tmp_path, max_seq_length=4)
    with pytest.raises(StageError, match=r"^lora: validation loss is nan at the start, before"):
        W.run_training(request, tmp_path / "r.json", label="lora", blas="auto")


# --- the same run as `mlx_lm lora` ---------------------------------------------------------


def cli_args(request: W.TrainRequest, adapter_path: Path, config: Path) -> list[str]:
    """`mlx_lm lora` arguments for `request` (as the stages ran it before the worker)."""
    config.write_text(json.dumps({"lr_schedule": request.lr_schedule,
                                  "lora_parameters": request.lora_parameters}))  # fmt: skip
    r = request
    return [
        "lora", "--model", r.model, "--train", "--data", r.data,
        "--fine-tune-type", r.fine_tune_type, "--num-layers", str(r.num_layers),
        "--batch-size", str(r.batch_size), "--iters", str(r.iters),
        "--learning-rate", str(r.learning_rate), "--max-seq-length", str(r.max_seq_length),
        "--steps-per-report", str(r.steps_per_report), "--steps-per-eval", str(r.steps_per_eval),
        "--val-batches", str(r.val_batches), "--save-every", str(r.save_every),
        "--seed", str(r.seed), "--adapter-path", str(adapter_path), "-c", str(config),
        *(["--mask-prompt"] if r.mask_prompt else []),
    ]  # fmt: skip


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_CLI_TRAIN = re.compile(r"^\s*(\d+)\s+(\d+\.\d+) [▼▲]")


@pytest.mark.slow
@pytest.mark.parametrize("job", ["bootstrap", "retrain"])
def test_worker_trains_as_mlx_lm_lora_for_the_bootstrap_and_retrain_jobs(
    job: str, tiny_model_dir: Path, chat_data: Path, tmp_path: Path
) -> None:
    """Same job, same seed: the CLI's printed train losses equal the worker's to the 3
    decimals it prints, and the saved tensors (final and checkpoints) are identical."""
    import mlx.core as mx

    if job == "bootstrap":  # full fine-tune, cosine schedule with warm-up, reports every 10
        request = T.train_request(tiny_model_dir, chat_data, tmp_path / "w", TINY.model_copy(
            update={"iters": 30}), seed=3, iters=30)  # fmt: skip
    else:  # LoRA on the top layers, checkpoints
        # mlx-lm's CLI has no answer-window loss: compare the loss both compute.
        request = _lora(
            tiny_model_dir, chat_data, tmp_path / "w", iters=8, seed=3, answer_window=False
        )
    cli: list[tuple[int, float]] = []

    def on_line(line: str) -> None:
        if m := _CLI_TRAIN.match(_ANSI.sub("", line)):
            cli.append((int(m.group(1)), float(m.group(2))))

    cli_dir = tmp_path / "cli"
    run_mlx(cli_args(request, cli_dir, tmp_path / "cli.yaml"), blas="auto", threads=1,
            on_line=on_line)  # fmt: skip
    log = W.run_training(request, tmp_path / "request.json", label=job, blas="auto", threads=1)
    assert [it for it, _ in cli] == [it for it, _ in log.train]
    assert cli == [(it, round(loss, 3)) for it, loss in log.train]
    names = sorted(p.name for p in cli_dir.glob("*.safetensors"))
    assert names == sorted(p.name for p in Path(request.adapter_path).glob("*.safetensors"))
    for name in names:
        ours, theirs = mx.load(str(Path(request.adapter_path) / name)), mx.load(str(cli_dir / name))
        assert sorted(ours) == sorted(theirs)  # ty: ignore[invalid-argument-type]
        assert all(mx.array_equal(ours[k], theirs[k]).item() for k in ours)  # ty: ignore


def test_the_answer_window_loss_equals_mlx_lms_masked_loss(
    tiny_model_dir: Path, chat_data: Path
) -> None:
    """The same loss and token count as mlx-lm's default loss with the prompt masked, on a
    batch of chats of different lengths, with the head run on the answers only (in a child:
    mlx is not imported into the test process)."""
    code = f"""
import types, mlx.core as mx
from mlx_lm import load
from mlx_lm.tuner.datasets import CacheDataset, load_dataset
from mlx_lm.tuner.trainer import default_loss, iterate_batches
from punie.models.train_worker import answer_span, answer_window_loss
model, tok = load({str(tiny_model_dir)!r})[:2]
args = types.SimpleNamespace(data={str(chat_data)!r}, train=True, test=False, mask_prompt=True,
    hf_dataset=False, prompt_feature="prompt", completion_feature="completion",
    chat_feature="messages", text_feature="text")
train, valid, _ = load_dataset(args, tok)
data = CacheDataset(train)
window = answer_span([data], 640)
batch, lengths = next(iterate_batches(data, 4, 640))
a, n = default_loss(model, batch, lengths)
b, m = answer_window_loss(model, batch, lengths, window=window)
assert int(n) == int(m), (n, m)
assert abs(a.item() - b.item()) < 1e-4, (a.item(), b.item())
assert window < batch.shape[1] - 1, (window, batch.shape)  # the head ran on fewer positions
print("ok", a.item(), b.item(), window, batch.shape[1])
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=mlx_env("auto")
    )
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr[-2000:]

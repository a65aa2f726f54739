"""Bootstrap mechanics: trainer arguments and progress parsing, loadable models, and a tiny
real training run whose model the real server answers with a parsed tool call."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import httpx
import pytest

from punie import paths
from punie.agent.production import capture_requests
from punie.agent.tools import Workspace
from punie.commands import train_cost
from punie.models import corpus as C
from punie.models import embedded as E
from punie.models import train as T
from punie.models.corpus import render_spec, to_jsonl
from punie.models.modelgen import Qwen3Shape, init_model_dir
from punie.models.tokenizer import save_tokenizer, train_tokenizer
from punie.params import ModelShape
from punie.serving.config import ServerConfig
from punie.serving.server import ServerProcess
from punie.stages import bootstrap as B

from .test_corpus import DIRECT_SPEC, TOOL_SPEC, WS

TINY = ModelShape(
    hidden_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
    intermediate_size=128, iters=40, batch_size=4, learning_rate=1e-2, max_seq_length=640,
    val_batches=-1, blas_threads=1,
)  # fmt: skip


def test_train_request_trains_every_layer_on_the_answer_only(tmp_path: Path) -> None:
    r = T.train_request(tmp_path / "m", tmp_path / "d", tmp_path / "a", TINY, seed=3, iters=40)
    assert (r.fine_tune_type, r.num_layers, r.mask_prompt) == ("full", -1, True)
    assert (r.seed, r.iters, r.max_seq_length, r.batch_size) == (3, 40, 640, 4)
    assert (r.steps_per_report, r.steps_per_eval, r.save_every) == (10, 40, 41)  # no checkpoints
    assert r.lr_schedule is not None
    assert r.lr_schedule["name"] == "cosine_decay" and r.lr_schedule["warmup"] == 4
    assert r.lr_schedule["arguments"] == [1e-2, 36, 1e-3]  # down to 10 % after the warm-up
    assert r.metrics == str(tmp_path / "a.jsonl")  # its reports, beside the adapters
    assert T.reports_of(tmp_path, "main") == tmp_path / "main-adapters.jsonl"


def test_model_directory_loads_in_mlx_lm_with_tool_calling(tiny_model_dir: Path) -> None:
    from mlx_lm import load

    model, tok = load(str(tiny_model_dir))
    assert tok.has_tool_calling and tok.tool_call_start == "<tool_call>"
    assert len(model.layers) == 1


@pytest.mark.slow
def test_trained_model_gets_a_parsed_tool_call_from_the_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Train a tiny model (40 iterations) on one tool-call example; the real server, given the
    agent's real request, must return it as an OpenAI tool call. Off a terminal (as here, and
    in CI) the training progress comes as plain lines, since no bar is drawn."""
    rows = asyncio.run(render_spec(TOOL_SPEC, WS, random.Random(0)))[:1]
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text(to_jsonl(rows * 16))
    (data / "valid.jsonl").write_text(to_jsonl(rows * 4))
    tok_dir, init, out = tmp_path / "tok", tmp_path / "init", tmp_path / "model"
    save_tokenizer(train_tokenizer(E.corpus_texts(data), 500, split_words=False), tok_dir)
    init_model_dir(init, Qwen3Shape(64, 1, 2, 1, 128), tok_dir, embed_scale=E.embed_scale(TINY))
    log = T.train("tiny", init, data, tmp_path, TINY, seed=0, blas="auto")
    assert log.train and log.train[-1][1] < log.train[0][1]
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("tiny: ")]
    assert [x.split()[1] for x in lines] == ["10/40", "20/40", "30/40", "40/40"], lines
    T.fuse(init, tmp_path / "tiny-adapters", out, tok_dir, blas="auto")

    body = asyncio.run(
        capture_requests(TOOL_SPEC.query, Workspace(WS.root), (TOOL_SPEC.tool, TOOL_SPEC.args), "x")
    )[0]

    async def ask() -> dict:
        config = ServerConfig(model_path=str(out), temp=0.0, max_tokens=64)
        async with (
            ServerProcess(config, log_path=tmp_path / "server.log") as server,
            httpx.AsyncClient(timeout=60) as client,
        ):
            r = await client.post(f"{server.base_url}/chat/completions", json=body)
            r.raise_for_status()
            return r.json()["choices"][0]["message"]

    message = asyncio.run(ask())
    calls = message.get("tool_calls") or []
    assert calls, message
    assert calls[0]["function"]["name"] == "run_command"
    assert json.loads(calls[0]["function"]["arguments"]) == TOOL_SPEC.args


def test_answer_draws_pick_a_fixed_share_of_tool_queries_only() -> None:
    direct, tool = C.Spec("What is X?", None), C.Spec("Find X", "run_command", {"command": "ls"})
    specs = [direct, tool] * 200
    drawn = C.answer_draws(specs, 0.5, seed=0)
    assert not any(d for d, s in zip(drawn, specs, strict=True) if s.tool is None)
    assert 70 < sum(drawn) < 130  # ~half of the 200 tool queries
    assert C.answer_draws(specs, 0.5, seed=0) == drawn  # fixed per seed
    assert sum(C.answer_draws(specs, 1.0, seed=0)) == 200
    assert not any(C.answer_draws(specs, 0.0, seed=0))


def test_undrawn_tool_query_renders_its_call_only_without_running_the_tool() -> None:
    spec = C.Spec("Find X", "run_command", {"command": "false-command-that-would-fail"})
    rows = asyncio.run(render_spec(spec, WS, random.Random(0), answer=False))
    assert [r["kind"] for r in rows] == ["tool_call"]
    full = asyncio.run(render_spec(TOOL_SPEC, WS, random.Random(0)))
    alone = asyncio.run(render_spec(TOOL_SPEC, WS, random.Random(0), answer=False))
    assert alone == full[:1]  # the first request does not depend on the reply


def test_long_tool_outputs_lose_their_answer_row_only() -> None:
    def group(output: str) -> list[dict]:
        call = {"kind": "tool_call", "messages": [{"role": "user", "content": "q"}]}
        messages = [{"role": "tool", "content": output}, {"role": "assistant", "content": "a"}]
        return [call, {"kind": "tool_answer", "messages": messages}]

    direct = [{"kind": "direct", "messages": [{"role": "user", "content": "q"}]}]
    groups = [direct, group("x" * 10), group("x" * 50)]
    assert C.drop_long_answers(groups, 20) == [direct, group("x" * 10), group("x" * 50)[:1]]
    assert C.drop_long_answers(groups, 0) == groups


def test_train_request_validates_on_the_configured_batches(tmp_path: Path) -> None:
    few = TINY.model_copy(update={"val_batches": 2})
    r = T.train_request(tmp_path / "m", tmp_path / "d", tmp_path / "a", few, seed=0, iters=40)
    assert r.val_batches == 2


def test_a_failing_trainer_stops_the_other_at_once(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Main and draft train side by side; when one trainer fails the other is killed, so
    the stage fails fast and leaves no process behind."""
    import time

    from punie.serving.runtime import MlxCommandError, live_children

    rows = asyncio.run(render_spec(TOOL_SPEC, WS, random.Random(0)))
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text(to_jsonl(rows * 8))
    (data / "valid.jsonl").write_text(to_jsonl(rows * 2))
    # The fixture's 400-token vocabulary spells these chats out long: room for whole answers
    # (cut off, they would score no token and stop the run as a NaN loss).
    roomy = TINY.model_copy(update={"max_seq_length": 4096})
    endless = T.Job("long", tiny_model_dir, roomy, iters=100_000)
    broken = T.Job("broken", tmp_path / "no-such-model", TINY, iters=10)
    t0 = time.perf_counter()
    with pytest.raises(MlxCommandError, match=r"train_worker .*broken-request\.json"):
        T.train_many([endless, broken], data, tmp_path, seed=0, blas="auto", show=False)
    assert time.perf_counter() - t0 < 60
    assert not live_children()


def test_distilled_rows_keep_the_prompt_and_take_the_main_models_answer(
    tiny_model_dir: Path,
) -> None:
    from mlx_lm import load

    from punie.models.distill import distill, row_prompt
    from punie.serving.render import prompt_ids

    rows = asyncio.run(render_spec(TOOL_SPEC, WS, random.Random(0)))
    out = distill(tiny_model_dir, rows, max_tokens=8)
    assert len(out) == len(rows)
    tokenizer = load(str(tiny_model_dir))[1]
    for row, new in zip(rows, out, strict=True):
        assert new["messages"][:-1] == row["messages"][:-1]
        assert new["tools"] == row["tools"]
        assert new["messages"][-1]["role"] == "assistant"
        assert isinstance(new["messages"][-1]["content"], str)
        # the prompt the draft learns from is the one the main model answered
        assert prompt_ids(tokenizer, row_prompt(new)) == prompt_ids(tokenizer, row_prompt(row))


def test_teacher_answers_split_over_processes_come_back_in_order(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Two teacher processes answer halves of the rows; row i of the result is still the
    answer to prompt i (distinct prompts, so a swap or a lost shard shows)."""
    from punie.serving.runtime import live_children

    rows = [
        r
        for spec in (TOOL_SPEC, DIRECT_SPEC)
        for r in asyncio.run(render_spec(spec, WS, random.Random(0)))
    ]
    one = T.teacher_answers(
        tiny_model_dir, rows, tmp_path / "one", max_tokens=4, processes=1, blas="auto", threads=1
    )
    two = T.teacher_answers(
        tiny_model_dir, rows, tmp_path / "two", max_tokens=4, processes=2, blas="auto", threads=1
    )
    assert len(rows) == 3
    assert [r["messages"][:-1] for r in two] == [r["messages"][:-1] for r in rows]
    assert two == one  # greedy: the split changes nothing
    assert not live_children()


def test_the_stage_peak_memory_counts_its_trainers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """metrics/bootstrap.json's peak_rss_mb is the whole process tree's, not this process's:
    a child holding 300 MB (standing in for a trainer) must show in it."""
    import subprocess
    import sys

    from punie.params import load_params

    hold = "b = bytearray(300 * 2**20); import time; time.sleep(2)"

    def fake_build(params: object) -> dict[str, object]:
        subprocess.run([sys.executable, "-c", hold], check=True)
        return {"total_seconds": 2.0}

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(B, "_build", fake_build)
    import psutil

    params = load_params(Path(__file__).parents[1] / "params.yaml")
    own_mb = psutil.Process().memory_info().rss / 2**20
    metrics = B.build(params)
    assert own_mb + 250 <= metrics["peak_rss_mb"] < own_mb + 4096
    assert json.loads(paths.BOOTSTRAP_METRICS.read_text())["peak_rss_mb"] == metrics["peak_rss_mb"]


def test_step_cost_times_each_padded_length_and_shares_add_up(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """mlx-lm's own batching and training step on a corpus of short and long chats: one
    timed row per padded length, the batches of one epoch all counted."""
    from punie.measurement.step_cost import epoch_seconds, epoch_shares, measure

    def chat(words: int) -> dict:
        text = " ".join(["def save(self): pass"] * words)
        return {"messages": [{"role": "user", "content": "Show it"},
                             {"role": "assistant", "content": text}], "tools": []}  # fmt: skip

    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text(to_jsonl([chat(2)] * 8 + [chat(30)] * 4))
    (data / "valid.jsonl").write_text(to_jsonl([chat(2)] * 2))
    request = {"model": str(tiny_model_dir), "data": str(data), "batch_size": 2,
               "max_seq_length": 640, "learning_rate": 1e-3, "reps": 1,
               "hidden_size": 32, "intermediate_size": 64}  # fmt: skip
    result = measure(request)
    rows = result["rows"]
    assert len(rows) == 2 and rows[0]["length"] < rows[1]["length"]
    assert [r["batches"] for r in rows] == [4, 2]
    assert all(r["step_s"] > 0 for r in rows)
    shares = epoch_shares(rows)
    assert sum(r["share"] for r in shares) == pytest.approx(1.0)
    assert epoch_seconds(rows) == pytest.approx(4 * rows[0]["step_s"] + 2 * rows[1]["step_s"])
    kernels = ("exp_ns_per_element", "numpy_exp_ns_per_element", "multiply_ns_per_element")
    assert all(result[k] > 0 for k in kernels) and result["matmul_gflops"] > 0


def test_step_cost_needs_the_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from punie.errors import StageError
    from punie.params import load_params

    params = load_params(Path(__file__).parents[1] / "params.yaml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StageError, match="run `punie-lab bootstrap` first"):
        train_cost.step_cost(params)


@pytest.mark.slow
def test_bootstrap_plots_the_loss_curve_of_every_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stage on tiny shapes and a one-example corpus (the agent's rendering replaced):
    main and draft trained side by side, the draft distilled on the main model's answers, and
    metrics/bootstrap_loss.json holding each run's train and validation losses."""
    from punie.params import load_params

    rows = asyncio.run(render_spec(TOOL_SPEC, WS, random.Random(0)))[:1]

    def fake_corpus(params: object) -> dict[str, int]:
        paths.CORPUS.mkdir(parents=True)
        for split, n in (("train", 16), ("valid", 4), ("test", 4)):
            (paths.CORPUS / f"{split}.jsonl").write_text(to_jsonl(rows * n))
        return {"corpus_train": 16}

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(B, "build_corpus", fake_corpus)
    params = load_params(Path(__file__).parents[1] / "params.yaml")
    b = params.bootstrap
    tiny = TINY.model_copy(update={"iters": 20})
    distill = b.distill.model_copy(
        update={"rows": 4, "valid_rows": 4, "max_tokens": 4, "iters": 8, "processes": 1}
    )
    bootstrap = b.model_copy(
        update={"main": tiny, "draft": tiny, "distill": distill,
                "tokenizer": b.tokenizer.model_copy(update={"vocab_size": 500})}
    )  # fmt: skip
    metrics = B.build(params.model_copy(update={"bootstrap": bootstrap}))
    assert metrics["main_train_loss"] < 9 and metrics["draft_distill_valid_loss"] is not None
    curve = json.loads(paths.BOOTSTRAP_LOSS.read_text())
    assert {tuple(sorted(row)) for row in curve} == {("iteration", "loss", "model", "split")}
    seen = {(r["model"], r["split"]): [] for r in curve}
    for r in curve:
        seen[(r["model"], r["split"])].append(r["iteration"])
    assert seen == {
        ("main", "val"): [0, 19], ("main", "train"): [10, 20],
        ("draft", "val"): [0, 19], ("draft", "train"): [10, 20],
        ("draft-distill", "val"): [0, 7], ("draft-distill", "train"): [8],
    }  # fmt: skip
    main = [r["loss"] for r in curve if r["model"] == "main" and r["split"] == "train"]
    assert main[-1] == round(metrics["main_train_loss"], 4)

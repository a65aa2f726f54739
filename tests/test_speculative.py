"""Speculative decoding: theory, acceptance counting, choice rule, aggregation, draft checks."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml

from punie.agent.production import build_agent, openai_model
from punie.agent.tools import Workspace, workspace_toolset
from punie.errors import StageError
from punie.measurement.latency import LATENCY_KEYS
from punie.measurement.levers import server_config
from punie.measurement.speculative import (
    Acceptance,
    ConfigRow,
    acceptance_from_flags,
    acceptance_needed,
    choose_configuration,
    draft_acceptance_rate,
    expected_tokens_per_step,
    main_passes,
    mean_acceptance_length,
    predicted_speedup,
    turn_kind,
    vllm_acceptance,
)
from punie.measurement.text_clock import text_decode
from punie.models.modelgen import Qwen3Shape, init_model_dir
from punie.models.tokenizer import save_tokenizer, train_tokenizer
from punie.params import Params, load_params
from punie.serving.preflight import TokenizerMismatch, check_draft_tokenizer
from punie.serving.server import build_server_command
from punie.stages import speculative as stage
from punie.stages.speculative_report import report, step_rest

from .chat import completion

ROOT = Path(__file__).resolve().parents[1]


def servers_of(model: Path) -> list[int]:
    """Running `mlx_lm server` processes for `model` (other sessions share the machine)."""
    out = subprocess.run(
        ["pgrep", "-f", f"mlx_lm server --model {model}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return [int(p) for p in out.split()]


def repo_params(**speculative: Any) -> Params:
    params = load_params(ROOT / "params.yaml")
    return params.model_copy(
        update={"speculative": params.speculative.model_copy(update=speculative)}
    )


# --- Theory and acceptance -----------------------------------------------------------------


def test_predicted_speedup_matches_leviathan_limits() -> None:
    # Nothing accepted: every step costs k draft tokens plus a main pass for one token.
    assert predicted_speedup(0.0, 3, 0.1) == pytest.approx(1 / 1.3)
    # Everything accepted by a free draft: k+1 tokens per main pass.
    assert predicted_speedup(1.0, 4, 0.0) == pytest.approx(5.0)
    assert predicted_speedup(0.8, 3, 0.05) == pytest.approx((1 - 0.8**4) / (0.2 * 1.15))
    # A verify pass costing twice a single-token pass halves the gain.
    assert predicted_speedup(0.8, 3, 0.0, verify_cost=2.0) == pytest.approx(
        predicted_speedup(0.8, 3, 0.0) / 2
    )
    assert expected_tokens_per_step(0.5, 2) == pytest.approx(1.75)


def test_acceptance_counts_steps_from_draft_flags() -> None:
    t, f = True, False
    # k=3: steps keep 2, 0, 3 drafts; a trailing kept draft (EOS inside a run) is a kept
    # trial of a fourth step (it cost a main pass), not a rejection.
    acc = acceptance_from_flags([t, t, f, f, t, t, t, f, t], 3)
    assert (acc.steps, acc.accepted, acc.rejections) == (4, 6, 2)
    assert acc.rate == pytest.approx(6 / 8)
    assert acc.mean_accepted == pytest.approx(6 / 4)
    assert acc.tokens_per_step == pytest.approx((6 + 4) / 4)
    # A tool call whose closing tags are all kept drafts never keeps more than it drafted.
    tool_call = acceptance_from_flags([t, t, f, t, t], 2)
    assert tool_call.accepted_fraction <= 1.0
    assert tool_call.steps == main_passes([t, t, f, t, t])
    # Hitting max_tokens: the last (possibly short) step is dropped.
    cut = acceptance_from_flags([t, t, f, t, f], 2, truncated=True)
    assert (cut.steps, cut.accepted, cut.rejections) == (1, 2, 0)
    assert (acc + acc).steps == 8
    # vLLM's names for the same steps: 1 + kept per step, and kept / drafted (12 drafted).
    assert mean_acceptance_length(acc.accepted, acc.steps) == acc.tokens_per_step == 2.5
    assert draft_acceptance_rate(acc.accepted, acc.drafted) == acc.accepted_fraction == 0.5
    assert acc.accepted_fraction < acc.rate  # drafts after a rejection are never checked
    assert vllm_acceptance(acc.summary()) == {
        "mean_acceptance_length": 2.5,
        "draft_acceptance_rate": 0.5,
    }
    assert vllm_acceptance({}) == {"mean_acceptance_length": None, "draft_acceptance_rate": None}
    with pytest.raises(ValueError, match="more than k"):
        acceptance_from_flags([t, t, t, f], 2)
    assert Acceptance(2).rate == 0.0


def test_turn_kind_splits_tool_calls_direct_answers_and_answers_from_tool_output() -> None:
    user = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]
    after_tool = [*user, {"role": "assistant", "content": ""}, {"role": "tool", "content": "x"}]
    assert turn_kind(user, ' <tool_call>{"name": "read_file"}', "<tool_call>") == "tool_call"
    assert turn_kind(user, "A closure is ... <tool_call>", "<tool_call>") == "direct"
    assert turn_kind(after_tool, "<tool_call>", "<tool_call>") == "answer"


def test_main_passes_counts_steps_including_a_trailing_run_of_kept_drafts() -> None:
    t, f = True, False
    assert main_passes([t, t, f, f, t, f]) == 3
    assert main_passes([t, f, t, t]) == 2  # EOS inside kept drafts: that step is a pass too
    assert main_passes([]) == 0


# --- Choice rule on recorded rows ----------------------------------------------------------

BASE = ConfigRow(
    None, e2e_mean_s=2.0, decode_tps=100, accuracy=1.0, tool_accuracy=1.0, peak_rss_mb=500
)


def row(k: int, e2e: float, accuracy: float = 1.0, rss: float = 700) -> ConfigRow:
    return ConfigRow(k, e2e, 150, accuracy, 1.0, rss)


def test_choice_is_the_fastest_with_unchanged_accuracy() -> None:
    choice = choose_configuration(BASE, [row(2, 1.6), row(3, 1.3), row(5, 1.4)], 1000)
    assert choice.k == 3
    assert set(choice.rejected) == {2, 5}


def test_choice_skips_lower_accuracy_and_over_budget() -> None:
    rows = [row(2, 1.5), row(3, 1.1, accuracy=0.9), row(5, 1.2, rss=1200)]
    choice = choose_configuration(BASE, rows, memory_budget_mb=1000)
    assert choice.k == 2
    assert "accuracy" in choice.rejected[3]
    assert "budget" in choice.rejected[5]


def test_choice_text_holds_no_timings_so_a_re_timed_run_keeps_the_choice_file() -> None:
    first = choose_configuration(BASE, [row(2, 1.6), row(3, 1.3), row(5, 1.9, rss=1200)], 1000)
    again = choose_configuration(BASE, [row(2, 1.5), row(3, 1.2), row(5, 1.7, rss=1300)], 1000)
    assert (first.k, first.reason, first.rejected) == (again.k, again.reason, again.rejected)
    assert first.evidence != again.evidence and "1.300 s" in first.evidence


def test_choice_is_no_draft_when_none_is_faster() -> None:
    choice = choose_configuration(BASE, [row(2, 2.0), row(3, 2.4)], 1000)
    assert choice.k is None
    assert "not faster" in choice.rejected[2]
    assert choose_configuration(BASE, [row(2, 1.0, rss=2000)], 1000).k is None


# --- Aggregation ---------------------------------------------------------------------------


def _summary(e2e: float, tps: float, rss: float, accuracy: float = 1.0) -> dict[str, Any]:
    return {
        # vLLM's per-request latencies (`latency_stats`), proportional to e2e here
        **{key: e2e / 100 for key in LATENCY_KEYS},
        "e2e_mean_s": e2e,
        "e2e_median_s": e2e,
        "generation_mean_s": e2e * 0.9,
        "decode_tps": tps,
        "accuracy": accuracy,
        "tool_accuracy": 1.0,
        "peak_rss_mb": rss,
        "n_queries": 4,
    }


def _acceptance(a: float) -> dict[str, Any]:
    return {
        "acceptance_rate": a,
        "steps": 10,
        "drafted": 30,
        "accepted": 15,
        "mean_accepted_per_step": 1.5,
        "verify_cost": 1.3,
        "step_cost": 2.0,
        "by_kind": {
            "tool_call": {"prompts": 3, "tokens": 30, "acceptance_rate": 0.9},
            "direct": {"prompts": 1, "tokens": 50, "acceptance_rate": 0.4},
        },
        "inprocess_speedup": 1.4,
        "token_mismatches": 0,
        "mismatch_example": None,
    }


def write_results(out: Path, ks: dict[int, tuple[float, float]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cost = {
        "main_token_s": 0.005,
        "draft_token_s": 0.001,
        "cost_ratio": 0.2,
        "prompts": 4,
        "prompt_tokens_mean": 300.0,
        "verify_pass_s": {},
    }
    base = {
        "main": "models/main",
        "draft": "models/draft",
        "method": "test",
        "cost": cost,
        "summary": _summary(2.0, 100.0, 400.0),
    }
    (out / "baseline.json").write_text(json.dumps({**base, "k": None}))
    control = {**base, "k": 0, "summary": _summary(2.0, 110.0, 450.0), "answer_mismatches": 0}
    (out / "control_k0.json").write_text(json.dumps(control))
    for k, (e2e, tps) in ks.items():
        data = {
            **base,
            "k": k,
            "summary": _summary(e2e, tps, 450.0),
            "answer_mismatches": 0,
            "mismatch_example": None,
            "acceptance": _acceptance(0.8),
        }
        (out / f"k{k}.json").write_text(json.dumps(data))


def outputs(base: Path) -> dict[str, Path]:
    return {
        "metrics": base / "m.json",
        "by_k": base / "by_k.json",
        "choice": base / "c.json",
        "report": base / "r.md",
    }


def test_report_aggregates_only_the_current_k_values(tmp_path: Path) -> None:
    # k7 is left over from an earlier sweep and would win: it must not leak in.
    write_results(tmp_path / "res", {2: (1.5, 150.0), 3: (1.4, 160.0), 7: (0.5, 900.0)})
    out = outputs(tmp_path)
    report(repo_params(num_draft_tokens=[2, 3]), tmp_path / "res", out)
    metrics = json.loads(out["metrics"].read_text())
    assert metrics["best_k"] == 3
    assert metrics["best_speedup"] == pytest.approx(1.6)
    assert metrics["baseline_e2e_mean_s"] == 2.0
    assert metrics["server_peak_rss_mb_max"] == 450.0
    assert metrics["predicted_speedup_best_k"] == pytest.approx(
        round(predicted_speedup(0.8, 3, 0.2), 4)
    )
    assert not any("k7" in key for key in metrics)
    assert metrics["control_over_baseline_decode"] == pytest.approx(1.1)
    assert metrics["best_speedup_vs_control"] == pytest.approx(round(160 / 110, 4))
    assert [r["k"] for r in json.loads(out["by_k"].read_text())] == [2, 3]
    choice = json.loads(out["choice"].read_text())
    assert choice["draft"] == "models/draft" and choice["num_draft_tokens"] == 3
    assert "k = 3" in out["report"].read_text()
    # Acceptance per turn kind and the step's parts travel with the best k.
    assert metrics["acceptance_rate_best_k_direct"] == 0.4
    assert metrics["step_cost_best_k"] == 2.0
    assert metrics["step_rest_best_k"] == pytest.approx(2.0 - 3 * 0.2 - 1.3)
    assert "| direct | 1 | 50 | 0.40 | 0.40 |" in out["report"].read_text()
    # vLLM's acceptance names beside Leviathan's a, per k and at the best k.
    assert metrics["acceptance_rate_k3"] == 0.8
    assert metrics["draft_acceptance_rate_k3"] == 0.5  # 15 kept of 30 drafted
    assert metrics["mean_acceptance_length_k3"] == 2.5  # 1 + 15 kept / 10 steps
    assert metrics["draft_acceptance_rate_best_k"] == 0.5
    assert metrics["mean_acceptance_length_best_k"] == 2.5
    # vLLM's latencies of the baseline and the best k; the machine they hold on.
    assert metrics["itl_median_s_baseline"] == 0.02 and metrics["itl_median_s_best_k"] == 0.014
    assert metrics["e2el_p99_s_best_k"] == 0.014
    assert {"machine_cpu", "machine_cores", "machine_blas"} <= set(metrics)
    rows = json.loads(out["by_k"].read_text())
    assert rows[0]["draft_acceptance_rate"] == 0.5 and rows[0]["acceptance_rate"] == 0.8
    text = out["report"].read_text()
    assert "| 3 | 0.80 | 0.50 | 2.50 | 1.50 |" in text  # a, vLLM's rate and length, kept/step
    assert "Leviathan et al.'s per-token acceptance probability" in text
    assert "| ITL (inter-token latency) |" in text and "20.0 / 20.0" in text


def test_step_parts_add_up_to_the_measured_step() -> None:
    row = {"k": 2, "cost_ratio": 0.15, "verify_cost": 1.25, "step_cost": 1.9}
    assert 2 * 0.15 + 1.25 + step_rest(row) == pytest.approx(1.9)


def test_report_refuses_a_missing_k_and_says_no_draft(tmp_path: Path) -> None:
    write_results(tmp_path / "res", {2: (2.5, 90.0)})
    with pytest.raises(StageError, match=r"k4\.json: missing"):
        report(repo_params(num_draft_tokens=[2, 4]), tmp_path / "res", outputs(tmp_path))
    report(repo_params(num_draft_tokens=[2]), tmp_path / "res", outputs(tmp_path))
    choice = json.loads(outputs(tmp_path)["choice"].read_text())
    assert choice["draft"] is None and choice["num_draft_tokens"] is None
    # The k=0 control is required only when params ask for it.
    (tmp_path / "res" / "control_k0.json").unlink()
    with pytest.raises(StageError, match=r"control_k0\.json: missing"):
        report(repo_params(num_draft_tokens=[2]), tmp_path / "res", outputs(tmp_path))
    report(repo_params(num_draft_tokens=[2], control=False), tmp_path / "res", outputs(tmp_path))
    assert "control_decode_tps" not in json.loads(outputs(tmp_path)["metrics"].read_text())


# --- Server commands and per-request settings carry k --------------------------------------


def test_server_commands_baseline_has_no_draft_and_draft_server_has_k() -> None:
    params = repo_params()
    base = build_server_command(server_config(params, "models/main"))
    assert "--draft-model" not in base and "--num-draft-tokens" not in base
    cmd = build_server_command(server_config(params, "models/main", "models/draft", 5))
    assert cmd[cmd.index("--draft-model") + 1] == "models/draft"
    assert cmd[cmd.index("--num-draft-tokens") + 1] == "5"


def test_each_request_carries_its_k() -> None:
    bodies: list[dict[str, Any]] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        bodies.append(json.loads(request.content))
        usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        return httpx2.Response(200, json=completion("hi", usage))

    async def go(k: int | None) -> None:
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(answer)) as client:
            model = openai_model("http://test.invalid/v1", http_client=client)
            ws = Workspace(ROOT / "data" / "workspace")
            agent = build_agent(model, workspace_toolset(ws), extra_body=stage.request_settings(k))
            await agent.run("hello")

    asyncio.run(go(3))
    asyncio.run(go(None))
    assert bodies[0]["num_draft_tokens"] == 3
    assert "num_draft_tokens" not in bodies[1]


def test_staggered_schedule_runs_every_case_once_per_configuration() -> None:
    pairs = stage.staggered_schedule(5, 4)
    assert sorted(pairs) == [(i, j) for i in range(4) for j in range(5)]
    # The draft configurations never run the same case back to back on one server.
    for a, b in itertools.pairwise(pairs):
        assert a[1] != b[1] or a[0] == 0 or b[0] == 0
    assert pairs[:3] == [(0, 0), (0, 1), (1, 0)]


def test_text_decode_skips_the_first_burst() -> None:
    # A speculative step emits its kept drafts in one burst right after the first chunk.
    stamps = [1.0, 1.0001, 1.0002, 1.010, 1.020, 1.0201]
    assert text_decode(stamps) == (3, pytest.approx(0.0201))
    assert text_decode([1.0]) == (0, 0.0)


# --- Draft tokenizer check -----------------------------------------------------------------


@pytest.fixture(scope="module")
def foreign_draft_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model whose tokenizer was trained on other text (different vocabulary)."""
    tok_dir = tmp_path_factory.mktemp("foreign-tokenizer")
    texts = ["SELECT name FROM users WHERE id = 1;", 'fn main() { println!("hi"); }'] * 20
    save_tokenizer(train_tokenizer(texts, vocab_size=350), tok_dir)
    out = tmp_path_factory.mktemp("foreign-draft")
    init_model_dir(out, Qwen3Shape(16, 1, 1, 1, 32), tok_dir, seed=2)
    return out


def test_matching_tokenizers_pass(tiny_model_dir: Path, tiny_draft_dir: Path) -> None:
    check_draft_tokenizer(str(tiny_model_dir), str(tiny_draft_dir))


def test_tokenizers_compared_by_vocabulary_when_no_fingerprint(
    tiny_model_dir: Path, foreign_draft_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The path for tokenizers without a tokenizer.json: load both with transformers and
    # compare vocabularies.
    import punie.serving.preflight as preflight

    monkeypatch.setattr(preflight, "_local_fingerprint", lambda model: None)
    with pytest.raises(TokenizerMismatch, match="tokens only in the draft"):
        check_draft_tokenizer(str(tiny_model_dir), str(foreign_draft_dir))


def test_mismatched_draft_is_refused_before_any_server_starts(
    tiny_model_dir: Path, foreign_draft_dir: Path, tmp_path: Path
) -> None:
    params = load_params(ROOT / "params.yaml")
    params = params.model_copy(
        update={
            "models": params.models.model_copy(
                update={"main": str(tiny_model_dir), "draft": str(foreign_draft_dir)}
            )
        }
    )
    start = time.monotonic()
    with pytest.raises(StageError, match="does not share the main model's tokenizer"):
        stage.benchmark(params, tmp_path / "out")
    assert time.monotonic() - start < 10
    assert servers_of(tiny_model_dir) == []
    assert not (tmp_path / "out").exists()


# --- End to end on the tiny fixture pair ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("interleave", [True, False])
def test_stage_runs_end_to_end_on_tiny_models(
    tiny_model_dir: Path, tiny_draft_dir: Path, tmp_path: Path, interleave: bool
) -> None:
    """Both servers up together (interleave), or one at a time for a pair that memory holds
    only once: every configuration measured either way."""
    queries = tmp_path / "q.yaml"
    queries.write_text(
        yaml.safe_dump(
            [
                {"query": "Find all Django views", "expect": "tool", "tool": "run_command"},
                {"query": "What is a closure?", "expect": "direct"},
            ]
        )
    )
    params = load_params(ROOT / "params.yaml")
    params = params.model_copy(
        update={
            "models": params.models.model_copy(
                update={"main": str(tiny_model_dir), "draft": str(tiny_draft_dir)}
            ),
            "server": params.server.model_copy(update={"max_tokens": 24}),
            "agent": params.agent.model_copy(
                update={"workspace": str(ROOT / "data" / "workspace")}
            ),
            "speculative": params.speculative.model_copy(
                update={
                    "num_draft_tokens": [1, 3],
                    "interleave": interleave,
                    # One of the (at least two) recorded prompts, where one server at a time.
                    "acceptance_prompts": None if interleave else 1,
                }
            ),
        }
    )
    up: list[int] = []
    stop = threading.Event()

    def count() -> None:
        while not stop.wait(0.05):
            up.append(len(servers_of(tiny_model_dir)))

    counter = threading.Thread(target=count)
    counter.start()
    try:
        stage.benchmark(params, tmp_path / "res", [queries])
    finally:
        stop.set()
        counter.join()
    assert max(up) == (2 if interleave else 1)
    assert servers_of(tiny_model_dir) == []
    for name in ("baseline", "k1", "k3", "control_k0"):
        data = json.loads((tmp_path / "res" / f"{name}.json").read_text())
        assert data["summary"]["n_queries"] == 2
    k3 = json.loads((tmp_path / "res" / "k3.json").read_text())
    assert k3["acceptance"]["steps"] > 0
    assert k3["acceptance"]["token_mismatches"] == 0
    kinds = k3["acceptance"]["by_kind"]
    assert sum(v["prompts"] for v in kinds.values()) == k3["cost"]["prompts"]
    assert (k3["cost"]["prompts"] == 1) is not interleave
    assert sum(v["steps"] for v in kinds.values()) == k3["acceptance"]["steps"]
    assert k3["acceptance"]["step_cost"] > 0
    assert ("two servers at once" in k3["method"]) is interleave
    out = outputs(tmp_path)
    report(params, tmp_path / "res", out)
    metrics = json.loads(out["metrics"].read_text())
    assert metrics["best_k"] in (1, 3)
    assert metrics["server_peak_rss_mb_max"] > 0
    assert json.loads(out["choice"].read_text())["num_draft_tokens"] in (None, 1, 3)


def test_acceptance_needed_inverts_the_prediction() -> None:
    a = acceptance_needed(1.5, 3, 0.1, verify_cost=1.2)
    assert a is not None and 0 < a < 1
    assert predicted_speedup(a, 3, 0.1, 1.2) == pytest.approx(1.5, rel=1e-6)
    assert acceptance_needed(5.0, 2, 0.1) is None  # k + 1 = 3 tokens per pass at best

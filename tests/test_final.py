"""Final benchmark: success criteria from recorded numbers, the report and the README section."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from punie.commands.readme import run_readme
from punie.errors import StageError
from punie.measurement.records import QueryRecord, TurnRecord, cut_off
from punie.reports.final import (
    README_END,
    README_START,
    Measured,
    decode_budget,
    failed_criteria,
    failure_banner,
    final_metrics,
    render_final_report,
    rewrite_readme,
    time_split_lines,
)
from punie.stages.final import comparison_rows, speculative_pick

from .conftest import tiny_params

# Recorded from a run of the embedded models (rounded); the criteria are computed, not typed.
RECORDED = Measured(
    baseline_e2e_mean_s=2.0,
    optimized_e2e_mean_s=0.7,
    baseline_seed_accuracy=1.0,
    optimized_seed_accuracy=1.0,
    baseline_heldout_accuracy=0.9,
    optimized_heldout_accuracy=0.9,
    baseline_accuracy=0.92,
    optimized_accuracy=0.92,
    baseline_completion_tokens_mean=60.0,
    optimized_completion_tokens_mean=24.0,
    server_peak_rss_mb=512.0,
)
FLAT_KEYS = {
    "baseline_e2e_mean_s", "optimized_e2e_mean_s", "latency_ratio", "accuracy_baseline",
    "accuracy_optimized", "completion_tokens_ratio", "server_peak_rss_mb", "memory_budget_mb",
    "latency_ratio_ok", "seed_accuracy_ok", "heldout_accuracy_ok", "memory_ok", "criteria_met",
}  # fmt: skip


def _metrics(m: Measured = RECORDED, target: float = 0.40, budget: float = 32768) -> dict:
    return final_metrics(m, latency_ratio_target=target, memory_budget_mb=budget)


def test_all_criteria_met_on_a_good_run() -> None:
    metrics = _metrics()
    assert metrics.keys() >= FLAT_KEYS
    assert metrics["latency_ratio"] == pytest.approx(0.35)
    assert metrics["completion_tokens_ratio"] == pytest.approx(0.4)
    assert metrics["criteria_met"] is True
    assert failed_criteria(metrics) == []
    assert failure_banner(metrics) is None
    assert all(not isinstance(v, (dict, list)) for v in metrics.values())  # flat


def test_latency_ratio_exactly_at_the_target_is_met() -> None:
    metrics = _metrics(replace(RECORDED, optimized_e2e_mean_s=0.8))
    assert metrics["latency_ratio"] == pytest.approx(0.4)
    assert metrics["latency_ratio_ok"] is True


def test_slower_than_target_fails_latency_only() -> None:
    metrics = _metrics(replace(RECORDED, optimized_e2e_mean_s=1.5))
    assert failed_criteria(metrics) == ["latency_ratio_ok"]
    assert metrics["criteria_met"] is False


def test_one_wrong_seed_query_fails_seed_accuracy() -> None:
    metrics = _metrics(replace(RECORDED, optimized_seed_accuracy=0.8))
    assert failed_criteria(metrics) == ["seed_accuracy_ok"]


def test_heldout_accuracy_below_the_baseline_fails_even_when_faster() -> None:
    metrics = _metrics(replace(RECORDED, optimized_heldout_accuracy=0.86))
    assert failed_criteria(metrics) == ["heldout_accuracy_ok"]
    better = _metrics(replace(RECORDED, optimized_heldout_accuracy=0.95))
    assert better["heldout_accuracy_ok"] is True


def test_memory_over_the_budget_fails() -> None:
    metrics = _metrics(budget=500)
    assert failed_criteria(metrics) == ["memory_ok"]
    assert metrics["memory_budget_mb"] == 500


def test_failure_banner_names_every_failed_criterion() -> None:
    bad = replace(RECORDED, optimized_e2e_mean_s=1.9, optimized_seed_accuracy=0.6)
    banner = failure_banner(_metrics(bad))
    assert banner is not None
    assert "FAILED: 2 of 4" in banner
    assert "latency_ratio_ok" in banner and "seed_accuracy_ok" in banner
    assert "memory_ok" not in banner


def test_final_report_has_the_table_and_the_decisions() -> None:
    metrics = _metrics(replace(RECORDED, optimized_e2e_mean_s=1.9)) | {
        "baseline_server_peak_rss_mb": 300.0,
        "draft_acceptance_rate": 0.61,
    }
    decisions = {
        "gate": {"retrain": True, "reason": "generation share above 0.70"},
        "speculative_choice": {"draft": "models/draft", "num_draft_tokens": 3},
        "retrain": {"trained": True},
    }
    report = render_final_report(metrics, decisions, {"baseline": "main", "optimized": "concise"})
    assert "| end-to-end mean (s) | 2.000 | 1.900 |" in report
    assert "generation share above 0.70" in report
    assert "k = 3" in report
    assert "concise LoRA model replaced the main model" in report
    assert "0.610" in report
    assert "FAILED" in report


def _split(first: float, after: float, outside: float, base_after: float = 0.278) -> dict:
    # Recorded shape of the 2026-12-06 fresh-clone run: per query, baseline 0.088 s to the
    # first tokens + 0.278 s after them + 0.012 s outside the model = 0.377 s.
    return {
        "latency_ratio_target": 0.40, "baseline_e2e_mean_s": 0.088 + base_after + 0.012,
        "optimized_e2e_mean_s": first + after + outside,
        "first_token_s_baseline": 0.088, "after_first_token_s_baseline": base_after,
        "outside_model_s_baseline": 0.012, "first_token_s_optimized": first,
        "after_first_token_s_optimized": after, "outside_model_s_optimized": outside,
    }  # fmt: skip


def test_decode_budget_says_how_much_faster_generation_must_get() -> None:
    metrics = _split(0.092, 0.158, 0.012)
    budget = decode_budget(metrics)
    assert budget["after_first_token_speedup"] == pytest.approx(0.278 / 0.158)
    # 0.40 x 0.378 s = 0.1512 s; minus 0.104 s of first tokens and tools leaves 0.0472 s.
    assert budget["after_first_token_speedup_needed"] == pytest.approx(0.278 / 0.0472)
    lines = "\n".join(time_split_lines(metrics | budget))
    assert "| end-to-end mean | 0.378 | 0.262 |" in lines
    assert "5.89x faster than the baseline's, against 1.76x now" in lines


def test_decode_budget_when_first_tokens_alone_miss_the_target() -> None:
    metrics = _split(0.140, 0.05, 0.012)  # 0.152 s before any generation > 0.1512 s
    budget = decode_budget(metrics)
    assert budget["after_first_token_speedup_needed"] is None
    assert "out of reach whatever the generation speed" in "\n".join(
        time_split_lines(metrics | budget)
    )
    assert decode_budget({"latency_ratio_target": 0.4}) == {
        "after_first_token_speedup": None,
        "after_first_token_speedup_needed": None,
    }
    assert time_split_lines({"latency_ratio_target": 0.4}) == []  # an older final.json


def _turn(tokens: int, finish: str) -> TurnRecord:
    return TurnRecord(index=0, start_s=0.0, duration_s=0.1, ttft_s=0.01, ttft_source="prefill",
                      decode_s=0.09, decode_tps=100.0, prompt_tokens=30,
                      completion_tokens=tokens, cached_tokens=0, finish_reason=finish,
                      tool_calls=[], text="", error=None)  # fmt: skip


def _query(*turns: TurnRecord, error: str | None = None) -> QueryRecord:
    return QueryRecord(label="q", set="heldout", query="q", expect="direct", expected_tool=None,
                       repeat=0, total_s=0.1 + sum(t.completion_tokens for t in turns) / 100,
                       generation_s=0.0, tool_s=0.0, overhead_s=0.1,
                       n_turns=len(turns), decision="direct", first_tool=None, tools_called=[],
                       correct=error is None, error=error, prompt_tokens=30,
                       completion_tokens=sum(t.completion_tokens for t in turns),
                       cached_tokens=0, output="", turns=list(turns), tools=[])  # fmt: skip


def test_turns_cut_off_at_max_tokens_and_their_token_share() -> None:
    # Recorded shape of the main model (2026-12-06): "What is dependency injection?" looped
    # to max_tokens 256; a tool call and its answer, a short direct answer. A failed query's
    # turns count nowhere, as in the latency figures.
    records = [
        _query(_turn(256, "length")),
        _query(_turn(15, "tool_call"), _turn(25, "stop")),
        _query(_turn(18, "stop")),
        _query(_turn(256, "length"), error="timeout"),
    ]
    cut = cut_off(records)
    assert cut["cut_off_turns"] == 1
    assert cut["cut_off_tokens_share"] == pytest.approx(256 / (256 + 15 + 25 + 18))
    # the looping query took 2.66 s of the three finished queries' 2.66 + 0.5 + 0.28 s
    assert cut["cut_off_time_share"] == pytest.approx(2.66 / 3.44)
    assert cut_off([]) == {
        "cut_off_turns": 0,
        "cut_off_tokens_share": None,
        "cut_off_time_share": None,
    }
    metrics = _metrics() | {f"{k}_{side}": v for k, v in cut.items()
                            for side in ("baseline", "optimized")}  # fmt: skip
    report = render_final_report(metrics, {}, {})
    assert "| turns cut off at max_tokens | 1 | 1 |" in report
    assert "| their share of completion tokens | 0.815 | 0.815 |" in report
    assert "| their queries' share of the end-to-end time | 0.773 | 0.773 |" in report


def test_comparison_rows_for_dvc_plots() -> None:
    rows = comparison_rows(_metrics())
    assert [r["configuration"] for r in rows] == ["baseline", "optimised"]
    assert rows[1]["e2e_mean_s"] == pytest.approx(0.7)


def test_speculative_choice_is_read_or_refused() -> None:
    assert speculative_pick({"draft": None}) == (None, None)
    assert speculative_pick({"draft": "models/draft", "num_draft_tokens": 3}) == ("models/draft", 3)
    assert speculative_pick({"draft": "models/draft", "k": 2}) == ("models/draft", 2)
    with pytest.raises(StageError, match="num_draft_tokens"):
        speculative_pick({"draft": "models/draft"})


# --- README ----------------------------------------------------------------------------------


def _recorded_metrics(dir: Path) -> None:
    dir.mkdir()
    final = _metrics() | {"baseline_server_peak_rss_mb": 300.0, "draft_acceptance_rate": 0.61}
    files = {
        "final.json": final,
        "gate.json": {"retrain": True, "reason": "generation share above 0.70"},
        "speculative_choice.json": {"draft": "models/draft", "num_draft_tokens": 3},
        "retrain.json": {"trained": True, "accuracy_main": 0.9, "accuracy_concise": 0.9},
        "profile.json": {"generation_share": 0.9312, "e2e_mean_s": 1.734},
    }
    for name, data in files.items():
        (dir / name).write_text(json.dumps(data))


def test_readme_section_is_generated_from_metrics_and_idempotent(tmp_path: Path) -> None:
    _recorded_metrics(tmp_path / "metrics")
    readme = tmp_path / "README.md"
    before = f"# Punie\n\nIntro.\n\n{README_START}\nold figures\n{README_END}\n\n## After\n"
    readme.write_text(before)
    run_readme(readme, tmp_path / "metrics")
    first = readme.read_text()
    run_readme(readme, tmp_path / "metrics")
    assert readme.read_text() == first
    assert first.startswith("# Punie\n\nIntro.\n\n")
    assert first.endswith(f"{README_END}\n\n## After\n")
    assert "old figures" not in first
    assert "0.350" in first  # latency ratio, from final.json
    assert "0.931" in first  # generation share, from profile.json
    assert "not** the latency of the 30B model" in first


def test_readme_without_markers_gets_the_section_appended(tmp_path: Path) -> None:
    _recorded_metrics(tmp_path / "metrics")
    readme = tmp_path / "README.md"
    readme.write_text("# Punie\n")
    run_readme(readme, tmp_path / "metrics")
    text = readme.read_text()
    assert text.startswith("# Punie\n\n" + README_START)
    assert rewrite_readme(text, "x") == rewrite_readme(rewrite_readme(text, "x"), "x")


def test_readme_with_no_metrics_says_so(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    run_readme(readme, tmp_path / "metrics")
    assert "No metrics yet" in readme.read_text()


# --- end to end on the tiny random models ------------------------------------------------------


@pytest.mark.slow
def test_final_runs_both_configurations_and_writes_every_output(
    tiny_model_dir: Path, tiny_draft_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    from punie.stages import final

    params = tiny_params(tiny_model_dir, tmp_path)
    params = params.model_copy(
        update={"final": params.final.model_copy(update={"acceptance_prompts": 2})}
    )
    monkeypatch.chdir(tmp_path)
    Path("metrics").mkdir()
    Path("metrics/gate.json").write_text('{"retrain": false, "reason": "below"}')
    Path("metrics/retrain.json").write_text('{"trained": false}')
    choice = {"draft": str(tiny_draft_dir), "num_draft_tokens": 2}
    Path("metrics/speculative_choice.json").write_text(json.dumps(choice))

    assert final.run_final(params, Console(quiet=True)) == 0

    metrics = json.loads(Path("metrics/final.json").read_text())
    assert metrics.keys() >= FLAT_KEYS
    assert metrics["memory_budget_mb"] == params.final.memory_budget_mb
    assert 0 < metrics["server_peak_rss_mb"] < metrics["memory_budget_mb"]
    assert 0.0 <= metrics["draft_acceptance_rate"] <= 1.0
    assert metrics["num_draft_tokens"] == 2
    records = json.loads(Path("metrics/final_records.json").read_text())
    assert [r["query"] for r in records["records"]["baseline"]] == [
        r["query"] for r in records["records"]["optimized"]
    ]
    assert records["configurations"]["optimized"]["draft_model"] == str(tiny_draft_dir)
    assert len(json.loads(Path("metrics/final_comparison.json").read_text())) == 2
    assert "## Success criteria" in Path("reports/final.md").read_text()
    for key in ("baseline", "optimized"):  # the time split adds up to the measured mean
        parts = [
            metrics[f"{p}_s_{key}"] for p in ("first_token", "after_first_token", "outside_model")
        ]
        assert sum(parts) == pytest.approx(metrics[f"{key}_e2e_mean_s"], abs=1e-3)
        assert metrics[f"first_token_s_{key}"] > 0
        cut = [t for r in records["records"][key] if r["error"] is None for t in r["turns"]]
        assert metrics[f"cut_off_turns_{key}"] == sum(t["finish_reason"] == "length" for t in cut)

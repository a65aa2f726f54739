"""Final benchmark: the configurations, the criteria from recorded numbers, the report and the
README section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from punie.commands.readme import run_readme
from punie.errors import StageError
from punie.measurement.levers import Optimizations, ablation, setup
from punie.measurement.records import QueryRecord, TurnRecord, cut_off, lost_queries
from punie.params import load_params
from punie.reports.final import (
    decode_budget,
    failed_criteria,
    failure_banner,
    final_metrics,
    regressions,
    render_final_report,
    time_split_lines,
)
from punie.reports.readme import README_END, README_START, rewrite_readme
from punie.stages.final import speculative_pick

from .conftest import ROOT, tiny_params

PARAMS = load_params(ROOT / "params.yaml")


def _figures(e2e: float, *, seed: float = 1.0, heldout: float = 0.9, wording: float = 0.9,
             lost: int = 0, rss: float = 512.0) -> dict[str, Any]:  # fmt: skip
    # Parts shaped like a run of the embedded models: first tokens, after, tools + framework.
    return {
        "e2e_mean_s": e2e, "e2e_median_s": e2e, "first_token_s": 0.2 * e2e,
        "after_first_token_s": 0.75 * e2e, "outside_model_s": 0.05 * e2e,
        "completion_tokens_mean": 40.0, "accuracy": 0.92, "seed_accuracy": seed,
        "heldout_accuracy": heldout, "wording_accuracy": wording, "decisions_lost": lost,
        "grounded_share": 0.8, "grounded_lost": 0, "loop_stops": 0, "cut_off_turns": 0,
        "server_peak_rss_mb": rss, "errors": 0,
    }  # fmt: skip


def _metrics(optimized: dict[str, Any] | None = None, **others: dict[str, Any]) -> dict:
    figures = {"baseline": _figures(2.0), **others, "optimized": optimized or _figures(0.7)}
    return final_metrics(figures, latency_ratio_target=0.40, memory_budget_mb=32768)


# --- the configurations -----------------------------------------------------------------------


OPT = Optimizations(main="models/main", concise="models/concise", draft="models/draft", k=3,
                    concise_draft="models/concise_draft", thinking_switch=True)  # fmt: skip


def test_each_lever_alone_then_all_together() -> None:
    setups, skipped = ablation(PARAMS, OPT)
    assert list(setups) == ["baseline", *PARAMS.final.levers, "optimized"] and skipped == {}
    base = setups["baseline"]
    assert base.config.draft_model is None and base.patches == () and base.request == {}
    assert base.loop_guard_words is None and base.config.model_path == "models/main"
    assert setups["thinking_off"].request == {"chat_template_kwargs": {"enable_thinking": False}}
    assert setups["loop_guard"].loop_guard_words == PARAMS.agent.loop_guard_words
    assert setups["server_path"].patches == tuple(PARAMS.final.server_patches)
    assert setups["server_path"].request == PARAMS.final.server_request
    spec = setups["speculative"]
    assert (spec.config.draft_model, spec.config.num_draft_tokens) == ("models/draft", 3)
    assert spec.patches == ("speculative-cache-key",)  # its prompt cache is then safe to reuse
    assert setups["concise"].config.model_path == "models/concise"
    opt = setups["optimized"]
    assert opt.levers == tuple(PARAMS.final.levers)
    assert opt.config.model_path == "models/concise"
    assert opt.config.draft_model == "models/concise_draft"  # distilled on the concise model
    assert set(opt.patches) == {*PARAMS.final.server_patches, "speculative-cache-key"}


def test_levers_that_do_not_apply_are_skipped_with_the_reason() -> None:
    bare = Optimizations(main="models/main")
    setups, skipped = ablation(PARAMS, bare)
    assert list(setups) == ["baseline", "loop_guard", "server_path", "optimized"]
    assert skipped == {
        "thinking_off": "the chat template has no thinking switch",
        "speculative": "the speculative stage chose no draft",
        "concise": "the retrain stage kept the main model",
    }
    no_thinking = {"chat_template_args": {"enable_thinking": False}}
    off = PARAMS.model_copy(update={"server": PARAMS.server.model_copy(update=no_thinking)})
    assert "already turns thinking off" in ablation(off, OPT)[1]["thinking_off"]


def test_an_unknown_lever_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown levers"):
        setup(PARAMS, OPT, ["faster"])


# --- metrics and criteria from recorded figures --------------------------------------------------


def test_all_criteria_met_on_a_good_run() -> None:
    metrics = _metrics(loop_guard=_figures(1.6))
    assert metrics["latency_ratio_optimized"] == pytest.approx(0.35)
    assert metrics["latency_ratio_loop_guard"] == pytest.approx(0.8)
    assert metrics["latency_ratio_baseline"] == pytest.approx(1.0)
    assert metrics["criteria_met"] is True
    assert failed_criteria(metrics) == [] and failure_banner(metrics) is None
    assert all(not isinstance(v, (dict, list)) for v in metrics.values())  # flat
    keys = [k for k in metrics if k.startswith("e2e_mean_s_")]
    assert keys == ["e2e_mean_s_baseline", "e2e_mean_s_loop_guard", "e2e_mean_s_optimized"]


def test_latency_ratio_exactly_at_the_target_is_met() -> None:
    metrics = _metrics(_figures(0.8))
    assert metrics["latency_ratio_optimized"] == pytest.approx(0.4)
    assert metrics["latency_ratio_ok"] is True


def test_slower_than_target_fails_latency_only() -> None:
    metrics = _metrics(_figures(1.5))
    assert failed_criteria(metrics) == ["latency_ratio_ok"] and metrics["criteria_met"] is False


def test_one_wrong_seed_query_fails_seed_accuracy() -> None:
    assert failed_criteria(_metrics(_figures(0.7, seed=0.8))) == ["seed_accuracy_ok"]


@pytest.mark.parametrize("held_out", ["heldout", "wording"])
def test_either_held_out_set_below_the_baseline_fails_even_when_faster(held_out: str) -> None:
    worse = _metrics(_figures(0.7, **{held_out: 0.86}))
    assert failed_criteria(worse) == ["heldout_accuracy_ok"]
    assert _metrics(_figures(0.7, **{held_out: 0.95}))["heldout_accuracy_ok"] is True


def test_memory_over_the_budget_fails() -> None:
    assert failed_criteria(_metrics(_figures(0.7, rss=40000.0))) == ["memory_ok"]


def test_a_lever_that_loses_a_decision_is_a_loud_regression_even_with_criteria_met() -> None:
    metrics = _metrics(speculative=_figures(1.2, lost=2))
    assert metrics["criteria_met"] is True
    assert regressions(metrics) == {"speculative": 2}
    banner = failure_banner(metrics)
    assert banner is not None and "ACCURACY REGRESSION" in banner
    assert "speculative: 2 decision(s) lost" in banner and "FAILED" not in banner


def test_failure_banner_names_every_failed_criterion() -> None:
    banner = failure_banner(_metrics(_figures(1.9, seed=0.6)))
    assert banner is not None and "FAILED: 2 of 4" in banner
    assert "latency_ratio_ok" in banner and "seed_accuracy_ok" in banner
    assert "memory_ok" not in banner


def test_decode_budget_says_how_much_faster_generation_must_get() -> None:
    # baseline 0.4 s: 0.08 to first tokens, 0.3 after, 0.02 outside; optimized 0.05 + 0.15 + 0.02
    metrics = {
        "latency_ratio_target": 0.40, "e2e_mean_s_baseline": 0.4,
        "after_first_token_s_baseline": 0.3, "first_token_s_optimized": 0.05,
        "after_first_token_s_optimized": 0.15, "outside_model_s_optimized": 0.02,
    }  # fmt: skip
    budget = decode_budget(metrics)
    assert budget["after_first_token_speedup"] == pytest.approx(2.0)
    # 0.40 x 0.4 s = 0.16 s; minus 0.07 s before generation leaves 0.09 s.
    assert budget["after_first_token_speedup_needed"] == pytest.approx(0.3 / 0.09)
    assert "3.33x faster than the baseline's, against 2.00x now" in "\n".join(
        time_split_lines(metrics | budget)
    )
    out_of_reach = metrics | {"first_token_s_optimized": 0.15}
    assert decode_budget(out_of_reach)["after_first_token_speedup_needed"] is None
    assert "out of reach" in "\n".join(time_split_lines(out_of_reach | decode_budget(out_of_reach)))


def test_the_report_has_the_ablation_table_decisions_and_lost_queries() -> None:
    metrics = _metrics(speculative=_figures(1.2, lost=1)) | {"draft_acceptance_rate": 0.61}
    decisions = {
        "gate": {"retrain": True, "reason": "generation share above 0.70"},
        "speculative_choice": {"draft": "models/draft", "num_draft_tokens": 3},
        "retrain": {"trained": True},
    }
    report = render_final_report(
        metrics, decisions, {"baseline": "`models/main`", "optimized": "all"},
        {"thinking_off": "the chat template has no thinking switch"},
        {"speculative": ['"What is an ORM?": direct -> read_file']}, "alternating",
    )  # fmt: skip
    assert "| speculative | 1.200 | 0.600 |" in report
    assert "generation share above 0.70" in report and "k = 3" in report
    assert "thinking_off: not measured, the chat template has no thinking switch" in report
    assert '"What is an ORM?": direct -> read_file' in report
    assert "0.610" in report and "ACCURACY REGRESSION" in report


def _turn(tokens: int, finish: str, loop: bool = False) -> TurnRecord:
    return TurnRecord(index=0, start_s=0.0, duration_s=0.1, ttft_s=0.01, ttft_source="prefill",
                      decode_s=0.09, decode_tps=100.0, prompt_tokens=30,
                      completion_tokens=tokens, cached_tokens=0, finish_reason=finish,
                      tool_calls=[], text="", error=None, loop_stopped=loop)  # fmt: skip


def _query(*turns: TurnRecord, error: str | None = None, correct: bool = True,
           label: str = "q") -> QueryRecord:  # fmt: skip
    return QueryRecord(label=label, set="heldout", query=label, expect="direct",
                       expected_tool=None, repeat=0,
                       total_s=0.1 + sum(t.completion_tokens for t in turns) / 100,
                       generation_s=0.0, tool_s=0.0, overhead_s=0.1,
                       n_turns=len(turns), decision="direct", first_tool=None, tools_called=[],
                       correct=error is None and correct, error=error, prompt_tokens=30,
                       completion_tokens=sum(t.completion_tokens for t in turns),
                       cached_tokens=0, output="", turns=list(turns), tools=[])  # fmt: skip


def test_turns_cut_off_at_max_tokens_and_turns_the_loop_guard_ended() -> None:
    # Recorded shape of the first main model (2026-12-06): "What is dependency injection?"
    # looped to max_tokens 256; a tool call and its answer, a short direct answer. A failed
    # query's turns count nowhere, as in the latency figures.
    records = [
        _query(_turn(256, "length")),
        _query(_turn(15, "tool_call"), _turn(25, "stop")),
        _query(_turn(18, "stop")),
        _query(_turn(256, "length"), error="timeout"),
        _query(_turn(40, "stop", loop=True)),
    ]
    cut = cut_off(records)
    assert cut["cut_off_turns"] == 1 and cut["loop_stops"] == 1
    assert cut["cut_off_tokens_share"] == pytest.approx(256 / (256 + 15 + 25 + 18 + 40))
    assert cut_off([])["cut_off_tokens_share"] is None


def test_lost_queries_name_what_the_configuration_did_instead() -> None:
    base = [_query(_turn(5, "stop"), label="a"), _query(_turn(5, "stop"), label="b")]
    other = [
        _query(_turn(5, "stop"), label="a", correct=False),
        _query(_turn(5, "stop"), label="b"),
    ]
    assert lost_queries(base, other) == ['"a": direct -> direct']
    assert lost_queries(base, base) == []


def test_speculative_choice_is_read_or_refused() -> None:
    assert speculative_pick({"draft": None}) == (None, None)
    assert speculative_pick({"draft": "models/draft", "num_draft_tokens": 3}) == ("models/draft", 3)
    with pytest.raises(StageError, match="num_draft_tokens"):
        speculative_pick({"draft": "models/draft"})


# --- README ----------------------------------------------------------------------------------


def _recorded_metrics(folder: Path) -> None:
    folder.mkdir()
    files = {
        "final.json": _metrics(),
        "speculative.json": {"best_k": 3, "best_speedup": 1.66, "chosen_k": 3},
        "bootstrap.json": {
            "main_params": 2_230_912,
            "draft_params": 180_480,
            "total_seconds": 590.0,
            "machine_cpu": "AMD EPYC",
        },
    }
    for name, data in files.items():
        (folder / name).write_text(json.dumps(data))


def test_readme_section_is_generated_from_metrics_and_idempotent(tmp_path: Path) -> None:
    _recorded_metrics(tmp_path / "metrics")
    readme = tmp_path / "README.md"
    before = f"# Punie\n\nIntro.\n\n{README_START}\nold figures\n{README_END}\n\n## After\n"
    readme.write_text(before)
    run_readme(readme, tmp_path / "metrics")
    first = readme.read_text()
    run_readme(readme, tmp_path / "metrics")
    assert readme.read_text() == first
    assert first.startswith("# Punie\n\nIntro.\n\n") and first.endswith(
        f"{README_END}\n\n## After\n"
    )
    assert "old figures" not in first
    assert "**0.350**" in first  # latency ratio, from final.json
    assert "| optimized | 0.700 | 0.350 |" in first
    assert "2.23M-parameter main model" in first and "AMD EPYC" in first
    assert "1.66x decode throughput" in first
    assert len(first.split(README_START)[1].splitlines()) < 25  # a short table, not a dump


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
def test_final_runs_every_configuration_and_writes_every_output(
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
    names = ["baseline", "loop_guard", "server_path", "speculative", "optimized"]
    assert [k.removeprefix("e2e_mean_s_") for k in metrics if k.startswith("e2e_mean_s_")] == names
    assert 0 < metrics["server_peak_rss_mb_optimized"] < metrics["memory_budget_mb"]
    assert 0.0 <= metrics["draft_acceptance_rate"] <= 1.0
    assert metrics["machine_cores"] >= 1
    assert metrics["pipeline_overhead_ratio_baseline"] > 0
    assert metrics["pipeline_overhead_ratio_server_path"] > 0
    records = json.loads(Path("metrics/final_records.json").read_text())
    queries = [[r["query"] for r in records["records"][n]] for n in names]
    assert all(q == queries[0] for q in queries)
    configs = records["configurations"]
    assert configs["optimized"]["draft_model"] == str(tiny_draft_dir)
    assert configs["server_path"]["patches"] == params.final.server_patches
    assert len(json.loads(Path("metrics/final_comparison.json").read_text())) == len(names)
    assert len(json.loads(Path("metrics/final_ablation.json").read_text())) == 3 * len(names)
    per_query = json.loads(Path("metrics/final_per_query.json").read_text())
    assert {r["configuration"] for r in per_query} == {"baseline", "optimized"}
    assert "## Success criteria" in Path("reports/final.md").read_text()
    for n in names:  # the time split adds up to the measured mean
        parts = [
            metrics[f"{p}_s_{n}"] for p in ("first_token", "after_first_token", "outside_model")
        ]
        assert sum(parts) == pytest.approx(metrics[f"e2e_mean_s_{n}"], abs=1e-3)
        turns = [t for r in records["records"][n] if r["error"] is None for t in r["turns"]]
        assert metrics[f"cut_off_turns_{n}"] == sum(t["finish_reason"] == "length" for t in turns)
    # The server path's patches and request fields change no token at temperature 0.
    assert metrics["decisions_lost_server_path"] == 0
    base = [r["output"] for r in records["records"]["baseline"]]
    assert [r["output"] for r in records["records"]["server_path"]] == base

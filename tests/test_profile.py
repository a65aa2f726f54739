"""The profile stage: outputs (atomic, exact metric keys, plot rows DVC draws) and one real
end-to-end run on the tiny fixture model."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from punie.agent.queries import Query
from punie.measurement.latency import LATENCY_KEYS
from punie.measurement.timing import Case, run_queries
from punie.params import load_params
from punie.stages.profile import METRIC_KEYS, Outputs, breakdown_rows, write_outputs

from .conftest import ROOT
from .test_measure import _agent


def _servers_of(model: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-af", "mlx_lm server"], capture_output=True, text=True)
    return [int(line.split()[0]) for line in out.stdout.splitlines() if str(model) in line]


MACHINE_KEYS = {"machine_cpu", "machine_cores", "machine_blas"}
EXPECTED_KEYS = {
    *METRIC_KEYS,
    *LATENCY_KEYS,  # vLLM's names: ttft/tpot/itl/e2el median and p99
    *MACHINE_KEYS,
    "seed_accuracy",
    "heldout_accuracy",
    "n_queries",
    "n_errors",
}


def _records():
    cases = [
        Case("seed-1", "seed", Query("Find all Django views", "tool", "run_command")),
        Case("seed-2", "seed", Query("What is a list?", "direct")),
        Case("heldout-1", "heldout", Query("Find the models", "tool", "run_command")),
    ]
    return asyncio.run(run_queries(_agent(0.02, 0.05), cases, repeats=2))


def _write(tmp_path: Path, records) -> dict:
    direct = [{"pipeline_s": 0.3, "direct_s": 0.2, "direct_tokens": 5, "completion_tokens": 5}]
    params = load_params(ROOT / "params.yaml")
    return write_outputs(
        Outputs.under(tmp_path), records, direct, 123.4, model_path="m", params=params
    )


def test_outputs_have_the_exact_keys_and_records(tmp_path: Path) -> None:
    records = _records()
    metrics = _write(tmp_path, records)
    out = Outputs.under(tmp_path)
    assert json.loads(out.metrics.read_text()) == metrics
    assert set(metrics) == EXPECTED_KEYS
    assert metrics["pipeline_overhead_ratio"] == pytest.approx(1.5)
    assert metrics["server_peak_rss_mb"] == pytest.approx(123.4)
    shares = metrics["generation_share"] + metrics["tool_share"] + metrics["overhead_share"]
    assert shares == pytest.approx(1.0, abs=1e-3)
    saved = json.loads(out.records.read_text())["records"]
    assert len(saved) == 6
    for r in saved:
        for key in ("total_s", "generation_s", "tool_s", "overhead_s", "decision", "correct"):
            assert key in r
        assert r["turns"] and "ttft_s" in r["turns"][0]
        assert "requests" not in r
    assert "| seed-1 |" in out.report.read_text()
    assert "| TTFT (time to first token) | the lab's time to first token" in out.report.read_text()


def test_breakdown_rows_stack_to_each_query_mean_total(tmp_path: Path) -> None:
    records = _records()
    rows = breakdown_rows(records)
    assert {r["component"] for r in rows} == {"generation", "tool", "overhead"}
    for label in ("seed-1", "seed-2", "heldout-1"):
        stacked = sum(r["seconds"] for r in rows if r["query"] == label)
        mean_total = sum(r.total_s for r in records if r.label == label) / 2
        assert stacked == pytest.approx(mean_total, abs=1e-3)


def test_breakdown_renders_with_the_stacked_template() -> None:
    """dvc.yaml's `template: stacked` resolves to .dvc/plots/stacked.json and fills in."""
    from dvc_render.vega import VegaRenderer
    from dvc_render.vega_templates import get_template

    rows = [{**r, "rev": "workspace"} for r in breakdown_rows(_records())]
    template = get_template("stacked", str(ROOT / ".dvc" / "plots"))
    spec = VegaRenderer(rows, "breakdown", template=template, x="query", y="seconds")
    content = spec.get_filled_template()
    assert content["mark"]["type"] == "bar"
    assert content["encoding"]["y"]["stack"] == "zero"
    assert content["encoding"]["color"]["field"] == "component"
    assert content["data"]["values"][0]["component"] == "generation"
    assert "<DVC_METRIC" not in json.dumps(content)


def test_outputs_are_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = _records()
    _write(tmp_path, records)
    out = Outputs.under(tmp_path)
    before = {p: p.read_bytes() for p in (out.metrics, out.records, out.breakdown, out.report)}

    def crash(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        _write(tmp_path, records[:2])
    for path, content in before.items():
        assert path.read_bytes() == content
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers


@pytest.mark.slow
def test_profile_end_to_end_on_the_tiny_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    queries = tmp_path / "q.yaml"
    queries.write_text(
        "- query: Find all Django views\n  expect: tool\n  tool: run_command\n"
        "- query: What is dependency injection?\n  expect: direct\n"
    )
    out = tmp_path / "out"
    dvc_metrics = ROOT / "metrics" / "profile.json"
    untouched = dvc_metrics.stat().st_mtime_ns if dvc_metrics.exists() else None
    cmd = [sys.executable, "-m", "punie.cli", "profile", "--queries", str(queries)]
    cmd += ["--out", str(out), "--model", str(tiny_model_dir)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    # Other runs may have servers of their own: look only for ours.
    assert not _servers_of(tiny_model_dir)
    outputs = Outputs.under(out)
    metrics = json.loads(outputs.metrics.read_text())
    assert set(metrics) == {
        *METRIC_KEYS,
        *LATENCY_KEYS,
        *MACHINE_KEYS,
        "q_accuracy",
        "n_queries",
        "n_errors",
    }
    # Real streams: every turn's tokens were stamped, so vLLM's ITL and TPOT exist.
    assert metrics["itl_median_s"] is not None and metrics["tpot_p99_s"] is not None
    assert "turns, ETA" in proc.stdout  # the direct floor child's progress, passed on
    assert metrics["n_queries"] == 2 and metrics["n_errors"] == 0
    assert metrics["server_peak_rss_mb"] > 10
    assert metrics["pipeline_overhead_ratio"] > 0
    assert metrics["ttft_mean_s"] > 0
    saved = json.loads(outputs.records.read_text())
    for r in saved["records"]:
        parts = r["generation_s"] + r["tool_s"] + r["overhead_s"]
        assert parts == pytest.approx(r["total_s"], rel=0.01)
        assert r["turns"][0]["prompt_tokens"] > 0 and r["turns"][0]["completion_tokens"] > 0
    assert len(saved["direct"]) >= 2
    assert json.loads(outputs.breakdown.read_text())
    assert "Direct floor" in outputs.report.read_text()
    # --out leaves the pipeline's own outputs alone.
    assert (dvc_metrics.stat().st_mtime_ns if dvc_metrics.exists() else None) == untouched

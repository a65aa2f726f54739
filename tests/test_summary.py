"""metrics/summary.json (the `summary` stage) is the only DVC metrics file, so `dvc exp show`
fits a screen; the stages' own metrics files stay outputs in git. The speculative plots draw
speedup and acceptance on separate y axes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from punie import paths
from punie.cli import STAGES as COMMANDS
from punie.stages.summary import SOURCES, summarize_metrics, write_summary

ROOT = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).parent / "dvc"
PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())

KEYS = [
    "machine_cpu",
    "machine_blas",
    "bootstrap_total_s",
    "profile_seed_accuracy",
    "profile_heldout_accuracy",
    "profile_wording_accuracy",
    "profile_generation_share",
    "speculative_best_speedup",
    "speculative_chosen_k",
    "draft_acceptance_rate",
    "mean_acceptance_length",
    "e2e_mean_s_baseline",
    "e2e_mean_s_optimized",
    "latency_ratio_optimized",
    "accuracy_optimized",
    "seed_accuracy_optimized",
    "heldout_accuracy_optimized",
    "wording_accuracy_optimized",
    "grounded_share_optimized",
    "criteria_met",
]

FIXTURES = {
    paths.BOOTSTRAP_METRICS: {"total_seconds": 741.2, "machine_cpu": "boot cpu", "blas": "x"},
    paths.PROFILE_METRICS: {
        "seed_accuracy": 1.0,
        "heldout_accuracy": 0.97,
        "wording_accuracy": 0.9,
        "generation_share": 0.97,
        "machine_cpu": "AMD EPYC",
        "machine_blas": "OpenBLAS 0.3.21 Zen kernels",
    },
    paths.SPECULATIVE_METRICS: {
        "best_speedup": 1.67,
        "best_k": 5,
        "chosen_k": 3,
        "draft_acceptance_rate_k3": 0.61,
        "draft_acceptance_rate_k5": 0.55,
        "draft_acceptance_rate_best_k": 0.55,
        "mean_acceptance_length_k3": 2.8,
        "mean_acceptance_length_best_k": 3.7,
    },
    paths.FINAL_METRICS: {
        "e2e_mean_s_baseline": 0.39,
        "e2e_mean_s_optimized": 0.26,
        "latency_ratio_optimized": 0.66,
        "accuracy_optimized": 0.98,
        "seed_accuracy_optimized": 1.0,
        "heldout_accuracy_optimized": 0.977,
        "wording_accuracy_optimized": 0.95,
        "grounded_share_optimized": 0.79,
        "criteria_met": False,
        "accuracy_baseline": 0.98,  # not a headline key
    },
}


def _write(root: Path, files: dict[Path, dict]) -> None:
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(json.dumps(data))


def test_the_summary_picks_the_headline_keys(tmp_path: Path) -> None:
    _write(tmp_path, FIXTURES)  # no retrain.json: the summary does not need one
    summary = write_summary(tmp_path)
    assert json.loads((tmp_path / paths.SUMMARY_METRICS).read_text()) == summary
    assert list(summary) == KEYS
    assert summary["machine_cpu"] == "AMD EPYC"  # the latest stage that names its machine
    assert summary["machine_blas"] == "OpenBLAS 0.3.21 Zen kernels"
    assert summary["bootstrap_total_s"] == 741.2
    assert summary["profile_wording_accuracy"] == 0.9
    assert summary["speculative_chosen_k"] == 3
    assert summary["draft_acceptance_rate"] == 0.61  # at the chosen k, not the best one
    assert summary["mean_acceptance_length"] == 2.8
    assert summary["latency_ratio_optimized"] == 0.66
    assert summary["criteria_met"] is False
    assert "accuracy_baseline" not in summary


def test_missing_files_and_keys_are_null(tmp_path: Path) -> None:
    summary = write_summary(tmp_path)  # nothing measured yet
    assert list(summary) == KEYS and all(v is None for v in summary.values())
    no_draft = {"chosen_k": 0, "draft_acceptance_rate_best_k": 0.4}
    picked = summarize_metrics({"speculative": no_draft, "final": {"criteria_met": True}})
    assert picked["draft_acceptance_rate"] == 0.4  # no draft chosen: the best k's
    assert picked["mean_acceptance_length"] is None
    assert picked["criteria_met"] is True and picked["accuracy_optimized"] is None


def test_only_the_summary_is_a_dvc_metrics_file() -> None:
    stages = PIPELINE["stages"]
    declared = {s: [next(iter(m)) for m in st.get("metrics", [])] for s, st in stages.items()}
    assert {s: m for s, m in declared.items() if m} == {"summary": [str(paths.SUMMARY_METRICS)]}
    assert stages["summary"]["cmd"] == "punie-lab summary" and "summary" in COMMANDS
    outs = {
        next(iter(o)) if isinstance(o, dict) else o: (
            o[next(iter(o))] if isinstance(o, dict) else {}
        )
        for st in stages.values()
        for o in st.get("outs", [])
    }
    for path in SOURCES.values():  # each stage's own metrics: an output kept in git
        assert outs[str(path)] == {"cache": False}, path
        assert str(path) in stages["summary"]["deps"]


def _scratch_repo(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A DVC repo with this dvc.yaml, its plot templates and the given metrics files."""
    repo = tmp_path / "repo"
    (repo / ".dvc").mkdir(parents=True)
    shutil.copy(ROOT / "dvc.yaml", repo)
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")
    (repo / ".dvc" / "config").write_text("[core]\n    analytics = false\n")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_CONFIG_NOSYSTEM": "1"}
    env |= {"HOME": str(tmp_path), "DVC_SITE_CACHE_DIR": str(tmp_path / "site-cache")}
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True, env=env)
    return repo, env


def test_speedup_and_acceptance_plots_have_their_own_y_axis(tmp_path: Path) -> None:
    repo, env = _scratch_repo(tmp_path)
    rows = [
        {"k": k, "speedup": s, "predicted_speedup": p, "acceptance_rate": a,
         "draft_acceptance_rate": d, "mean_acceptance_length": 1 + k * d}
        for k, s, p, a, d in ((2, 1.5, 1.9, 0.78, 0.7), (3, 1.6, 2.1, 0.79, 0.66))
    ]  # fmt: skip
    (repo / "metrics").mkdir()
    (repo / paths.SPECULATIVE_BY_K).write_text(json.dumps(rows))
    done = subprocess.run(
        [str(DVC), "plots", "show", "--json"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert done.stdout, done.stderr
    plots = json.loads(done.stdout)["data"]
    expected = {
        "speculative_speedup": ({"speedup", "predicted_speedup"}, "decode speedup (x baseline)"),
        "speculative_acceptance": (
            {"acceptance_rate", "draft_acceptance_rate"},
            "acceptance (share of draft tokens)",
        ),
    }
    assert "speculative_by_k" not in plots
    for name, (fields, title) in expected.items():
        (plot,) = plots[name]
        spec = plot["content"]
        values = spec["data"]["values"]
        assert {v["field"] for v in values} == fields  # only these on this axis
        ys = [layer["encoding"]["y"] for layer in spec["layer"] if layer["encoding"].get("y")]
        assert ys and all(y["field"] == "dvc_inferred_y_value" for y in ys)
        assert {y["title"] for y in ys} == {title}
        for v in values:  # the plotted value is the row's own field
            assert v["dvc_inferred_y_value"] == v[v["field"]]


def test_dvc_metrics_show_still_reads_a_stage_file(tmp_path: Path) -> None:
    target = str(paths.FINAL_METRICS)
    repo, env = _scratch_repo(tmp_path)
    _write(repo, FIXTURES)
    write_summary(repo)
    shown = subprocess.run(
        [str(DVC), "metrics", "show", "--json"], cwd=repo, env=env, capture_output=True, text=True
    )
    (data,) = json.loads(shown.stdout).values()
    assert list(data["data"]) == [str(paths.SUMMARY_METRICS)]  # by default: the summary only
    one = subprocess.run(
        [str(DVC), "metrics", "show", "--json", target],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    (data,) = json.loads(one.stdout).values()
    assert data["data"][target]["data"]["latency_ratio_optimized"] == 0.66

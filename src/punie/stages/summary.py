"""`punie-lab summary`: the pipeline's headline figures in one small file.

Every stage writes its own metrics file (dozens of keys each); `metrics/summary.json` picks
about twenty of them, so that `dvc exp show --only-changed` fits a screen. It is the only file
dvc.yaml declares as `metrics`; the stages' own files stay in git as plain outputs
(`dvc metrics show metrics/final.json` still reads one). A file that does not exist yet, or a
key a file does not hold, gives null.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from punie import paths
from punie.errors import StageError
from punie.params import QUERY_SETS
from punie.results import read_json, write_json

# The query sets every stage reports (params `queries`), in order.
SETS = QUERY_SETS

# Where the machine keys are read from: the first of these files that holds them (the
# final benchmark's machine is the one the headline figures hold on).
MACHINE_FROM = ("final", "retrain", "speculative", "profile", "bootstrap")
MACHINE_KEYS = ("machine_cpu", "machine_blas")

SOURCES = {
    "bootstrap": paths.BOOTSTRAP_METRICS,
    "profile": paths.PROFILE_METRICS,
    "speculative": paths.SPECULATIVE_METRICS,
    "retrain": paths.RETRAIN_METRICS,
    "final": paths.FINAL_METRICS,
}


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(),
        metavar="DIR",
        help="read the stages' metrics and write the summary under DIR (default: here)",
    )


def run(name: str, args: argparse.Namespace) -> int:
    summary = write_summary(args.root)
    print(json.dumps(summary, indent=2))
    return 0


def _read(path: Path) -> dict[str, Any]:
    try:
        data = read_json(path)
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as e:
        raise StageError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise StageError(f"{path}: not a JSON object")
    return data


def _acceptance(speculative: Mapping[str, Any], name: str) -> Any:
    """A per-k acceptance figure at the chosen k (at the best k when no draft was chosen)."""
    k = speculative.get("chosen_k")
    if k:
        return speculative.get(f"{name}_k{k}")
    return speculative.get(f"{name}_best_k")


def summarize_metrics(files: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The headline keys from the stages' metrics (stage name -> its flat metrics; a stage
    without a file maps to {} or is absent). Every key is present; missing figures are None."""
    get = {stage: files.get(stage, {}) for stage in SOURCES}
    b, p, s, f = get["bootstrap"], get["profile"], get["speculative"], get["final"]
    summary: dict[str, Any] = {
        key: next((get[stage][key] for stage in MACHINE_FROM if key in get[stage]), None)
        for key in MACHINE_KEYS
    }
    summary["bootstrap_total_s"] = b.get("total_seconds")
    summary |= {f"profile_{name}_accuracy": p.get(f"{name}_accuracy") for name in SETS}
    summary["profile_generation_share"] = p.get("generation_share")
    summary["speculative_best_speedup"] = s.get("best_speedup")
    summary["speculative_chosen_k"] = s.get("chosen_k")
    summary["draft_acceptance_rate"] = _acceptance(s, "draft_acceptance_rate")
    summary["mean_acceptance_length"] = _acceptance(s, "mean_acceptance_length")
    for key in (
        "e2e_mean_s_baseline",
        "e2e_mean_s_optimized",
        "latency_ratio_optimized",
        "accuracy_optimized",
        *(f"{name}_accuracy_optimized" for name in SETS),
        "grounded_share_optimized",
        "criteria_met",
    ):
        summary[key] = f.get(key)
    return summary


def write_summary(root: Path = Path()) -> dict[str, Any]:
    """Read the stages' metrics under `root`, write `root`/metrics/summary.json."""
    files = {stage: _read(root / path) for stage, path in SOURCES.items()}
    summary = summarize_metrics(files)
    write_json(root / paths.SUMMARY_METRICS, summary)
    return summary

"""Where every stage reads and writes, relative to the project root (dvc.yaml names the same
paths; tests/test_layout.py checks that each output there is one of these)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

# The inputs, then each stage's outputs in pipeline order. The models and the corpus are
# bootstrap's, the concise data concise_data's, the concise model retrain's and the concise
# draft concise_draft's; the *_LOSS files are plot rows {model or run, iteration, loss, split}.
PARAMS = Path("params.yaml")
README = Path("README.md")
CORPUS = Path("data/corpus")
MAIN_MODEL = Path("models/main")
DRAFT_MODEL = Path("models/draft")
BOOTSTRAP_METRICS = Path("metrics/bootstrap.json")
BOOTSTRAP_EVAL = Path("metrics/bootstrap_eval.json")
BOOTSTRAP_LOSS = Path("metrics/bootstrap_loss.json")
PROFILE_METRICS = Path("metrics/profile.json")
PROFILE_RECORDS = Path("metrics/profile_records.json")
PROFILE_BREAKDOWN = Path("metrics/profile_breakdown.json")
PROFILE_REPORT = Path("reports/profile.md")
PROFILE_SERVER_LOG = Path("logs/profile-server.log")
SPECULATIVE_RESULTS = Path("results/speculative")
SPECULATIVE_METRICS = Path("metrics/speculative.json")
SPECULATIVE_BY_K = Path("metrics/speculative_by_k.json")
SPECULATIVE_CHOICE = Path("metrics/speculative_choice.json")
SPECULATIVE_REPORT = Path("reports/speculative.md")
GATE = Path("metrics/gate.json")
CONCISE_DATA = Path("data/concise")
CONCISE_MODEL = Path("models/concise")
RETRAIN_METRICS = Path("metrics/retrain.json")
RETRAIN_LOSS = Path("metrics/retrain_loss.json")
RETRAIN_LOGS = Path("logs/retrain")
CONCISE_DRAFT = Path("models/concise_draft")
FINAL_METRICS = Path("metrics/final.json")
FINAL_RECORDS = Path("metrics/final_records.json")
FINAL_COMPARISON = Path("metrics/final_comparison.json")
FINAL_ABLATION = Path("metrics/final_ablation.json")
FINAL_PER_QUERY = Path("metrics/final_per_query.json")
FINAL_REPORT = Path("reports/final.md")
FINAL_LOGS = Path("logs/final")

# summary: the headline keys of every stage's metrics, the only DVC `metrics` file (the
# stages' own metrics files are plain outputs), so `dvc exp show` fits a screen
SUMMARY_METRICS = Path("metrics/summary.json")

# the test suite's reliability figures
RELIABILITY = Path("reports/reliability.json")


def add_path_option(
    parser: argparse.ArgumentParser,
    flag: str,
    default: Path | None,
    what: str,
    metavar: str = "PATH",
) -> None:
    """`flag PATH`: where a command reads or writes `what`, `default` unless given."""
    shown = f" (default: {default})" if default is not None else ""
    parser.add_argument(flag, type=Path, default=default, metavar=metavar, help=f"{what}{shown}")

"""Where every stage reads and writes, relative to the project root (dvc.yaml names the same
paths; tests/test_layout.py checks that each output there is one of these)."""

from __future__ import annotations

from pathlib import Path

PARAMS = Path("params.yaml")
README = Path("README.md")

# bootstrap
CORPUS = Path("data/corpus")
MAIN_MODEL = Path("models/main")
DRAFT_MODEL = Path("models/draft")
BOOTSTRAP_METRICS = Path("metrics/bootstrap.json")
BOOTSTRAP_EVAL = Path("metrics/bootstrap_eval.json")
BOOTSTRAP_LOSS = Path("metrics/bootstrap_loss.json")  # plot rows {model, iteration, loss, split}

# profile
PROFILE_METRICS = Path("metrics/profile.json")
PROFILE_RECORDS = Path("metrics/profile_records.json")
PROFILE_BREAKDOWN = Path("metrics/profile_breakdown.json")
PROFILE_REPORT = Path("reports/profile.md")
PROFILE_SERVER_LOG = Path("logs/profile-server.log")

# speculative, speculative_report
SPECULATIVE_RESULTS = Path("results/speculative")
SPECULATIVE_METRICS = Path("metrics/speculative.json")
SPECULATIVE_BY_K = Path("metrics/speculative_by_k.json")
SPECULATIVE_CHOICE = Path("metrics/speculative_choice.json")
SPECULATIVE_REPORT = Path("reports/speculative.md")

# gate, concise_data, retrain, concise_draft
GATE = Path("metrics/gate.json")
CONCISE_DATA = Path("data/concise")
CONCISE_MODEL = Path("models/concise")
RETRAIN_METRICS = Path("metrics/retrain.json")
RETRAIN_LOSS = Path("metrics/retrain_loss.json")  # plot rows {run, iteration, loss, split}
RETRAIN_LOGS = Path("logs/retrain")
CONCISE_DRAFT = Path("models/concise_draft")

# final
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

"""`punie-lab readme`: rewrite README.md's results section from metrics/*.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from punie import paths
from punie.reports.readme import results_section, rewrite_readme
from punie.results import write_text_atomic


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--readme", type=Path, default=paths.README)
    parser.add_argument("--metrics", type=Path, default=Path("metrics"))


def run(name: str, args: argparse.Namespace) -> int:
    return run_readme(args.readme, args.metrics)


def run_readme(readme: Path, metrics_dir: Path) -> int:
    text = readme.read_text() if readme.exists() else ""
    new = rewrite_readme(text, results_section(metrics_dir))
    if new != text:
        write_text_atomic(readme, new)
    print(f"{readme}: results section {'rewritten' if new != text else 'already up to date'}")
    return 0

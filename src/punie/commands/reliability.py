"""`punie-lab reliability`: the reliability figures table from reports/reliability.json.

The test suite writes that file (tests/reliability_plugin.py) after a full run: how many
faults were injected and survived, how many of them were hard kills (SIGKILL of the lab or of
`dvc repro`, a hang-up) that left nothing running, how many hostile tool inputs were tried and
refused, how many `mlx_lm` processes were left behind and how many output-safety checks lost
data.
`--readme` rewrites the paths.README section between the reliability markers. The exit status is 1
when a figure misses its target, so CI can gate on it.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from punie import paths
from punie.errors import StageError
from punie.results import write_text_atomic

START = "<!-- reliability:start -->"
END = "<!-- reliability:end -->"
HEADING = "## Reliability"
REQUIRED = (
    "faults_injected",
    "faults_survived",
    "hostile_inputs_tried",
    "hostile_inputs_refused",
    "orphan_processes",
    "data_lost",
)


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    paths.add_path_option(parser, "--report", paths.RELIABILITY, "the reliability figures")
    parser.add_argument(
        "--readme",
        nargs="?",
        const=paths.README,
        type=Path,
        metavar="PATH",
        help=f"rewrite the reliability section of PATH (default {paths.README}) between "
        f"{START} and {END}",
    )


def load_figures(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise StageError(
            f"{path}: not found; run the whole test suite first (`nox -s tests`), which writes it"
        ) from None
    except json.JSONDecodeError as e:
        raise StageError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise StageError(f"{path}: expected a JSON object")
    for key in REQUIRED:
        if not isinstance(data.get(key), int):
            raise StageError(f"{path}: {key}: missing or not an integer")
    return data


def rows(f: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(figure, value, target, met) for each line of the table."""
    checks = f.get("output_safety_checks")
    lost_value = f"{f['data_lost']}" + (f" (of {checks} checks)" if checks is not None else "")
    hard: list[tuple[str, str, str, bool]] = []
    if isinstance(f.get("hard_kills"), int) and isinstance(f.get("hard_kills_survived"), int):
        # Schema 2 on: a report written before it has no such row.
        hard.append(
            (
                "hard kills (SIGKILL, hang-up) / survived",
                f"{f['hard_kills']} / {f['hard_kills_survived']}",
                "all survived",
                f["hard_kills"] > 0 and f["hard_kills_survived"] == f["hard_kills"],
            )
        )
    return [
        (
            "faults injected / survived",
            f"{f['faults_injected']} / {f['faults_survived']}",
            "all survived",
            f["faults_injected"] > 0 and f["faults_survived"] == f["faults_injected"],
        ),
        *hard,
        (
            "hostile inputs tried / refused",
            f"{f['hostile_inputs_tried']} / {f['hostile_inputs_refused']}",
            "all refused",
            f["hostile_inputs_tried"] > 0
            and f["hostile_inputs_refused"] == f["hostile_inputs_tried"],
        ),
        (
            "orphan mlx_lm processes after the suite",
            str(f["orphan_processes"]),
            "0",
            f["orphan_processes"] == 0,
        ),
        ("data lost", lost_value, "0", f["data_lost"] == 0),
    ]


def markdown(f: dict[str, Any], source: Path) -> str:
    lines = ["| figure | value | target |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {target} |" for name, value, target, _ in rows(f)]
    when = f.get("written_at", "")
    note = (
        f"Written by `punie-lab reliability --readme` from `{source}`, which the whole test "
        f"suite (`nox -s tests`) produces{f' ({when})' if when else ''}. A fault test "
        "survives when the run stops within its time with an error naming the cause, leaves "
        "no server behind and keeps previous outputs intact; a hard kill (the lab or its "
        "`dvc repro` killed with SIGKILL, as the OOM killer does, or hung up) survives when "
        "nothing it started is left running within seconds and outputs stay intact (a killed "
        "`dvc repro` then runs again to the end); a hostile input counts as "
        "refused when the tool refused or capped it and nothing outside the workspace was "
        "read or changed."
    )
    lines += ["", textwrap.fill(note, width=96, break_on_hyphens=False, break_long_words=False)]
    return "\n".join(lines)


def replace_section(text: str, body: str) -> str:
    """`text` with the part between the markers replaced; heading and markers appended when
    absent."""
    block = f"{START}\n{body}\n{END}"
    start, end = text.find(START), text.find(END)
    if start == -1 and end == -1:
        return f"{text.rstrip()}\n\n{HEADING}\n\n{block}\n"
    if start == -1 or end < start:
        raise StageError(f"paths.README: expected {START} before {END}")
    return text[:start] + block + text[end + len(END) :]


def print_table(f: dict[str, Any], source: Path) -> None:
    table = Table(title=f"reliability ({source})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("")
    for name, value, target, met in rows(f):
        table.add_row(name, value, target, "[green]ok[/]" if met else "[red]MISSED[/]")
    Console().print(table)
    if f.get("failed"):
        Console().print("failed: " + ", ".join(f["failed"]))


def run(name: str, args: argparse.Namespace) -> int:
    figures = load_figures(args.report)
    print_table(figures, args.report)
    if args.readme is not None:
        readme = Path(args.readme)
        try:
            text = readme.read_text()
        except FileNotFoundError:
            raise StageError(f"{readme}: not found") from None
        write_text_atomic(readme, replace_section(text, markdown(figures, args.report)))
        print(f"updated the reliability section of {readme}")
    missed = [figure for figure, _, _, met in rows(figures) if not met]
    if missed:
        raise StageError("reliability targets missed: " + "; ".join(missed))
    return 0

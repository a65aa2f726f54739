"""`punie-lab reliability` and the pytest plugin that counts fault and hostile tests."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from punie import cli
from punie.commands.reliability import END, START, replace_section

ROOT = Path(__file__).resolve().parents[1]

FIGURES = {
    "faults_injected": 30,
    "faults_survived": 30,
    "hostile_inputs_tried": 109,
    "hostile_inputs_refused": 109,
    "orphan_processes": 0,
    "data_lost": 0,
    "output_safety_checks": 12,
    "written_at": "2026-11-26 15:00 UTC",
}


def _lab(cwd: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    here = Path.cwd()
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["reliability", *args])
    finally:
        os.chdir(here)
    return code, out.getvalue(), err.getvalue()


def _report(tmp_path: Path, **changes: object) -> None:
    path = tmp_path / "reports" / "reliability.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**FIGURES, **changes}))


def test_readme_section_is_rewritten_between_the_markers(tmp_path: Path) -> None:
    _report(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"# Lab\n\n## Reliability\n\n{START}\nold\n{END}\n\n## After\n")
    code, out, _ = _lab(tmp_path, "--readme")
    assert code == 0
    assert "faults injected / survived" in out and "30 / 30" in out
    text = readme.read_text()
    assert "old" not in text and text.endswith(f"{END}\n\n## After\n")
    assert "| faults injected / survived | 30 / 30 | all survived |" in text
    assert "| hostile inputs tried / refused | 109 / 109 | all refused |" in text
    assert "| orphan mlx_lm processes after the suite | 0 | 0 |" in text
    assert "| data lost | 0 (of 12 checks) | 0 |" in text
    _lab(tmp_path, "--readme")
    assert readme.read_text() == text  # idempotent


def test_hard_kills_get_their_row_when_the_report_has_them(tmp_path: Path) -> None:
    _report(tmp_path, hard_kills=9, hard_kills_survived=9)
    code, out, _ = _lab(tmp_path)
    assert code == 0 and "hard kills" in out and "9 / 9" in out
    _report(tmp_path, hard_kills=9, hard_kills_survived=8)
    code, _, err = _lab(tmp_path)
    assert code == 1 and "hard kills" in err
    _report(tmp_path)  # a report from before hard kills were counted: no such row
    code, out, _ = _lab(tmp_path)
    assert code == 0 and "hard kills" not in out


def test_readme_without_markers_gets_a_reliability_section() -> None:
    text = replace_section("# Lab\n", "table")
    assert text == f"# Lab\n\n## Reliability\n\n{START}\ntable\n{END}\n"


def test_missed_targets_exit_1_and_are_named(tmp_path: Path) -> None:
    _report(tmp_path, faults_survived=29, orphan_processes=1)
    code, out, err = _lab(tmp_path)
    assert code == 1
    assert "MISSED" in out
    assert "faults injected / survived" in err and "orphan" in err


def test_missing_or_bad_report_says_what_to_run(tmp_path: Path) -> None:
    code, _, err = _lab(tmp_path)
    assert code == 1 and "nox -s tests" in err
    _report(tmp_path, data_lost="none")
    code, _, err = _lab(tmp_path)
    assert code == 1 and "data_lost: missing or not an integer" in err


_SUBSET = """
import pytest

@pytest.mark.fault(keeps_outputs=True)
def test_fault_kept():
    pass

@pytest.mark.fault(keeps_outputs=True)
def test_fault_lost():
    assert False

@pytest.mark.fault(hard_kill=True)
def test_hard_kill():
    pass

HOSTILE_THINGS = [("../x", "refused"), ("/etc", "refused")]

@pytest.mark.parametrize(("value", "expected"), HOSTILE_THINGS)
def test_hostile_table(value, expected):
    pass

@pytest.mark.parametrize(("value", "expected"), [("ok", "fine")])
def test_not_hostile(value, expected):
    pass
"""


def _pytest(tmp_path: Path, *args: str) -> tuple[dict | None, str]:
    """A nested pytest run of a small suite with the plugin: (figures written, output)."""
    (tmp_path / "test_demo.py").write_text(_SUBSET)
    (tmp_path / "conftest.py").write_text(
        "from tests.reliability_plugin import pytest_addoption as pytest_addoption\n"
        "from tests.reliability_plugin import register\n\n"
        "def pytest_configure(config):\n    register(config)\n"
    )
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)]
    cmd += ["--rootdir", str(tmp_path), *args]
    # No third-party plugins: hydra's (a dvc dependency) alone costs seconds per run.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    report = tmp_path / "figures.json"
    return (json.loads(report.read_text()) if report.exists() else None), proc.stdout


def test_plugin_counts_faults_hostile_cases_and_data_lost(tmp_path: Path) -> None:
    figures, _ = _pytest(tmp_path, "--reliability-report", str(tmp_path / "figures.json"))
    assert figures is not None
    assert (figures["faults_injected"], figures["faults_survived"]) == (3, 2)
    assert (figures["hard_kills"], figures["hard_kills_survived"]) == (1, 1)
    assert (figures["hostile_inputs_tried"], figures["hostile_inputs_refused"]) == (2, 2)
    assert figures["data_lost"] == 1 and figures["output_safety_checks"] == 2
    assert figures["orphan_processes"] == 0
    assert figures["failed"] == ["test_demo.py::test_fault_lost"]


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["-k", "kept"], "-k selection"),
        (["-m", "fault"], "-m selection"),
        (["-x"], "-x/--maxfail run"),
        ([], "not collected: test_faults.py"),  # a suite without the lab's fault tests
    ],
)
def test_plugin_never_writes_figures_of_a_subset_run(
    tmp_path: Path, args: list[str], why: str
) -> None:
    report = ROOT / "reports" / "reliability.json"
    before = report.read_bytes() if report.exists() else None
    figures, out = _pytest(tmp_path, *args)
    assert figures is None
    assert f"reports/reliability.json not written ({why}" in out, out
    assert (report.read_bytes() if report.exists() else None) == before

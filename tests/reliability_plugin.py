"""Counts fault-injection and hostile-input tests and writes reports/reliability.json.

Registered by tests/conftest.py. What counts:
- a fault test is one marked `@pytest.mark.fault`; it survived when it passed. Fault tests
  marked `fault(keeps_outputs=True)` assert that previous outputs are intact, so each of them
  that fails counts as data lost. Those marked `fault(hard_kill=True)` kill the lab or the
  `dvc repro` running it without warning (SIGKILL, as the OOM killer does) or hang it up
  (SIGHUP, a closed terminal); they are counted again as hard kills, survived when nothing
  the run started is left running.
- a hostile case is one marked `@pytest.mark.hostile`, or one case of a test parametrized
  from a module-level `HOSTILE_*` table, or any test of tests/test_sandbox_properties.py;
  it was refused when it passed.
- orphans are `mlx_lm` processes still running at the end that carry this session's token
  in their environment (the plugin sets it, every server and subprocess inherits it), so
  servers that other programs run on the same machine are not counted.

The file is written only for a full run: no -k, -m, -x, --lf, --deselect or --collect-only,
no node ids on the command line, and every reliability test file present on disk was
collected. A subset run never clobbers the figures; `--reliability-report PATH` forces the
write (to PATH).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "reports" / "reliability.json"
TOKEN_ENV = "PUNIE_TEST_SESSION"
# Test files that hold fault or hostile tests: a run that skips one of them is a subset.
RELIABILITY_FILES = (
    "test_faults.py",
    "test_server.py",
    "test_agent.py",
    "test_tools.py",
    "test_sandbox_properties.py",
)
PROPERTY_FILE = "test_sandbox_properties.py"
SCHEMA_VERSION = 2  # 2: hard_kills, hard_kills_survived


@dataclass
class _Tally:
    token: str
    started: float = field(default_factory=time.monotonic)
    files: set[str] = field(default_factory=set)
    # nodeid -> (kind, keeps_outputs, hard_kill); kind is "fault" or "hostile"
    kinds: dict[str, tuple[str, bool, bool]] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)


def _hostile_tables(module: Any) -> list[Any]:
    tables = []
    for name, value in vars(module).items():
        if name.startswith("HOSTILE_") and isinstance(value, list | tuple):
            tables.extend(value)
    return tables


def _param_values(item: pytest.Item) -> list[Any]:
    callspec = getattr(item, "callspec", None)
    return list(callspec.params.values()) if callspec is not None else []


def _is_from_table(item: pytest.Item, table: list[Any]) -> bool:
    """True if the case's parameters are one row of a HOSTILE_* table."""
    values = _param_values(item)
    if not values:
        return False
    for row in table:
        cells = list(row) if isinstance(row, tuple | list) else [row]
        # Either the row's cells are the parameters, or the whole row is one parameter.
        if cells[: len(values)] == values or (len(values) == 1 and values[0] == row):
            return True
    return False


def classify(item: pytest.Item) -> tuple[str, bool, bool] | None:
    """(kind, keeps_outputs, hard_kill) of a reliability test, None for any other test."""
    fault = item.get_closest_marker("fault")
    if fault is not None:
        keeps = bool(fault.kwargs.get("keeps_outputs", False))
        return "fault", keeps, bool(fault.kwargs.get("hard_kill", False))
    if item.get_closest_marker("hostile") is not None:
        return "hostile", False, False
    path = Path(str(item.path))
    if path.name == PROPERTY_FILE:
        return "hostile", False, False
    module = getattr(item, "module", None)
    if module is not None and _is_from_table(item, _hostile_tables(module)):
        return "hostile", False, False
    return None


def session_mlx_pids(token: str | None = None) -> list[int]:
    """Running `mlx_lm` processes started by this test session (its token is in their
    environment); servers of other programs and other test runs on the machine are ignored."""
    import psutil

    token = token or os.environ.get(TOKEN_ENV)
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if "mlx_lm" not in cmdline or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if token is not None and proc.environ().get(TOKEN_ENV) == token:
                found.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return found


def _orphans(token: str, grace_s: float = 3.0) -> list[int]:
    """This session's `mlx_lm` processes still running (after a short grace for exits)."""
    deadline = time.monotonic() + grace_s
    while (found := session_mlx_pids(token)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


class ReliabilityPlugin:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        # A parent run's token is kept so a nested pytest shares it.
        token = os.environ.setdefault(TOKEN_ENV, uuid.uuid4().hex)
        self.tally = _Tally(token=token)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            self.tally.files.add(Path(str(item.path)).name)
            kind = classify(item)
            if kind is not None:
                self.tally.kinds[item.nodeid] = kind
                item.add_marker(kind[0])

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        outcomes = self.tally.outcomes
        # A test that failed in setup or teardown failed; a skipped test did not run.
        if report.failed:
            outcomes[report.nodeid] = "failed"
        elif report.skipped and report.when in ("setup", "call"):
            outcomes.setdefault(report.nodeid, "skipped")
        elif report.when == "call" and report.passed:
            outcomes.setdefault(report.nodeid, "passed")

    def _full_run(self) -> tuple[bool, str]:
        opt = self.config.option
        if getattr(opt, "collectonly", False):
            return False, "--collect-only"
        if getattr(opt, "maxfail", 0):
            return False, "-x/--maxfail run"
        if getattr(opt, "keyword", ""):
            return False, "-k selection"
        if getattr(opt, "markexpr", ""):
            return False, "-m selection"
        if getattr(opt, "lf", False) or getattr(opt, "failedfirst", False):
            return False, "--lf/--ff run"
        if getattr(opt, "deselect", None):
            return False, "--deselect"
        if any("::" in a for a in self.config.args):
            return False, "node ids on the command line"
        here = Path(__file__).resolve().parent
        missing = [
            f for f in RELIABILITY_FILES if (here / f).exists() and f not in self.tally.files
        ]
        if missing:
            return False, f"not collected: {', '.join(missing)}"
        return True, ""

    def figures(self) -> dict[str, Any]:
        t = self.tally
        rows = {
            nodeid: (kind, keeps, t.outcomes[nodeid])
            for nodeid, (kind, keeps, _) in t.kinds.items()
            if t.outcomes.get(nodeid) in ("passed", "failed")
        }
        hard = [o for n, (_, _, o) in rows.items() if t.kinds[n][2]]

        def count(kind: str, outcome: str | None = None) -> int:
            return sum(1 for k, _, o in rows.values() if k == kind and outcome in (None, o))

        orphans = _orphans(t.token)
        return {
            "schema": SCHEMA_VERSION,
            "faults_injected": count("fault"),
            "faults_survived": count("fault", "passed"),
            "hostile_inputs_tried": count("hostile"),
            "hostile_inputs_refused": count("hostile", "passed"),
            "hard_kills": len(hard),
            "hard_kills_survived": hard.count("passed"),
            "orphan_processes": len(orphans),
            "orphan_pids": orphans,
            "data_lost": sum(1 for k, keeps, o in rows.values() if keeps and o == "failed"),
            "output_safety_checks": sum(1 for k, keeps, _ in rows.values() if keeps),
            "property_tests": sum(1 for n in rows if Path(n.split("::")[0]).name == PROPERTY_FILE),
            "failed": sorted(n for n, (_, _, o) in rows.items() if o == "failed"),
            "suite_duration_s": round(time.monotonic() - t.started, 1),
            "written_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "python": sys.version.split()[0],
            "platform": sys.platform,
        }

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        forced = self.config.getoption("reliability_report")
        full, why = self._full_run()
        if exitstatus in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.USAGE_ERROR):
            full, why = False, "the run was interrupted"
        if not (forced or full):
            if self.tally.kinds:
                self._say(f"reports/reliability.json not written ({why})")
            return
        ran = [n for n in self.tally.kinds if self.tally.outcomes.get(n) in ("passed", "failed")]
        if not ran and not forced:
            self._say("reports/reliability.json not written (no fault or hostile test ran)")
            return
        from punie.results import write_json

        path = Path(forced) if forced else REPORT
        figures = self.figures()
        write_json(path, figures)
        self._say(
            f"{path}: faults {figures['faults_survived']}/{figures['faults_injected']} survived, "
            f"hostile {figures['hostile_inputs_refused']}/{figures['hostile_inputs_tried']} "
            f"refused, hard kills {figures['hard_kills_survived']}/{figures['hard_kills']} "
            f"survived, orphans {figures['orphan_processes']}, data lost {figures['data_lost']}"
        )

    def _say(self, text: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"reliability: {text}")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability-report",
        default=None,
        metavar="PATH",
        help="always write the reliability figures to PATH (default: reports/reliability.json, "
        "written only on a full run)",
    )


def register(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("punie-reliability"):
        config.pluginmanager.register(ReliabilityPlugin(config), "punie-reliability")

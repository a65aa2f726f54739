"""Sessions: lint, ty, tests (the README's test command) and repro (the whole pipeline)."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "ty", "tests"]
nox.options.reuse_venv = "yes"

PYTHON = "3.11"
SOURCES = ["src", "tests", "noxfile.py"]


# Exact versions: the embedded models are trained from scratch, so the installed packages are
# part of what dvc.lock reproduces (see constraints.txt).
CONSTRAINTS = ("-c", "constraints.txt")


def _install(session: nox.Session) -> None:
    session.install(*CONSTRAINTS, "-e", ".[otel]", "--group", "dev")


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install(*CONSTRAINTS, "ruff")
    session.run("ruff", "check", *SOURCES)
    session.run("ruff", "format", "--check", *SOURCES)


@nox.session(python=PYTHON)
def ty(session: nox.Session) -> None:
    """Type-check the package with ty."""
    _install(session)
    session.run("ty", "check", "src")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite, slow end-to-end tests included (`-m "not slow"` for the fast set)."""
    _install(session)
    session.run("pytest", *(session.posargs or ["-q"]))
    if not session.posargs:
        # A full run wrote reports/reliability.json; fail if any reliability figure misses.
        session.run("punie-lab", "reliability")


@nox.session(python=PYTHON, default=False)
def repro(session: nox.Session) -> None:
    """Run the whole DVC pipeline (`dvc repro`); pass stage names to run only those, and
    `dvc repro` options after `--` (`nox -s repro -- --force`)."""
    _install(session)
    session.run("dvc", "repro", *session.posargs)
    session.run("dvc", "metrics", "show")
    if all(a.startswith("-") for a in session.posargs):  # no stage named: the whole pipeline
        session.run("punie-lab", "readme")  # the README's results section, from the metrics

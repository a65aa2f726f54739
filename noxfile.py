"""Sessions: lint, ty, tests (the README's test command), repro (the whole pipeline) and mac
(the whole pipeline on a real model pair, as on the user's Mac)."""

from __future__ import annotations

import shlex

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


# The Mac path: the whole pipeline on a hub model pair with one 30B server up at a time. Only
# the two model ids vary; CI runs these exact overrides on the real-shape pair
# (punie-lab/qwen3-moe-tiny-5bit, punie-lab/qwen3-tiny-4bit), tests/test_mac.py checks it.
MAC_MODELS = ("mlx-community/Qwen3-30B-A3B-5bit", "mlx-community/Qwen3-0.6B-4bit")
MAC_OVERRIDES = (
    # Qwen3 thinks by default; with max_tokens 256 a 30B model's thinking would crowd out
    # the answer (the final stage then reports the thinking_off lever as already applied).
    # `++`: DVC's override of the empty `{}` as `server.chat_template_args={...}` fails
    # ("Key 'enable_thinking' is not in struct"); `++` adds the key, or replaces it.
    "++server.chat_template_args.enable_thinking=false",
    # Two ~20 GB servers do not fit in 32 GB: one server up at a time everywhere.
    "speculative.interleave=false",
    "final.interleave=false",
    "conciseness.parallel_servers=1",
    # One k (Qwen3-0.6B drafting for 30B-A3B) and no k=0 control server: one draft server.
    "speculative.num_draft_tokens=[3]",
    "speculative.control=false",
    # Retrain whatever the profile says (the seed plan measured 98 % generation), two
    # candidates of one LoRA run.
    "conciseness.force=true",
    "conciseness.lora.iters=[10, 20]",
    # Every configuration of every stage answers every query (about a dozen configurations):
    # the seed's 5 and 6 of each held-out set, evenly spread, instead of 5 + 44 + 72; and the
    # acceptance probe replays 16 of their prompts (each three times: main, draft, drafting).
    "queries.per_set=6",
    "speculative.acceptance_prompts=16",
    # With hub ids bootstrap builds only the corpus, and only the concise draft's distillation
    # reads it (its first conciseness.draft.rows rows).
    "bootstrap.corpus.train=1200",
)


def mac_sets(main: str, draft: str) -> list[str]:
    """The `-S` arguments of the Mac path for this model pair."""
    sets = [f"models.main={main}", f"models.draft={draft}", *MAC_OVERRIDES]
    return [a for s in sets for a in ("-S", s)]


def mac_command(main: str, draft: str) -> list[str]:
    """`dvc exp run` with the Mac overrides for this model pair."""
    return ["dvc", "exp", "run", *mac_sets(main, draft)]


@nox.session(python=PYTHON, default=False)
def mac(session: nox.Session) -> None:
    """The whole pipeline on a real model pair, one server at a time (README, "Running it on
    a Mac"): `nox -s mac` for Qwen3-30B-A3B-5bit + Qwen3-0.6B-4bit, `nox -s mac -- MAIN DRAFT`
    for other hub ids or directories, `dvc exp run` options after them (`-n NAME`). The
    models must be in the Hugging Face cache (`hf download <id>`); `punie-lab doctor` checks
    them first, with the same overrides."""
    if len(session.posargs) == 1:
        session.error("give both model ids: nox -s mac -- MAIN DRAFT")
    main, draft = session.posargs[:2] if session.posargs else MAC_MODELS
    _install(session)
    # The preflight checks params.yaml as the experiment will have it (with the overrides:
    # without them, two 30B servers at once fail its memory check).
    session.run("punie-lab", "doctor", *mac_sets(main, draft))
    cmd = [*mac_command(main, draft), *session.posargs[2:]]
    session.log(shlex.join(cmd))
    session.run(*cmd)
    session.run("dvc", "metrics", "show")

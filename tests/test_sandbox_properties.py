"""Property tests: random paths and commands never crash, never read outside the workspace,
never change anything and never return more than the output cap."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from punie.agent.tools import ALLOWED_PROGRAMS, Workspace, read_file, run_command
from tests.test_tools import SECRET, make_workspace, snapshot

CAP = 500
# The longest note _cap appends; every result fits in CAP plus this.
NOTE = len(f"\n[output truncated at {CAP} chars]")

# Pieces that attack the sandbox: traversal, absolute and home paths, symlinks that point
# out (link_out, link_dir) or loop, shell syntax, dangerous options, NUL bytes and floods
# (big.txt). "fifo" is left out on purpose: reading it just waits for the timeout, which
# test_tools covers once.
WORDS = [
    "..", ".", "/", "//", "~", "~root", "pkg", "mod.py", "notes.txt", "link_out", "link_dir",
    "link_in", "loop", "secret.txt", "outside", "big.txt", "bin.dat", "latin1.txt", "*",
    "-r", "-R", "-n", "-l", "-L", "-H", "-c", "-exec", "-execdir", "-delete", "-fprint", "-f",
    "-F", "--follow", "--file=", "--include=*.py", "-name", "-type", "-maxdepth", "{}", "+",
    ";", "|", "&", "&&", "||", ">", ">>", "<", "`", "$(", "${", "$", "\x00", "\n", "'", '"',
    "\\", "%2e%2e", "def", "hello", "etc", "passwd", "proc", "self", "environ", "dev", "zero",
    "1", "100000",
]  # fmt: skip

# Names that exist in the trap workspace (or one level out), so many inputs get past the
# syntax checks and really run or really read.
NAMES = ["pkg", "mod.py", "notes.txt", "link_in", "link_out", "link_dir", "loop", "..", ".",
         "outside", "secret.txt", "big.txt", "bin.dat"]  # fmt: skip
OPTIONS = ["-r", "-R", "-n", "-l", "-L", "-H", "-a", "-la", "-c", "-n", "5", "-name", "*.txt",
           "-type", "f", "-maxdepth", "3", "-s", "hello", "TOP", "."]  # fmt: skip

word = st.one_of(st.sampled_from(WORDS), st.text(max_size=12))
hostile_paths = st.lists(word, min_size=1, max_size=6).flatmap(
    lambda parts: st.sampled_from(["", "/"]).map(lambda sep: sep.join(parts))
)
near_paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=4).map("/".join)
paths = st.one_of(hostile_paths, near_paths)

programs = st.sampled_from([*ALLOWED_PROGRAMS, "sh", "rm", "python3", "/bin/cat", "./ls", ""])
hostile_commands = st.tuples(programs, st.lists(word, max_size=8)).map(
    lambda t: " ".join([t[0], *t[1]])
)
plausible_commands = st.tuples(
    st.sampled_from(ALLOWED_PROGRAMS),
    st.lists(st.one_of(st.sampled_from(OPTIONS), near_paths), max_size=6),
).map(lambda t: " ".join([t[0], *t[1]]))
commands = st.one_of(hostile_commands, plausible_commands)


@pytest.fixture(scope="module")
def trap(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    base = tmp_path_factory.mktemp("sandbox")
    return make_workspace(base, timeout_s=1.0, output_cap=CAP, big=True)


def _check(ws: Workspace, out: object) -> None:
    assert isinstance(out, str)
    assert SECRET not in out
    assert len(out) <= CAP + NOTE


def test_random_paths_stay_inside(trap: Workspace):
    before = snapshot(trap.root.parent)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(paths)
    def check(path: str) -> None:
        out = read_file(trap, path)
        _check(trap, out)
        if not out.startswith(("refused:", "error:")):
            # Whatever was read is a text file that really resolves inside the workspace.
            target = (trap.root / path.strip()).resolve()
            assert target.is_relative_to(trap.root.resolve())
            assert out.split("\n[output truncated")[0] in target.read_text()

    check()
    assert snapshot(trap.root.parent) == before


def test_random_commands_stay_inside(trap: Workspace):
    before = snapshot(trap.root.parent)

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
    @given(commands)
    def check(command: str) -> None:
        _check(trap, run_command(trap, command))

    check()
    assert snapshot(trap.root.parent) == before


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(["cat", "head -n", "tail -n", "grep -n line"]), st.integers(1, 10**6))
def test_floods_are_capped(tmp_path_factory: pytest.TempPathFactory, program: str, n: int):
    ws = _flood_workspace(tmp_path_factory)
    command = f"{program} {n} big.txt" if program != "cat" else "cat big.txt big.txt"
    out = run_command(ws, command)
    assert len(out) <= CAP + NOTE
    assert not out.startswith(("refused:", "error:")), out


_FLOOD: list[Workspace] = []


def _flood_workspace(factory: pytest.TempPathFactory) -> Workspace:
    # Built once: hypothesis calls the test many times, a 5 MB file per example is waste.
    if not _FLOOD:
        _FLOOD.append(make_workspace(factory.mktemp("flood"), output_cap=CAP, big=True))
    return _FLOOD[0]


def test_sample_workspace_is_untouched_by_random_commands():
    root = Path(__file__).resolve().parents[1] / "data" / "workspace"
    before = snapshot(root)
    ws = Workspace(root, timeout_s=2.0, output_cap=CAP)

    @settings(max_examples=60, deadline=None)
    @given(commands)
    def check(command: str) -> None:
        _check(ws, run_command(ws, command))

    check()
    assert snapshot(root) == before

"""The sandboxed workspace tools: hostile inputs are refused or capped, real work works.

HOSTILE_PATHS and HOSTILE_COMMANDS are module-level tables so the reliability report can count
the cases: each is (input, expected prefix "refused:"/"error:", substring of the reason).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from punie.agent import tools
from punie.agent.tools import Workspace, read_file, run_command

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = Workspace(ROOT / "data" / "workspace")
SECRET = "TOPSECRET-7f3a"
BIG_LINES = 200_000  # ~5 MB


def make_workspace(
    base: Path, *, timeout_s: float = 2.0, output_cap: int = 4000, big: bool = False
) -> Workspace:
    """A workspace with traps: symlinks out, a loop, a FIFO, binary, non-UTF-8 (and a big file).

    The secret lives in a sibling directory; no tool output may ever contain it.
    """
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(f"{SECRET}\n")
    root = base / "ws"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "mod.py").write_text("def hello():\n    return 'hi'\n")
    (root / "notes.txt").write_text("plain notes\n")
    (root / "bin.dat").write_bytes(b"\x00\x01\x02binary")
    (root / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    if big:
        with (root / "big.txt").open("w") as f:
            f.writelines(f"line {i:07d} of a big file\n" for i in range(BIG_LINES))
    (root / "link_out").symlink_to(outside / "secret.txt")
    (root / "link_dir").symlink_to(outside, target_is_directory=True)
    (root / "link_in").symlink_to(root / "notes.txt")
    (root / "loop").symlink_to(root / "loop")
    os.mkfifo(root / "fifo")
    return Workspace(root, timeout_s=timeout_s, output_cap=output_cap)


def snapshot(base: Path) -> dict[str, str]:
    """Every entry under base (workspace and outside) with its content hash or link target."""
    state: dict[str, str] = {}
    for path in sorted(base.rglob("*")):
        rel = str(path.relative_to(base))
        if path.is_symlink():
            state[rel] = f"link:{os.readlink(path)}"
        elif path.is_file() and not rel.endswith("fifo"):
            state[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            state[rel] = "dir-or-special"
    return state


@pytest.fixture
def hostile(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


HOSTILE_PATHS: list[tuple[str, str, str]] = [
    ("", "refused:", "empty"),
    ("   ", "refused:", "empty"),
    ("../outside/secret.txt", "refused:", "'..'"),
    ("pkg/../../outside/secret.txt", "refused:", "'..'"),
    ("./../outside/secret.txt", "refused:", "'..'"),
    ("pkg//..//..//outside/secret.txt", "refused:", "'..'"),
    ("..", "refused:", "'..'"),
    ("/etc/passwd", "refused:", "absolute"),
    ("//etc/passwd", "refused:", "absolute"),
    ("/proc/self/environ", "refused:", "absolute"),
    ("~/.ssh/id_rsa", "refused:", "~"),
    ("~root/.bashrc", "refused:", "~"),
    ("link_out", "refused:", "outside the workspace"),
    ("link_dir/secret.txt", "refused:", "outside the workspace"),
    ("loop", "refused:", "symlink loop"),
    ("pkg/mod.py\x00.txt", "refused:", "NUL"),
    ("a/" * 300, "refused:", "longer than"),
    (".", "refused:", "directory"),
    ("pkg", "refused:", "directory"),
    ("bin.dat", "refused:", "binary"),
    ("latin1.txt", "refused:", "not UTF-8"),
    ("fifo", "refused:", "not a regular file"),
    ("missing.py", "error:", "no such file"),
    ("%2e%2e/outside/secret.txt", "error:", "no such file"),
]

HOSTILE_COMMANDS: list[tuple[str, str, str]] = [
    ("", "refused:", "empty"),
    ("cat ../outside/secret.txt", "refused:", "'..'"),
    ("grep -r TOPSECRET ..", "refused:", "'..'"),
    ("ls pkg/../..", "refused:", "'..'"),
    ("cat /etc/passwd", "refused:", "absolute"),
    ("grep -r TOPSECRET /", "refused:", "absolute"),
    ("find / -name secret.txt", "refused:", "absolute"),
    ("find . -newer /etc/passwd", "refused:", "absolute"),
    ("head -c 100 /dev/zero", "refused:", "absolute"),
    ("ls ~", "refused:", "~"),
    ("cat ~/.bashrc", "refused:", "~"),
    ("cat link_out", "refused:", "outside the workspace"),
    ("cat link_dir/secret.txt", "refused:", "outside the workspace"),
    ("ls link_dir", "refused:", "outside the workspace"),
    ("grep -r TOPSECRET link_dir", "refused:", "outside the workspace"),
    ("cat loop", "refused:", "symlink loop"),
    ("grep -R TOPSECRET .", "refused:", "-R"),
    ("grep -rnR TOPSECRET .", "refused:", "-R"),
    ("grep --dereference-recursive TOPSECRET .", "refused:", "--dereference-recursive"),
    ("grep --file=/etc/passwd .", "refused:", "carries a path"),
    ("grep -f/etc/passwd .", "refused:", "carries a path"),
    ("grep -f ../outside/secret.txt .", "refused:", "'..'"),
    ("find -L . -name secret.txt", "refused:", "-L"),
    ("find . -follow", "refused:", "-follow"),
    ("find . -exec cat {} +", "refused:", "-exec"),
    ("find . -execdir rm {} +", "refused:", "-execdir"),
    ("find . -ok rm {} +", "refused:", "-ok"),
    ("find . -okdir rm {} +", "refused:", "-okdir"),
    ("find . -delete", "refused:", "-delete"),
    ("find . -fprint out.txt", "refused:", "-fprint"),
    ("find . -fprint0 out.txt", "refused:", "-fprint0"),
    ("find . -fprintf out.txt %p", "refused:", "-fprintf"),
    ("find . -fls out.txt", "refused:", "-fls"),
    ("ls -L link_in", "refused:", "-L"),
    ("ls -lL .", "refused:", "-L"),
    ("ls --dereference .", "refused:", "--dereference"),
    ("tail -f notes.txt", "refused:", "-f"),
    ("tail -F notes.txt", "refused:", "-F"),
    ("tail --follow=name notes.txt", "refused:", "--follow"),
    ("grep -r --dereference-rec TOPSECRET .", "refused:", "--dereference-recursive"),
    ("ls --deref link_in", "refused:", "--dereference"),
    ("tail --fol notes.txt", "refused:", "--follow"),
    ("wc --files0-from=notes.txt", "refused:", "--files0-from"),
    ("find . -files0-from notes.txt", "refused:", "-files0-from"),
    ("rg --pre cat TOPSECRET .", "refused:", "--pre"),
    ("rg -L TOPSECRET .", "refused:", "-L"),
    ("rg --search-zip TOPSECRET .", "refused:", "--search-zip"),
    ("cat notes.txt; cat ../outside/secret.txt", "refused:", "';'"),
    ("find . -exec rm {} \\;", "refused:", "';'"),
    ("ls && rm -rf .", "refused:", "'&'"),
    ("ls || true", "refused:", "'|'"),
    ("cat notes.txt | sh", "refused:", "'|'"),
    ("grep `whoami` .", "refused:", "'`'"),
    ("cat $(echo notes.txt)", "refused:", "'$('"),
    ("cat ${HOME}/x", "refused:", "'${'"),
    ("ls > listing.txt", "refused:", "'>'"),
    ("cat < notes.txt", "refused:", "'<'"),
    ("ls &", "refused:", "'&'"),
    ("ls\nrm -rf .", "refused:", "newline"),
    ("cat notes.txt\x00", "refused:", "NUL"),
    ("rm -rf .", "refused:", "not an allowed program"),
    ("sh -c ls", "refused:", "not an allowed program"),
    ("bash", "refused:", "not an allowed program"),
    ("python3 -c 'print(1)'", "refused:", "not an allowed program"),
    ("/bin/cat notes.txt", "refused:", "not an allowed program"),
    ("./cat notes.txt", "refused:", "not an allowed program"),
    ("env", "refused:", "not an allowed program"),
    ("sed -i s/a/b/ notes.txt", "refused:", "not an allowed program"),
    ("tee out.txt", "refused:", "not an allowed program"),
    ("cp notes.txt copy.txt", "refused:", "not an allowed program"),
    ("curl http://example.com", "refused:", "not an allowed program"),
    ("xargs cat", "refused:", "not an allowed program"),
    ("ls " + "a " * 70, "refused:", "more than"),
    ("grep " + "x" * 1100, "refused:", "longer than"),
    ("grep 'unterminated", "error:", "cannot parse"),
]


@pytest.mark.parametrize(("path", "prefix", "reason"), HOSTILE_PATHS)
def test_read_file_refuses_hostile_paths(hostile: Workspace, path: str, prefix: str, reason: str):
    before = snapshot(hostile.root.parent)
    out = read_file(hostile, path)
    assert out.startswith(prefix), out
    assert reason in out, out
    assert SECRET not in out
    assert snapshot(hostile.root.parent) == before


@pytest.mark.parametrize(("command", "prefix", "reason"), HOSTILE_COMMANDS)
def test_run_command_refuses_hostile_commands(
    hostile: Workspace, command: str, prefix: str, reason: str
):
    before = snapshot(hostile.root.parent)
    out = run_command(hostile, command)
    assert out.startswith(prefix), out
    assert reason in out, out
    assert SECRET not in out
    assert snapshot(hostile.root.parent) == before


@pytest.mark.hostile
def test_recursive_grep_does_not_follow_symlinks_out(hostile: Workspace):
    out = run_command(hostile, "grep -rn TOPSECRET .")
    assert SECRET not in out
    assert out.startswith("(no output, exit status 1)")


def test_symlink_inside_the_workspace_is_allowed(hostile: Workspace):
    assert read_file(hostile, "link_in") == "plain notes\n"
    assert run_command(hostile, "cat link_in") == "plain notes\n"


@pytest.fixture
def flooded(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path, big=True)


@pytest.mark.hostile
def test_big_file_is_capped(flooded: Workspace):
    out = read_file(flooded, "big.txt")
    assert out.startswith("line 0000000 of a big file")
    assert out.endswith("[output truncated at 4000 chars]")
    assert len(out) < 4100


@pytest.mark.hostile
def test_output_flood_is_capped_and_killed_quickly(flooded: Workspace):
    start = time.perf_counter()
    out = run_command(flooded, "cat big.txt big.txt big.txt")
    assert time.perf_counter() - start < flooded.timeout_s
    assert out.endswith("[output truncated at 4000 chars]")
    assert len(out) < 4100


@pytest.mark.hostile
def test_timeout_kills_the_command(tmp_path: Path):
    ws = make_workspace(tmp_path, timeout_s=0.5)
    start = time.perf_counter()
    out = run_command(ws, "cat fifo")  # no writer: blocks until killed
    assert out.startswith("error: command timed out after 0.5s"), out
    assert time.perf_counter() - start < 3


@pytest.mark.hostile
def test_minimal_environment(hostile: Workspace, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PUNIE_TEST_API_KEY", "s3cret-token")
    root = hostile.root.resolve()
    out = tools._execute(["/usr/bin/env"], hostile, root)
    assert "s3cret-token" not in out
    assert f"PATH={tools.SAFE_PATH}" in out


@pytest.mark.hostile
@pytest.mark.skipif(tools._PRLIMIT is None, reason="util-linux prlimit not installed")
def test_child_cannot_write_files(hostile: Workspace):
    """Defence in depth under the allow-list: RLIMIT_FSIZE=0 stops any write that slips by."""
    root = hostile.root.resolve()
    tools._execute(["/bin/cp", "notes.txt", "copy.txt"], hostile, root)
    copy = root / "copy.txt"
    assert not copy.exists() or copy.stat().st_size == 0


READ_OK: list[tuple[str, str]] = [
    ("accounts/serializers.py", "class UserSerializer(serializers.ModelSerializer):"),
    ("orders/tasks.py", "async def notify_shipping"),
    ("./shop/urls.py", "urlpatterns"),
    ("README.md", "# shop"),
]

COMMANDS_OK: list[tuple[str, str]] = [
    ('grep -rn "class .*View" .', "accounts/views.py:14:class UserListView"),
    ('grep -rn "async def" .', "orders/tasks.py:15:async def notify_shipping"),
    ("grep -rn UserSerializer --include=*.py .", "accounts/serializers.py"),
    ('find . -name "*.py"', "./orders/views.py"),
    ("ls accounts", "serializers.py"),
    ("cat manage.py", "DJANGO_SETTINGS_MODULE"),
    ("head -n 3 orders/services.py", "Business logic"),
    ("tail -n 2 orders/tasks.py", "return 0"),
    ("wc -l accounts/views.py", "accounts/views.py"),
    ('grep -n "View$" accounts/views.py', "8:from rest_framework.views import APIView"),
]


@pytest.mark.parametrize(("path", "expected"), READ_OK)
def test_read_file_on_the_sample_workspace(path: str, expected: str):
    assert expected in read_file(SAMPLE, path)


@pytest.mark.parametrize(("command", "expected"), COMMANDS_OK)
def test_run_command_on_the_sample_workspace(command: str, expected: str):
    out = run_command(SAMPLE, command)
    assert expected in out, out


def test_failing_command_reports_exit_status():
    out = run_command(SAMPLE, "ls no_such_dir")
    assert "No such file" in out
    assert out.endswith("[exit status 2]")


def test_sample_workspace_has_the_code_the_queries_name():
    files = {str(p.relative_to(SAMPLE.root)) for p in SAMPLE.root.rglob("*.py")}
    assert {
        "manage.py",
        "shop/settings.py",
        "shop/urls.py",
        "accounts/views.py",
        "accounts/serializers.py",
        "accounts/models.py",
        "orders/views.py",
        "orders/tasks.py",
        "orders/services.py",
        "tests/test_views.py",
        "tests/test_orders.py",
    } <= files

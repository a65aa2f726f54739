"""The launcher (`python -m punie.serving.launch ... -- MODULE ARGS`): it runs a module exactly
as `python -m` does, installs the named server patches first, and kills its own process group (never
its parent's) when its lifeline reaches end of file. Deaths of real parents are in
tests/test_faults.py (hard deaths)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from punie.serving import launch
from punie.serving.config import ServerConfig
from punie.serving.patching import main as patching_main
from punie.serving.patching import patched_command
from punie.serving.runtime import run_captured
from punie.serving.server import ServerProcess, build_server_command

PROBE = """
import json, sys
server = sys.modules.get("mlx_lm.server")  # installed patched before this module ran
code = server.ResponseGenerator._serve_single.__code__ if server else None
patched = code is not None and "patched:" in code.co_filename
print(json.dumps({"argv": sys.argv, "name": __name__, "patched": patched}))
sys.exit(int(sys.argv[1]))
"""
SLEEPER = "import sys, time\nprint('ready', flush=True)\ntime.sleep(float(sys.argv[1]))\n"


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """`probe` and `sleeper` importable here and in children; the children's environment."""
    (tmp_path / "probe.py").write_text(PROBE)
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return {**os.environ}


def test_runs_a_module_exactly_like_python_m(modules: dict[str, str]) -> None:
    cmd = [sys.executable, "-m", "probe", "3", "--flag", "x y"]
    plain = subprocess.run(cmd, capture_output=True, text=True, env=modules, check=False)
    proc = launch.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, plain.returncode) == (3, 3), err
    assert json.loads(out) == json.loads(plain.stdout)  # same argv (argv[0]: the file), name
    assert json.loads(out)["name"] == "__main__"
    assert launch.LAUNCHER in proc.args and "--lifeline" in proc.args


def test_the_server_command_keeps_its_shape_and_is_wrapped() -> None:
    cmd = build_server_command(ServerConfig(model_path="m", port=8080), python="python")
    wrapped = launch.launcher_command(cmd, lifeline=7, pdeathsig=True)
    assert cmd[:4] == ["python", "-m", "mlx_lm", "server"]
    assert wrapped == [
        "python", "-m", launch.LAUNCHER, "--lifeline", "7", "--pdeathsig",
        "--", "mlx_lm", *cmd[3:],
    ]  # fmt: skip
    with pytest.raises(ValueError, match="python -m MODULE"):
        launch.launcher_command(["mlx_lm.server", "--model", "m"], lifeline=None)


def test_a_patch_is_installed_before_the_module_runs(
    modules: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--patch NAME` puts the patched `mlx_lm.server` in place before the module imports it
    (run in a child: the patched module must not leak into this test process)."""
    cmd = patched_command([sys.executable, "-m", "probe", "0"], ["lazy-logprobs"])
    out = subprocess.run(cmd, capture_output=True, text=True, env=modules, check=False)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["patched"] is True and seen["argv"][1:] == ["0"]


def test_an_unknown_patch_is_refused_before_anything_starts() -> None:
    with pytest.raises(SystemExit, match=r"unknown server patch.*'nope'.*known: "):
        patching_main(["--patch", "nope", "--", "probe", "0"])
    with pytest.raises(ValueError, match="unknown server patch"):
        ServerProcess(ServerConfig(model_path="m"), patches=["nope"])


def _start_on(lifeline: int, env: dict[str, str], new_session: bool) -> subprocess.Popen[str]:
    cmd = launch.launcher_command([sys.executable, "-m", "sleeper", "60"], lifeline=lifeline)
    proc = subprocess.Popen(
        cmd, pass_fds=(lifeline,), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, stdin=subprocess.DEVNULL, start_new_session=new_session,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def test_end_of_the_lifeline_kills_the_child_at_once(modules: dict[str, str]) -> None:
    r, w = os.pipe()
    proc = _start_on(r, modules, new_session=True)
    os.close(r)
    start = time.monotonic()
    os.close(w)  # what the kernel does when the parent dies
    assert proc.wait(timeout=10) == -signal.SIGKILL
    assert time.monotonic() - start < 2
    assert proc.stderr is not None
    assert "the parent of sleeper" in proc.stderr.read()


_NOT_OUR_GROUP = """
import os, sys
sys.path.insert(0, {tests!r})
from test_launch import _start_on
r, w = os.pipe()
proc = _start_on(r, dict(os.environ), new_session=False)  # in this process's group
os.close(w)
print(proc.wait(timeout=10), flush=True)
"""


def test_a_child_outside_its_own_group_never_kills_its_parents_group(
    modules: dict[str, str], tmp_path: Path
) -> None:
    """Started without a new session (not by `popen`), the child shares its parent's group:
    on end of file it must exit alone, not kill that group."""
    code = _NOT_OUR_GROUP.format(tests=str(Path(__file__).parent))
    parent = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=modules,
        timeout=60, start_new_session=True, check=False,
    )  # fmt: skip
    assert parent.returncode == 0, parent.stderr
    assert parent.stdout.strip() == "137"


def test_a_fork_child_does_not_hold_the_lifeline() -> None:
    """Else the lab's children would outlive it for as long as a forked helper lives."""
    launch.lifeline_fd()
    _, r, w = launch._lifeline  # type: ignore[misc]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        held = []
        for fd in (r, w):
            try:
                os.fstat(fd)
                held.append(fd)
            except OSError:
                pass
        os._exit(1 if held or launch._lifeline is not None else 0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_run_captured_kills_the_child_on_timeout(modules: dict[str, str]) -> None:
    marker = f"{time.monotonic_ns() % 10**6}.5"  # a unique argument to find the child by
    with pytest.raises(subprocess.TimeoutExpired):
        run_captured("sleeper", [marker], timeout_s=2)
    left = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if marker in (p.info["cmdline"] or []) and p.status() != psutil.STATUS_ZOMBIE
    ]
    assert not left
    done = run_captured("probe", ["4"])
    assert done.returncode == 4 and json.loads(done.stdout)["argv"][1:] == ["4"]

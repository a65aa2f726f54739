"""The launcher every child process of the lab goes through: it dies with the lab.

`python -m punie.serving.launch [--lifeline FD] [--pdeathsig] -- MODULE ARGS...`
runs `python -m MODULE ARGS...` (same `sys.argv`, same `__main__`, same exit status) after
arming what kills it when the process that started it dies, however it died:

- The lifeline (portable: Linux and macOS). The parent passes the read end of a pipe whose
  write end only it holds and never writes. A daemon thread here blocks reading it; end of
  file means the parent is gone (SIGKILL and the OOM killer included: the kernel closes a dead
  process's descriptors), and the thread kills this process's whole group at once. The wait
  costs nothing; the reaction needs the GIL for a moment, which mlx releases while it computes.
- The parent-death signal (Linux only, `--pdeathsig`): `prctl(PR_SET_PDEATHSIG, SIGKILL)`, a
  second line of defence delivered by the kernel itself. Its trap: it fires when the parent
  *thread* that forked us exits, even while the parent process lives on. The lab starts
  children from worker threads (`run_parallel`, asyncio executors), so `popen` asks for it only
  from the main thread, whose exit is the process's exit.

The parent side is `popen`: it rewrites a `python -m MODULE ARGS` command into the launcher's,
passes the lifeline, and starts the child in its own session (its own process group: Ctrl-C
reaches the lab, which stops its children, and a group kill reaches a child's own children
without touching the lab's group). `kill` kills such a child's group.

Standard library only: this module is imported by every child before its real work starts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import runpy
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

LAUNCHER = "punie.serving.launch"
# Set to 0 to leave the parent-death signal out on Linux, so the lifeline alone protects the
# children (as on macOS): for tests and diagnosis.
PDEATHSIG_ENV = "PUNIE_LAUNCH_PDEATHSIG"


# --------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------

_lock = threading.Lock()
# (owner pid, read end, write end). One pipe per process: every child gets the read end, the
# write end never leaves this process (close-on-exec, closed in fork children below), so it
# reaches end of file exactly when this process dies.
_lifeline: tuple[int, int, int] | None = None


def lifeline_fd() -> int:
    """The read end of this process's lifeline (created on first use)."""
    global _lifeline
    with _lock:
        if _lifeline is None or _lifeline[0] != os.getpid():
            r, w = os.pipe()  # both non-inheritable: `popen` passes `r` explicitly
            _lifeline = (os.getpid(), r, w)
        return _lifeline[1]


def _forget_lifeline_in_fork_child() -> None:
    """A fork child (multiprocessing with fork, say) must not hold its parent's write end:
    the parent's children would then outlive the parent for as long as the fork child lives."""
    global _lifeline, _lock
    _lock = threading.Lock()
    if _lifeline is not None:
        for fd in _lifeline[1:]:
            with contextlib.suppress(OSError):
                os.close(fd)
        _lifeline = None


os.register_at_fork(after_in_child=_forget_lifeline_in_fork_child)


def pdeathsig_wanted() -> bool:
    """Ask the child for the parent-death signal: Linux, from the main thread only."""
    return (
        sys.platform.startswith("linux")
        and threading.current_thread() is threading.main_thread()
        and os.environ.get(PDEATHSIG_ENV, "1") != "0"
    )


def launcher_command(
    cmd: Sequence[str],
    *,
    lifeline: int | None,
    pdeathsig: bool = False,
) -> list[str]:
    """`[python, -m, MODULE, *ARGS]` -> `[python, -m, punie.serving.launch, OPTIONS, --,
    MODULE, *ARGS]`."""
    if len(cmd) < 3 or cmd[1] != "-m":
        raise ValueError(f"expected a `python -m MODULE ...` command, got {list(cmd)[:4]}")
    python, _, module, *args = cmd
    options: list[str] = []
    if lifeline is not None:
        options += ["--lifeline", str(lifeline)]
    if pdeathsig:
        options.append("--pdeathsig")
    return [python, "-m", LAUNCHER, *options, "--", module, *args]


def popen(cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """Start the `python -m MODULE ARGS` command `cmd` through the launcher: in its own
    session, stdin /dev/null unless given, tied to this process by the lifeline. Other
    keyword arguments go to `subprocess.Popen`."""
    if "preexec_fn" in kwargs or "start_new_session" in kwargs or "process_group" in kwargs:
        raise ValueError("popen starts its child in a new session; no preexec_fn either")
    fd = lifeline_fd()
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    kwargs["pass_fds"] = (*kwargs.get("pass_fds", ()), fd)
    full = launcher_command(cmd, lifeline=fd, pdeathsig=pdeathsig_wanted())
    return subprocess.Popen(full, start_new_session=True, **kwargs)


def kill(proc: subprocess.Popen[Any], sig: int = signal.SIGKILL) -> None:
    """Send `sig` to the process group of a child `popen` started (it leads that group).
    Nothing once the child is reaped: its pid, and so the group's id, may be reused."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


# --------------------------------------------------------------------------------------
# Child side
# --------------------------------------------------------------------------------------


def _die(why: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, f"{LAUNCHER}: {why}; killing process group {os.getpgid(0)}\n".encode())
    if os.getpgid(0) == os.getpid():  # only a group we lead: never the parent's
        os.killpg(0, signal.SIGKILL)
    os._exit(137)


def watch_lifeline(fd: int, module: str) -> threading.Thread:
    """Kill this process group when `fd` reaches end of file (the parent died)."""
    os.fstat(fd)  # a bad descriptor fails here, loudly, not silently in the thread
    os.set_inheritable(fd, False)  # the module's own children need not hold it

    def watch() -> None:
        while True:
            try:
                data = os.read(fd, 64)
            except OSError as e:  # closed under us: stop watching, but say so
                with contextlib.suppress(OSError):
                    os.write(2, f"{LAUNCHER}: lifeline unreadable ({e}); not watching\n".encode())
                return
            if not data:
                _die(f"the parent of {module} (pid {os.getpid()}) died")

    thread = threading.Thread(target=watch, name="punie-lifeline", daemon=True)
    thread.start()
    return thread


PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Linux: have the kernel send `sig` when the parent thread that forked us exits."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    return True


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, str, list[str]]:
    argv = list(argv)
    if "--" not in argv:
        raise SystemExit(f"usage: python -m {LAUNCHER} [options] -- MODULE [ARGS...]")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog=f"python -m {LAUNCHER}")
    parser.add_argument("--lifeline", type=int, metavar="FD", help="read end of the lifeline")
    parser.add_argument("--pdeathsig", action="store_true", help="Linux: prctl parent-death")
    options = parser.parse_args(argv[:split])
    target = argv[split + 1 :]
    if not target:
        parser.error("no module after --")
    return options, target[0], target[1:]


def main(argv: Sequence[str] | None = None) -> None:
    options, module, args = parse_args(sys.argv[1:] if argv is None else argv)
    parent = os.getppid()
    if options.lifeline is not None:
        watch_lifeline(options.lifeline, module)
    if options.pdeathsig and set_parent_death_signal() and os.getppid() != parent:
        _die(f"the parent of {module} died before the parent-death signal was set")
    sys.argv = [module, *args]  # run_module puts the module's file in argv[0], as -m does
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: one lifeline state.
    from punie.serving import launch

    launch.main()

"""punie-lab: one subcommand per DVC stage, nothing else."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

from punie.errors import LabError

# transformers (imported by the tokenizer code and by mlx_lm) prints "PyTorch was not found..."
# on import: an advisory, true of every mlx-only install and useless in every run. Its
# advisories only are off (its warnings and errors still print); children inherit this, and
# `punie.serving.runtime.mlx_env` sets it for the mlx processes too. A user's own setting wins.
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

# name -> (module, help). Modules are imported only for the chosen subcommand, so `--help`
# stays fast and one stage's heavy imports never slow another.
STAGES: dict[str, tuple[str, str]] = {
    # the DVC stages (dvc.yaml) in pipeline order, then the tools from `doctor` on
    "bootstrap": ("punie.stages.bootstrap", "build the embedded default main and draft models"),
    "profile": ("punie.stages.profile", "measure where every second of an agent query goes"),
    "speculative": ("punie.stages.speculative", "benchmark baseline vs draft for each k"),
    "speculative-report": ("punie.stages.speculative_report", "aggregate the runs, choose a k"),
    "gate": ("punie.stages.concise", "decide whether conciseness training is worth it"),
    "concise-data": ("punie.stages.concise", "build the concise data set (or a skipped marker)"),
    "retrain": ("punie.stages.retrain", "LoRA-train and fuse the concise model (or skip)"),
    "concise-draft": ("punie.stages.concise_draft", "distil the draft on concise answers"),
    "final": ("punie.stages.final", "benchmark baseline vs optimized configuration"),
    "summary": ("punie.stages.summary", "write the headline keys of every stage's metrics"),
    "doctor": ("punie.commands.doctor", "check the configured model pair in seconds"),
    "eval": ("punie.commands.evaluate", "check the built models through the real server"),
    "step-cost": ("punie.commands.train_cost", "time a training step per batch length"),
    "blas-benchmark": ("punie.commands.train_cost", "time training with and without OpenBLAS"),
    "readme": ("punie.commands.readme", "write the README results section from the metrics"),
    "reliability": ("punie.commands.reliability", "print the reliability figures table"),
    "real-shape": ("punie.commands.real_shape", "build the real-shape Qwen3 pair as hub ids"),
}


# Why the run was stopped, when it was not Ctrl-C (the first cause): named in the message.
_stop_causes: list[str] = []
# When a SIGTERM or SIGHUP started the unwinding (monotonic seconds), once one has.
_stopping: list[float] = []
# Repeats of those within this many seconds are ignored (stopping a server takes up to 10 s).
STOP_GRACE_S = 15.0
# Of stdout and stderr, those that were a terminal at start (a hang-up may close it).
_tty_fds: list[int] = []
# How often the DVC watchdog checks that the dvc process running this stage still lives.
PARENT_POLL_S = 0.25
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "fish"})
_CAUSES = {signal.SIGHUP: "SIGHUP: hang-up, e.g. its terminal closed"}


def _sigterm(signum: int, frame: FrameType | None) -> None:
    # DVC and CI stop us with SIGTERM, a closed terminal with SIGHUP: unwind exactly like
    # Ctrl-C so servers are stopped. Inside asyncio.run the SIGINT handler is asyncio's (it
    # cancels the main task, which unwinds cleanly); raising KeyboardInterrupt here instead
    # would kill whichever task is running and print "Task exception was never retrieved".
    if signum == signal.SIGHUP:
        _silence_hung_up_terminal()
    if _stopping and time.monotonic() - _stopping[0] < STOP_GRACE_S:
        # Already unwinding: a second SIGTERM or SIGHUP (a closing terminal can send two) must
        # not interrupt the unwinding that stops the servers. Ctrl-C, or a repeat after the
        # grace, still forces it.
        return
    _stopping[:] = [time.monotonic()]
    if not _stop_causes:
        _stop_causes.append(_CAUSES.get(signum, signal.Signals(signum).name))
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:  # SIG_DFL set by someone else: still stop (main() replaces an ignored SIGINT)
        raise KeyboardInterrupt


def _silence_hung_up_terminal() -> None:
    """After a hang-up the terminal is gone and every write to it fails (EIO): point the
    output that went there at /dev/null, so unwinding (servers stopped, temp files removed)
    cannot fail on a print. A SIGHUP sent while the terminal still works changes nothing."""
    hung = [fd for fd in _tty_fds if not os.isatty(fd)]
    if not hung:
        return
    null = os.open(os.devnull, os.O_WRONLY)
    for fd in hung:
        os.dup2(null, fd)
    os.close(null)


def _watch_dvc_parent() -> None:
    """Run by DVC (which sets DVC_STAGE), die with the dvc process: when it is killed
    (SIGKILL, the OOM killer) nothing waits for this stage any more, and a new `dvc repro`
    would run it again beside this one. The watched processes are our parent and, when that
    is a shell running the stage's command, the shell's parent; when one of them is gone,
    this process stops itself as on SIGTERM (servers and trainers stopped). Outside DVC
    nothing is watched: `nohup punie-lab ... &` must outlive its terminal."""
    import psutil

    ppid = os.getppid()
    try:
        watched = [psutil.Process(ppid)]
        while watched[-1].name() in SHELLS and (up := watched[-1].parent()) is not None:
            watched.append(up)
    except psutil.Error:
        return
    if ppid <= 1:
        return  # already orphaned: nothing to watch

    def dead(p: psutil.Process) -> bool:
        if p.pid == ppid:  # our parent: we are re-parented the moment it exits
            return os.getppid() != ppid
        try:  # a zombie is dead, even before its own parent reaps it
            return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            return True

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_S)
            gone = next((p for p in watched if p.pid > 1 and dead(p)), None)
            if gone is not None:
                _stop_causes.insert(0, f"the dvc process running this stage (pid {gone.pid}) died")
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="dvc-parent-watch", daemon=True).start()


def _interrupted(name: str) -> int:
    cause = f" ({_stop_causes[0]})" if _stop_causes else ""
    with contextlib.suppress(OSError):
        print(
            f"punie-lab {name}: interrupted{cause}; servers stopped, outputs left as they were",
            file=sys.stderr,
        )
    return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="punie-lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in STAGES.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _stop_causes.clear()
    _stopping.clear()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in STAGES:
        parser.parse_args(argv)  # prints usage / help and exits
        return 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(STAGES[name][0])
    sub = argparse.ArgumentParser(prog=f"punie-lab {name}", description=STAGES[name][1])
    module.add_arguments(name, sub)
    args = sub.parse_args(rest)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # A job started in the background of a script inherits SIGINT ignored. asyncio then
        # installs no SIGINT handler, and a SIGTERM raised as KeyboardInterrupt inside a task
        # could be swallowed: the benchmark ran on to the end (seen under `nohup ... &`).
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _sigterm)
    # A closed terminal sends SIGHUP: stop like SIGTERM. Ignored at start means `nohup`:
    # the user asked this run to outlive its terminal, so it stays ignored.
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        _tty_fds[:] = [fd for fd in (1, 2) if os.isatty(fd)]
        signal.signal(signal.SIGHUP, _sigterm)
    if os.environ.get("DVC_STAGE"):
        _watch_dvc_parent()

    try:
        return int(module.run(name, args) or 0)
    except KeyboardInterrupt:
        return _interrupted(name)
    except (LabError, OSError) as e:
        if _stopping:  # e.g. a print to the terminal that hung up, just before SIGHUP's handler
            return _interrupted(name)
        print(f"punie-lab {name}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

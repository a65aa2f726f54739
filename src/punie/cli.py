"""punie-lab: one subcommand per DVC stage, nothing else."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from punie.errors import LabError

# name -> (module, help). Modules are imported only for the chosen subcommand, so `--help`
# stays fast and one stage's heavy imports never slow another.
STAGES: dict[str, tuple[str, str]] = {
    # DVC stages (dvc.yaml), in pipeline order
    "bootstrap": ("punie.stages.bootstrap", "build the embedded default main and draft models"),
    "profile": ("punie.stages.profile", "measure where every second of an agent query goes"),
    "speculative": ("punie.stages.speculative", "benchmark baseline vs draft for each k"),
    "speculative-report": (
        "punie.stages.speculative_report",
        "aggregate per-k results and choose the configuration",
    ),
    "gate": ("punie.stages.concise", "decide whether conciseness training is worth it"),
    "concise-data": ("punie.stages.concise", "build the concise data set (or a skipped marker)"),
    "retrain": ("punie.stages.retrain", "LoRA-train and fuse the concise model (or skip)"),
    "concise-draft": (
        "punie.stages.concise_draft",
        "distil the draft on the concise model's answers (or keep it)",
    ),
    "final": ("punie.stages.final", "benchmark baseline vs optimized configuration"),
    # tools
    "eval": ("punie.commands.evaluate", "check the built models through the real server"),
    "step-cost": ("punie.commands.train_cost", "time a training step per batch length"),
    "blas-benchmark": ("punie.commands.train_cost", "time training with and without OpenBLAS"),
    "readme": ("punie.commands.readme", "write the README results section from the metrics"),
    "reliability": ("punie.commands.reliability", "print the reliability figures table"),
}


def _sigterm(signum: int, frame: FrameType | None) -> None:
    # DVC and CI stop us with SIGTERM: unwind exactly like Ctrl-C so servers are stopped.
    # Inside asyncio.run the SIGINT handler is asyncio's (it cancels the main task, which
    # unwinds cleanly); raising KeyboardInterrupt here instead would kill whichever task is
    # running and print "Task exception was never retrieved".
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:  # SIG_DFL set by someone else: still stop (main() replaces an ignored SIGINT)
        raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="punie-lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in STAGES.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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

    try:
        return int(module.run(name, args) or 0)
    except KeyboardInterrupt:
        print(
            f"punie-lab {name}: interrupted; servers stopped, outputs left as they were",
            file=sys.stderr,
        )
        return 130
    except (LabError, OSError) as e:
        print(f"punie-lab {name}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

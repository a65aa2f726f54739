"""Progress as i/N with an estimated time to finish, for work that runs for minutes.

`Progress(total).line(i)` is the `[i/N, ETA m:ss]` a benchmark prints beside each query;
`Progress.report(i)` is what an in-process probe prints to stderr while it works
(`acceptance probe 3/12 prompts, ETA 0:41`), throttled to one line every few seconds. The
parent of such a probe reads its output and passes these lines on as they come
(`is_progress_line`; `punie.serving.runtime.run_streamed`).

The estimate is the mean time per item so far times the items left: items of one run are
alike enough (prompts of one query set, batches of one corpus) for that to be honest.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from typing import TextIO

# `<what> i/N <unit>, ETA m:ss` (or `ETA ?` before the first item is done).
_PROGRESS = re.compile(r"\b\d+/\d+\b.*, ETA (\?|\d+:\d\d(:\d\d)?)")


def clock_text(seconds: float) -> str:
    """`m:ss`, or `h:mm:ss` from an hour on."""
    s = max(round(seconds), 0)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def is_progress_line(line: str) -> bool:
    """Whether a child's output line is a progress line (`Progress.report`)."""
    return _PROGRESS.search(line) is not None


class Progress:
    """Items done out of `total`, with the time left estimated from the time so far."""

    def __init__(
        self, total: int, *, every_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.total = total
        self.every_s = every_s
        self._clock = clock
        self._start = clock()
        self._last: float | None = None

    def eta_s(self, done: int) -> float | None:
        """Seconds left after `done` items (None before the first is done)."""
        if done <= 0:
            return None
        elapsed = self._clock() - self._start
        return elapsed / done * max(self.total - done, 0)

    def eta(self, done: int) -> str:
        left = self.eta_s(done)
        return "?" if left is None else clock_text(left)

    def line(self, done: int) -> str:
        """`[i/N, ETA m:ss]`."""
        return f"[{done}/{self.total}, ETA {self.eta(done)}]"

    def text(self, done: int, what: str, unit: str) -> str:
        """`<what> i/N <unit>, ETA m:ss`."""
        return f"{what} {done}/{self.total} {unit}, ETA {self.eta(done)}"

    def report(
        self, done: int, what: str, unit: str, *, note: str = "", file: TextIO | None = None
    ) -> bool:
        """Print `text` (and `note`) to stderr when due: the first item, the last, and at
        most one line every `every_s` seconds between. Returns whether it printed."""
        now = self._clock()
        due = done in (1, self.total) or self._last is None or now - self._last >= self.every_s
        if not due:
            return False
        self._last = now
        extra = f" ({note})" if note else ""
        print(self.text(done, what, unit) + extra, file=file or sys.stderr, flush=True)
        return True


def show_progress(line: str, *, indent: str = "  ") -> None:
    """Print a child's output line when it is a progress line (the rest, warnings and
    tracebacks, the caller keeps for its error message)."""
    if is_progress_line(line):
        print(indent + line.strip(), flush=True)

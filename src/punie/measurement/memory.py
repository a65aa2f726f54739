"""Peak resident memory of the model server, sampled while a benchmark runs."""

from __future__ import annotations

import contextlib
import threading

import psutil


class ServerMemorySampler:
    """Samples the resident memory of a process (and its children) in a background thread.

    The server's memory, not ours: the model lives in the server process.
    """

    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak_rss_bytes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def peak_rss_mb(self) -> float:
        return self.peak_rss_bytes / 2**20

    def sample(self) -> int:
        try:
            proc = psutil.Process(self.pid)
            procs = [proc, *proc.children(recursive=True)]
        except psutil.Error:
            return 0
        rss = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                rss += p.memory_info().rss
        self.samples += 1
        self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
        return rss

    def _loop(self) -> None:
        self.sample()
        while not self._stop.wait(self.interval_s):
            self.sample()

    def start(self) -> ServerMemorySampler:
        self._thread = threading.Thread(target=self._loop, name="server-rss", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ServerMemorySampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

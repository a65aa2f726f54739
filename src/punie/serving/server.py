"""Build the `mlx_lm server` command and run it as a process that never hangs or lingers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx
import psutil

from punie.errors import ServerError
from punie.serving import launch
from punie.serving.config import ServerConfig
from punie.serving.patching import check_patches, patched_command
from punie.serving.runtime import mlx_env


def build_server_command(config: ServerConfig, python: str | None = None) -> list[str]:
    """`python -m mlx_lm server ...` with only the flags the configuration sets."""
    cmd = [python or sys.executable, "-m", "mlx_lm", "server", "--model", config.model_path]
    cmd += ["--host", config.host, "--port", str(config.port)]
    flags = {
        "--adapter-path": config.adapter_path,
        "--temp": config.temp,
        "--top-p": config.top_p,
        "--max-tokens": config.max_tokens,
        "--chat-template-args": config.chat_template_args,
        "--draft-model": config.draft_model,
        "--num-draft-tokens": config.num_draft_tokens,
        "--prompt-cache-size": config.prompt_cache_size,
        "--log-level": config.log_level,
    }
    for flag, value in flags.items():
        if value is not None:
            cmd += [flag, json.dumps(value) if isinstance(value, dict) else str(value)]
    return cmd


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the server binds it right after)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_in_use(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
        return False


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(server log is empty)"


class ServerProcess:
    """Async context manager around a real `mlx_lm server`.

    Output goes to a log file (an unread pipe blocks a chatty server). Ready means a real
    one-token chat completion succeeded: a server whose model failed to load still answers
    `/v1/models`. Leaving the block, normally, by an exception or by Ctrl-C, stops the
    process (SIGTERM, then SIGKILL) so no server outlives its run. The server runs through
    `punie.serving.launch`, so it dies with this process even when nothing here gets to run
    (SIGKILL, the OOM killer). `patches`: `punie.serving.patching` diffs applied to
    `mlx_lm.server` before it starts.
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        log_path: Path | None = None,
        ready_timeout_s: float = 120.0,
        stop_timeout_s: float = 10.0,
        blas: str = "auto",
        ready_note: str = "",
        patches: Sequence[str] = (),
    ) -> None:
        """`ready_note`: appended to the not-ready error (e.g. how the timeout was sized)."""
        check_patches(patches)
        if config.port == 0:
            config = config.model_copy(update={"port": free_port(config.host)})
        self.config = config
        self.ready_timeout_s = ready_timeout_s
        self.ready_note = ready_note
        self.stop_timeout_s = stop_timeout_s
        self.blas = blas
        self.patches = tuple(patches)
        self._own_log = log_path is None
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="mlx-server-", suffix=".log")[1])
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"http://{host}:{self.config.port}/v1"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise ServerError("server is not running")
        return self._proc.pid

    @property
    def model_name(self) -> str:
        return self.config.model_path

    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def check_alive(self) -> None:
        """Raise with the log tail if the process has exited (call it any time)."""
        if self._proc is not None and self._proc.poll() is not None:
            raise ServerError(
                f"mlx_lm server exited with status {self._proc.returncode}; "
                f"log tail ({self.log_path}):\n{log_tail(self.log_path)}"
            )

    def check_responsive(self, timeout_s: float = 5.0, after: str | None = None) -> None:
        """Raise if the process has exited or does not answer `GET /v1/models` in time.

        Call it after a request timed out. mlx_lm answers that listing from its HTTP threads
        even while a generation runs, so no answer means the whole process is frozen
        (stopped, swapping, deadlocked): every later request would wait the full timeout.
        """
        self.check_alive()
        try:
            httpx.get(f"{self.base_url}/models", timeout=timeout_s).raise_for_status()
        except httpx.HTTPError as e:
            if isinstance(e, httpx.ConnectError) and self._proc is not None:
                # Refused: a killed server closes its socket a moment before it can be reaped
                # (longer on a loaded machine). Give it that moment: it is dead, not frozen.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=2.0)
                self.check_alive()
            raise ServerError(
                f"mlx_lm server (pid {self.pid}) is running but not answering"
                f"{f' after {after}' if after else ''}: "
                f"GET /v1/models got no reply within {timeout_s:g}s ({type(e).__name__}); "
                f"it is frozen or overloaded; log tail ({self.log_path}):\n"
                f"{log_tail(self.log_path)}"
            ) from None

    async def start(self) -> Self:
        model = Path(self.config.model_path)
        problem = None
        if (model.is_absolute() or self.config.model_path.startswith(".")) and not model.exists():
            problem = f"model_path does not exist: {self.config.model_path}"
        elif _port_in_use(self.config.host, self.config.port):
            problem = f"port {self.config.port} on {self.config.host} is already in use"
        if problem:
            self._discard_log()
            raise ServerError(problem)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = patched_command(build_server_command(self.config), self.patches)
        with open(self.log_path, "wb") as log:
            # The launcher starts it in a new session: Ctrl-C in the terminal reaches us, not
            # the server, so we decide how it stops; and stopping kills its whole group.
            self._proc = launch.popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=mlx_env(self.blas),
            )
        try:
            await self._wait_ready()
        except BaseException:
            self._own_log = False  # keep the log the error points to
            self.stop()
            raise
        return self

    def _discard_log(self) -> None:
        """Delete the log if it is our own temp file (not a path the caller asked for)."""
        if self._own_log:
            self.log_path.unlink(missing_ok=True)

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        body = {
            "model": "default_model",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 1,
        }
        last = "no answer yet"
        async with httpx.AsyncClient(timeout=10.0) as client:
            while time.monotonic() < deadline:
                self.check_alive()
                self._check_bound()
                # Ask only once our own process listens: if another process took the port
                # between the free-port check and our bind, it is what would answer.
                if not self._owns_port():
                    await asyncio.sleep(0.25)
                    continue
                try:
                    r = await client.post(f"{self.base_url}/chat/completions", json=body)
                    if r.status_code == 200 and r.json().get("choices"):
                        return
                    last = f"HTTP {r.status_code}: {r.text[:200]}"
                    if r.status_code == 404 and "thread died" in r.text:
                        raise ServerError(
                            f"mlx_lm server is up but its model failed to load ({last}); "
                            f"log tail ({self.log_path}):\n{log_tail(self.log_path)}"
                        )
                except httpx.TransportError as e:
                    last = f"{type(e).__name__}: {e}"
                await asyncio.sleep(0.25)
        note = f"; {self.ready_note}" if self.ready_note else ""
        raise ServerError(
            f"mlx_lm server not ready after {self.ready_timeout_s:.0f}s ({last}){note}; "
            f"log tail ({self.log_path}):\n{log_tail(self.log_path)}"
        )

    def _check_bound(self) -> None:
        """Raise if the server failed to bind its port. mlx_lm's HTTP thread dies on
        EADDRINUSE but its generation thread keeps the process alive, so this is only
        visible in the log, and waiting for readiness would last the whole timeout."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return
        if "Address already in use" in text:
            raise ServerError(
                f"port {self.config.port} on {self.config.host} is already in use "
                f"(taken by another process before mlx_lm server could bind it); "
                f"log tail ({self.log_path}):\n{log_tail(self.log_path)}"
            )

    def _owns_port(self) -> bool:
        """True if our process listens on the port (or the OS will not tell us)."""

        try:
            conns = psutil.Process(self.pid).net_connections(kind="inet")
        except (psutil.Error, OSError):
            return True
        return any(
            c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == self.config.port
            for c in conns
        )

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL after `stop_timeout_s`. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            # A SIGSTOPped server ignores SIGTERM until continued.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGCONT)
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Children of the server (none today) would share its group; reap any left.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self._proc = None
        self._discard_log()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

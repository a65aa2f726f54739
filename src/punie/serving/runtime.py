"""Environment and subprocess calls for mlx: BLAS preload, `mlx_lm lora`/`fuse` runs.

The Linux `mlx-cpu` wheel bundles the reference BLAS, several times slower than OpenBLAS
for the matmuls of training and decoding. Preloading OpenBLAS swaps the implementation
under mlx without changing results (see README for the measured ratio).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Literal, TypeVar

from punie.errors import MlxCommandError
from punie.results import read_json, write_json
from punie.serving import launch

T = TypeVar("T")

Blas = Literal["auto", "off"]

OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
)


def find_openblas() -> str | None:
    """Path of a system OpenBLAS on Linux, or None (macOS uses Accelerate/Metal)."""
    if not sys.platform.startswith("linux"):
        return None
    return next((p for p in OPENBLAS_CANDIDATES if Path(p).exists()), None)


def mlx_env(blas: str = "auto", base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for an mlx subprocess: OpenBLAS preloaded when `blas` is auto and found."""
    if blas not in ("auto", "off"):
        raise ValueError(f"runtime.blas must be 'auto' or 'off', got {blas!r}")
    env = dict(os.environ if base is None else base)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # No "[transformers] PyTorch was not found" advisory from mlx_lm's transformers import
    # (advisories only: transformers' warnings and errors still print).
    env.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # No HF_HUB_OFFLINE here: the user's own setting passes through, and the stages hand
    # children resolved local directories (punie.serving.hub), so none of them downloads.
    preload = [p for p in env.get("LD_PRELOAD", "").split(":") if p and "openblas" not in p]
    if blas == "auto":
        if lib := find_openblas():
            preload.insert(0, lib)
        elif sys.platform.startswith("linux"):
            warn_no_openblas()
    if preload:
        env["LD_PRELOAD"] = ":".join(preload)
    else:
        env.pop("LD_PRELOAD", None)
    return env


@functools.cache
def warn_no_openblas() -> None:
    """Once per process. Silent, the fallback went unseen: on 2026-11-29 a bootstrap
    without the package was still training the main model after 21 min (11-13 with it)."""
    print(
        "warning: runtime.blas is auto but no system OpenBLAS was found; mlx falls back to its "
        "bundled BLAS, several times slower on Linux (install libopenblas0-pthread, or set "
        "runtime.blas: off to silence this)",
        file=sys.stderr,
    )


def blas_in_use(blas: str = "auto") -> str:
    return "openblas" if blas == "auto" and find_openblas() else "bundled"


# Children of run_mlx still running, so a caller training several at once can stop them all.
_LIVE: set[subprocess.Popen[str]] = set()
_LIVE_LOCK = threading.Lock()


def live_children() -> list[subprocess.Popen[str]]:
    """The `run_mlx` children still running (none once every caller has returned)."""
    with _LIVE_LOCK:
        return [p for p in _LIVE if p.poll() is None]


def kill_all() -> None:
    """Kill every mlx_lm child still running (e.g. the other trainer when one fails), each
    with its process group."""
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        launch.kill(proc)


def run_parallel(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run each call (each drives mlx subprocesses through `run_mlx`) in its own thread and
    return their results in order. On the first failure or an interrupt, every child still
    running is killed and the error re-raised: nothing outlives the caller."""

    with ThreadPoolExecutor(max_workers=max(len(calls), 1)) as pool:
        futures = [pool.submit(call) for call in calls]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in done:
                future.result()  # the first failure, while the others still run
            return [future.result() for future in futures]
        except BaseException:
            kill_all()
            raise


def run_mlx(
    args: Sequence[str],
    *,
    blas: str = "auto",
    log_path: Path | None = None,
    on_line: Callable[[str], None] | None = None,
    timeout_s: float | None = None,
    threads: int | None = None,
    module: str = "mlx_lm",
) -> None:
    """Run `python -m <module> <args>` (mlx_lm by default), streaming its output line by line
    to `on_line` and a log. `threads`: OpenBLAS threads of the child (default: inherited).

    The child runs through `punie.serving.launch` in its own process group: it is killed
    with its group if we are interrupted (a Ctrl-C never leaves a trainer behind), and it
    kills itself if we die without a chance to (SIGKILL, the OOM killer).
    """
    cmd = [sys.executable, "-m", module, *args]
    tail: list[str] = []
    log = open(log_path, "w") if log_path else None  # noqa: SIM115 - closed in finally
    proc = launch.popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=mlx_env(blas) | ({"OPENBLAS_NUM_THREADS": str(threads)} if threads else {}),
        text=True,
        bufsize=1,
    )
    with _LIVE_LOCK:
        _LIVE.add(proc)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if log:
                log.write(line)
                log.flush()
            tail = [*tail[-29:], line.rstrip()]
            if on_line:
                on_line(line.rstrip())
        proc.wait(timeout=timeout_s)
    except BaseException:
        launch.kill(proc)
        proc.wait()
        raise
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(proc)
        if log:
            log.close()
    if proc.returncode != 0:
        joined = "\n".join(tail[-15:])
        raise MlxCommandError(f"`{module} {args[0]}` exited with {proc.returncode}:\n{joined}")


def run_captured(
    module: str,
    args: Sequence[str],
    *,
    blas: str = "auto",
    timeout_s: float | None = None,
    on_stderr: Callable[[str], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m <module> <args>` through the launcher with the mlx environment, its output
    captured (like `subprocess.run(..., capture_output=True, text=True)`). `on_stderr` gets
    each line the child writes to stderr as it comes (a probe's progress), and the whole of it
    is still returned. On a timeout (`subprocess.TimeoutExpired` is raised) or an interrupt
    its whole group is killed first."""
    cmd = [sys.executable, "-m", module, *args]
    proc = launch.popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=mlx_env(blas), text=True
    )
    with proc:
        try:
            if on_stderr is None:
                stdout, stderr = proc.communicate(timeout=timeout_s)
            else:
                stdout, stderr = _stream_stderr(proc, on_stderr, timeout_s)
        except BaseException:
            launch.kill(proc)
            proc.wait()
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def run_json(
    module: str,
    request: Any,
    workdir: Path,
    *,
    what: str,
    error: type[Exception] = MlxCommandError,
    blas: str = "auto",
    timeout_s: float | None = None,
    on_stderr: Callable[[str], None] | None = None,
) -> Any:
    """`run_captured` for a JSON worker (`worker_main`): `request` goes in as a file under
    `workdir` and the worker's result comes back. A timeout, a failed exit or a missing
    result raises `error` naming `what` (with the end of the child's output)."""
    workdir.mkdir(parents=True, exist_ok=True)
    stem = module.rsplit(".", 1)[-1]
    src, dst = workdir / f"{stem}_request.json", workdir / f"{stem}_result.json"
    write_json(src, request)
    dst.unlink(missing_ok=True)
    try:
        proc = run_captured(
            module, [str(src), str(dst)], blas=blas, timeout_s=timeout_s, on_stderr=on_stderr
        )
    except subprocess.TimeoutExpired:
        raise error(f"{what} took longer than {timeout_s:g} s") from None
    if proc.returncode != 0 or not dst.exists():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise error(f"{what} exited with {proc.returncode}:\n{tail}")
    return read_json(dst)


def worker_main(module: str, work: Callable[[Any], Any], argv: Sequence[str]) -> int:
    """`python -m <module> REQUEST.json RESULT.json`: `work(request)` written as the result."""
    if len(argv) != 2:
        print(f"usage: python -m {module} REQUEST.json RESULT.json", file=sys.stderr)
        return 2
    write_json(Path(argv[1]), work(read_json(Path(argv[0]))))
    return 0


def _stream_stderr(
    proc: subprocess.Popen[str], on_stderr: Callable[[str], None], timeout_s: float | None
) -> tuple[str, str]:
    """Read both pipes of `proc` in threads, passing stderr on line by line, until it exits
    (`subprocess.TimeoutExpired` after `timeout_s`); its whole stdout and stderr."""
    out: list[str] = []
    err: list[str] = []

    def read_out() -> None:
        assert proc.stdout is not None
        out.append(proc.stdout.read())

    def read_err() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err.append(line)
            on_stderr(line.rstrip("\n"))

    readers = [threading.Thread(target=f, daemon=True) for f in (read_out, read_err)]
    for reader in readers:
        reader.start()
    proc.wait(timeout=timeout_s)
    for reader in readers:
        reader.join(timeout=10)  # the pipes close with the child's group
    return "".join(out), "".join(err)

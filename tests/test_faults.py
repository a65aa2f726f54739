"""Fault injection: every fault ends the run quickly, names its cause, leaves no server behind
and no half-written output.

The faults are real: a real `mlx_lm server` on the tiny fixture model, the real `punie-lab`
CLI in a subprocess (it reads params.yaml from its working directory, so each test builds a
small project in tmp_path), real signals. Fakes stand in only where a fault cannot be caused
for real (a port taken between the free-port check and the bind, a model reply that a random
model would never produce). ServerProcess-level faults that tests/test_server.py already
covers (missing model, model that fails to load, port taken, killed, frozen) are marked
`fault` there and taken here through the whole stage instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel
from pydantic_ai.toolsets import FunctionToolset

from punie import cli, paths, results
from punie.agent.production import build_agent
from punie.agent.queries import Query
from punie.agent.tools import Workspace, workspace_toolset
from punie.measurement.timing import Case, TimedModel, TimedToolset, run_queries
from punie.serving import launch
from punie.serving import server as server_mod
from punie.serving.config import ServerConfig
from punie.serving.runtime import run_parallel
from punie.serving.server import ServerError, ServerProcess, free_port

from .reliability_plugin import session_mlx_pids

ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = ROOT / "data" / "workspace"
# Every fault must be reported within this many seconds of being injected.
CAUSE_WITHIN_S = 30.0
# Queries in a run that a fault must hit mid-way: ~0.05 s each on the tiny test model, so the
# fault lands while queries still run, however slowly the test reacts.
MID_RUN_QUERIES = 200

pytestmark = pytest.mark.timeout(90)


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def assert_no_server_left(grace_s: float = 5.0) -> None:
    deadline = time.monotonic() + grace_s
    while (left := session_mlx_pids()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"mlx_lm processes left running: {left}"


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


SENTINELS = {
    "metrics/profile.json": '{"accuracy": 1.0, "previous": true}\n',
    "metrics/profile_records.json": '{"records": [], "previous": true}\n',
    "metrics/profile_breakdown.json": "[]\n",
    "reports/profile.md": "# previous profile\n",
}


class Project:
    """A small lab project: params.yaml on the tiny model, a query file, previous outputs."""

    def __init__(self, root: Path, model: Path) -> None:
        self.root = root
        self.out = root / "out"
        self.params: dict[str, Any] = yaml.safe_load((ROOT / "params.yaml").read_text())
        self.params["models"] = {"main": str(model), "draft": None}
        self.params["server"].update(
            max_tokens=8, ready_timeout_s=60, request_timeout_s=10, host="127.0.0.1"
        )
        self.params["agent"]["workspace"] = str(WORKSPACE)
        if "max_turns" in self.params.get("profile", {}):
            self.params["profile"]["max_turns"] = 2
        self.write_params()
        for rel, text in SENTINELS.items():
            path = self.out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def write_params(self) -> None:
        (self.root / "params.yaml").write_text(yaml.safe_dump(self.params, sort_keys=False))

    def queries(self, n: int) -> Path:
        path = self.root / f"q{n}.yaml"
        entries = [
            {"query": f"What is dependency injection, part {i}?", "expect": "direct"}
            for i in range(n)
        ]
        path.write_text(yaml.safe_dump(entries))
        return path

    def profile(
        self,
        queries: Path,
        out: Path | None = None,
        *,
        sigint_ignored: bool = False,
        env: dict[str, str] | None = None,
        terminal: bool = False,
    ) -> Lab:
        args = ["profile", "--queries", str(queries), "--out", str(out or self.out)]
        return Lab(self.root, args, sigint_ignored=sigint_ignored, env=env, terminal=terminal)

    def run_in_process(self, *args: str) -> Finished:
        """`punie-lab ARGS` through its real entry point, in this process (for faults that
        stop a run before any server or signal is involved: no interpreter start-up)."""
        start = time.monotonic()
        finished = lab_in_process(self.root, *args)
        assert time.monotonic() - start < CAUSE_WITHIN_S
        return finished

    def assert_outputs_intact(self) -> None:
        for rel, text in SENTINELS.items():
            assert (self.out / rel).read_text() == text, f"{rel} was changed"
        leftovers = [p for p in self.out.rglob("*") if p.name.endswith(".tmp")]
        assert not leftovers, f"half-written files left: {leftovers}"


def lab_in_process(root: Path, *args: str) -> Finished:
    """`punie-lab ARGS` through its real entry point, in this process, run in `root`."""
    cwd, sigterm = Path.cwd(), signal.getsignal(signal.SIGTERM)
    sighup = signal.getsignal(signal.SIGHUP)
    out, err = io.StringIO(), io.StringIO()
    try:
        os.chdir(root)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            returncode = cli.main(list(args))
    finally:
        os.chdir(cwd)
        signal.signal(signal.SIGTERM, sigterm)  # main() installs its own handlers
        signal.signal(signal.SIGHUP, sighup)
    return Finished(returncode, out.getvalue(), err.getvalue())


def assert_clean_error(stderr: str, *needles: str) -> None:
    """One `punie-lab NAME: error: ...` line naming the cause, no traceback of ours (the
    message may quote the server's log, tracebacks included)."""
    assert re.search(r"^punie-lab [a-z-]+: (error|interrupted)", stderr, re.M), stderr
    assert not re.search(r'File ".*/punie/', stderr), stderr
    for needle in needles:
        assert needle in stderr, f"{needle!r} not in:\n{stderr}"


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str

    def assert_clean_error(self, *needles: str) -> None:
        assert_clean_error(self.stderr, *needles)


def _default_sighup() -> None:
    """In the child: SIGHUP as a terminal's shell leaves it, even when the test run itself
    ignores it (started under `nohup`, whose SIG_IGN every child would inherit)."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _ignore_sigint() -> None:
    _default_sighup()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _take_terminal() -> None:
    """In the child: a new session whose controlling terminal is the pty on its stdin."""
    _default_sighup()
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Lab:
    """`punie-lab ARGS` in its own process group (as a terminal runs it), output to files.

    `terminal`: on a pseudo-terminal of its own instead (its controlling terminal, stdout and
    stderr, drained into the stdout file), which `hang_up` closes as a closed terminal
    window does."""

    def __init__(
        self,
        cwd: Path,
        args: list[str],
        *,
        sigint_ignored: bool = False,
        env: dict[str, str] | None = None,
        terminal: bool = False,
    ) -> None:
        self.stdout_path = cwd / f"lab-{time.monotonic_ns()}.out"
        self.stderr_path = self.stdout_path.with_suffix(".err")
        cmd = [sys.executable, "-m", "punie.cli", *args]
        environ = {**os.environ, "COLUMNS": "200", **(env or {})}
        self._master: int | None = None
        self._stop_reading = threading.Event()
        self._reader: threading.Thread | None = None
        if terminal:
            self.stdout_path.write_text("")
            self.stderr_path.write_text("")  # stderr goes to the terminal too
            master, slave = pty.openpty()
            self.proc = subprocess.Popen(
                cmd, cwd=cwd, stdin=slave, stdout=slave, stderr=slave, env=environ,
                preexec_fn=_take_terminal,
            )  # fmt: skip
            os.close(slave)
            self._master = master
            self._reader = threading.Thread(target=self._drain, args=(master,), daemon=True)
            self._reader.start()
        else:
            with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
                self.proc = subprocess.Popen(
                    cmd,
                    cwd=cwd,
                    stdout=out,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                    env=environ,
                    start_new_session=True,
                    # As a background job of a script starts it (bash ignores SIGINT there).
                    preexec_fn=_ignore_sigint if sigint_ignored else _default_sighup,
                )
        self.started = time.monotonic()
        self.returncode: int | None = None
        self.seen_servers: set[int] = set()

    def _drain(self, master: int) -> None:
        """Read the terminal (a full pty blocks the writer) into the stdout file."""
        with open(self.stdout_path, "ab") as out:
            while not self._stop_reading.is_set():
                if not select.select([master], [], [], 0.05)[0]:
                    continue
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every slave end closed (the lab exited)
                    return
                if not data:
                    return
                out.write(data)
                out.flush()

    def hang_up(self) -> None:
        """Close the terminal: the kernel sends SIGHUP to its session, and every later write
        to it fails."""
        assert self._master is not None and self._reader is not None, "not on a terminal"
        self._stop_reading.set()
        self._reader.join()
        os.close(self._master)
        self._master = None

    @property
    def stdout(self) -> str:
        return _ANSI.sub("", self.stdout_path.read_text(errors="replace"))

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def server(self) -> psutil.Process | None:
        """The `mlx_lm server` child, once it exists."""
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return None
        for child in children:
            try:
                if "mlx_lm" in " ".join(child.cmdline()):
                    self.seen_servers.add(child.pid)
                    return child
            except psutil.Error:
                continue
        return None

    def listening(self) -> list[tuple[str, int]]:
        server = self.server()
        if server is None:
            return []
        try:
            conns = server.net_connections(kind="inet")
        except psutil.Error:
            return []
        return [(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]

    def wait_for_output(self, pattern: str, timeout_s: float = 60.0) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"punie-lab exited ({self.proc.returncode}) before {pattern!r}:\n"
                    f"{self.stdout[-1500:]}\n{self.stderr[-1500:]}"
                )
            return re.search(pattern, self.stdout) is not None

        wait_for(seen, timeout_s, f"{pattern!r} in the output")

    def live_server(self) -> psutil.Process:
        server = self.server()
        assert server is not None, "no mlx_lm server is running"
        return server

    def disturb_mid_run(self, disturb: Callable[[], object], measuring: bool = True) -> None:
        """`disturb()` the run (once the first query is measured, with `measuring`); then the
        lab must stop within CAUSE_WITHIN_S (it is killed if it does not)."""
        try:
            if measuring:
                self.wait_for_output(rf"q{MID_RUN_QUERIES}-1 r0:")
            disturb()
            disturbed = time.monotonic()
            self.wait(CAUSE_WITHIN_S)
        finally:
            if self.returncode is None:
                self.kill()
        assert time.monotonic() - disturbed < CAUSE_WITHIN_S

    def wait(self, timeout_s: float) -> int:
        try:
            self.returncode = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"punie-lab did not stop within {timeout_s:.0f}s:\n"
                f"{self.stdout[-1500:]}\n{self.stderr[-1500:]}"
            ) from None
        return self.returncode

    def kill(self) -> None:
        for pid in [self.proc.pid, *self.seen_servers]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        self.proc.wait()
        if self._master is not None:
            self.hang_up()

    def assert_clean_error(self, *needles: str) -> None:
        assert_clean_error(self.stderr, *needles)

    def assert_servers_gone(self) -> None:
        for pid in self.seen_servers:
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() in (
                psutil.STATUS_ZOMBIE,
            ), f"server {pid} outlived punie-lab"


@pytest.fixture
def project(tmp_path: Path, tiny_model_dir: Path) -> Project:
    return Project(tmp_path, tiny_model_dir)


@pytest.fixture(autouse=True)
def no_server_left_after_each_test() -> Any:
    yield
    assert_no_server_left()


# --------------------------------------------------------------------------------------
# The server: a port taken at the last moment
# --------------------------------------------------------------------------------------


@pytest.mark.fault
def test_port_taken_between_check_and_bind_fails_fast(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process grabs the port after the free-port check: mlx_lm's HTTP thread dies
    but its process stays up, so only its log tells; we must not wait the ready timeout."""
    monkeypatch.setattr(server_mod, "_port_in_use", lambda host, port: False)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = ServerProcess(
            ServerConfig(model_path=str(tiny_model_dir), port=port),
            log_path=tmp_path / "s.log",
            ready_timeout_s=120,
        )
        start = time.monotonic()
        with pytest.raises(ServerError, match=f"port {port} .* already in use"):
            asyncio.run(server.start())
    assert time.monotonic() - start < CAUSE_WITHIN_S
    assert not server.is_alive()


class _Impostor(BaseHTTPRequestHandler):
    """Answers every chat completion like a healthy server would."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = json.dumps({"choices": [{"message": {"content": "not your server"}}]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.fault
def test_port_taken_by_another_server_is_not_mistaken_for_ours(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the process that took the port answers completions, readiness must not be
    declared: the benchmark would measure someone else's server."""
    monkeypatch.setattr(server_mod, "_port_in_use", lambda host, port: False)
    impostor = ThreadingHTTPServer(("127.0.0.1", 0), _Impostor)
    thread = threading.Thread(target=impostor.serve_forever, daemon=True)
    thread.start()
    try:
        port = impostor.server_address[1]
        server = ServerProcess(
            ServerConfig(model_path=str(tiny_model_dir), port=port),
            log_path=tmp_path / "s.log",
            ready_timeout_s=120,
        )
        start = time.monotonic()
        with pytest.raises(ServerError, match="already in use"):
            asyncio.run(server.start())
        assert time.monotonic() - start < CAUSE_WITHIN_S
        assert not server.is_alive()
    finally:
        impostor.shutdown()
        impostor.server_close()


# --------------------------------------------------------------------------------------
# The profile stage, end to end through the CLI
# --------------------------------------------------------------------------------------


@pytest.mark.fault(keeps_outputs=True)
def test_profile_with_a_missing_model_names_it(project: Project) -> None:
    missing = project.root / "models" / "nope"
    project.params["models"]["main"] = str(missing)
    project.write_params()
    lab = project.run_in_process(
        "profile", "--queries", str(project.queries(2)), "--out", str(project.out)
    )
    assert lab.returncode == 1, lab.stderr
    lab.assert_clean_error("does not exist", str(missing))
    project.assert_outputs_intact()


@pytest.mark.fault(keeps_outputs=True)
def test_profile_with_a_model_that_fails_to_load_names_it(
    project: Project, tiny_model_dir: Path
) -> None:
    """The server process stays up and answers /v1/models; only a completion shows the
    model never loaded."""
    broken = project.root / "broken-model"
    broken.mkdir()
    for f in tiny_model_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    project.params["models"]["main"] = str(broken)
    project.write_params()
    lab = project.profile(project.queries(2))
    lab.wait(CAUSE_WITHIN_S + 10)  # + the process and server start-up
    assert lab.returncode == 1, lab.stderr
    lab.assert_clean_error("failed to load")
    lab.assert_servers_gone()
    project.assert_outputs_intact()


@pytest.mark.fault(keeps_outputs=True)
def test_server_killed_mid_profile_stops_the_run(project: Project) -> None:
    lab = project.profile(project.queries(MID_RUN_QUERIES))
    lab.disturb_mid_run(lambda: lab.live_server().send_signal(signal.SIGKILL))
    assert lab.returncode == 1, lab.stdout[-2000:] + lab.stderr
    lab.assert_clean_error()
    assert "server died" in lab.stderr or "exited with status -9" in lab.stderr, lab.stderr
    project.assert_outputs_intact()


@pytest.mark.fault(keeps_outputs=True)
def test_frozen_server_mid_profile_stops_the_run(project: Project) -> None:
    """SIGSTOP: the server accepts connections but never answers. The request timeout
    (server.request_timeout_s) fires, the stage finds the server unresponsive and stops
    instead of paying the full timeout for every later query; the stopped server is killed."""
    project.params["server"]["request_timeout_s"] = 1
    project.write_params()
    lab = project.profile(project.queries(MID_RUN_QUERIES))
    lab.disturb_mid_run(lambda: lab.live_server().send_signal(signal.SIGSTOP))
    assert lab.returncode == 1, lab.stdout[-2000:] + lab.stderr
    lab.assert_clean_error("not answering", "Timeout")  # the request timeout fired first
    lab.assert_servers_gone()
    project.assert_outputs_intact()


@pytest.mark.fault(keeps_outputs=True)
@pytest.mark.parametrize(
    ("when", "how"),
    [
        ("starting", "ctrl-c"),
        ("measuring", "ctrl-c"),
        ("measuring", "sigterm"),
        ("measuring", "sigterm-background"),
    ],
)
def test_interrupted_profile_stops_the_server_and_keeps_outputs(
    project: Project, when: str, how: str
) -> None:
    """Ctrl-C is SIGINT to the foreground process group (the server has its own session);
    DVC and CI stop a stage with SIGTERM to its pid. Either one, while the server is still
    loading or while queries run, must exit 130 and leave nothing behind. Also checks that
    the stage binds the server to params' server.host (127.0.0.2 here, still loopback).
    Started as a background job of a script (SIGINT ignored), SIGTERM must still stop it."""
    project.params["server"]["host"] = "127.0.0.2"
    project.write_params()
    lab = project.profile(
        project.queries(MID_RUN_QUERIES), sigint_ignored=how == "sigterm-background"
    )

    def interrupt() -> None:
        addrs = wait_for(lab.listening, 60, "the server to listen")
        assert {ip for ip, _ in addrs} == {"127.0.0.2"}, addrs
        if when == "measuring":
            lab.wait_for_output(rf"q{MID_RUN_QUERIES}-1 r0:")
        if how == "ctrl-c":
            os.killpg(lab.proc.pid, signal.SIGINT)
        else:
            lab.proc.send_signal(signal.SIGTERM)

    lab.disturb_mid_run(interrupt, measuring=False)
    assert lab.returncode == 130, lab.stdout[-2000:] + lab.stderr
    lab.assert_clean_error("interrupted")
    lab.assert_servers_gone()
    project.assert_outputs_intact()


def test_busy_server_is_still_responsive(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The frozen-server probe must not stop a healthy run: a server in the middle of a long
    generation still answers it."""

    async def go() -> None:
        config = ServerConfig(model_path=str(tiny_model_dir), max_tokens=1500)
        async with ServerProcess(config, log_path=tmp_path / "s.log") as server:
            body = {
                "model": "default_model",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 1500,
            }
            async with httpx.AsyncClient(timeout=60) as client:
                long = asyncio.create_task(
                    client.post(f"{server.base_url}/chat/completions", json=body)
                )
                await asyncio.sleep(0.3)
                assert not long.done()
                await asyncio.to_thread(server.check_responsive, 5.0)
                assert not long.done(), "the generation was too short to test anything"
                assert (await long).status_code == 200

    asyncio.run(go())


def test_stages_pass_server_host_through(tmp_path: Path) -> None:
    """Every stage builds its server from params.server (profile is checked live above)."""
    from punie.measurement.levers import server_config
    from punie.params import parse_params

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["server"]["host"] = "::1"
    config = server_config(parse_params(data), "m", "d", 3)
    assert config.host == "::1" and config.num_draft_tokens == 3
    assert ServerConfig(model_path="m").host == "127.0.0.1"  # loopback unless asked


@pytest.mark.fault(keeps_outputs=True)
@pytest.mark.parametrize("blocked", ["out", "out/metrics"])
def test_profile_to_an_unwritable_output_fails_before_measuring(
    project: Project, blocked: str
) -> None:
    """As root, permission bits do not stop writes, so the unwritable place is a path under
    a regular file: the whole --out, or only its metrics directory (which profile would
    otherwise reach only after the measured run). No server may start."""
    blocker = project.root / blocked
    if blocker.exists():
        shutil.rmtree(blocker)
    blocker.write_text("not a directory\n")
    out = project.root / "out"
    out_arg = blocker / "sub" if blocked == "out" else out
    lab = project.run_in_process(
        "profile", "--queries", str(project.queries(2)), "--out", str(out_arg)
    )
    assert lab.returncode == 1, lab.stderr
    lab.assert_clean_error(str(blocker), "cannot write")
    assert blocker.read_text() == "not a directory\n"
    assert not list(project.root.rglob("profile-server.log")), "a server was started"
    if blocked == "out/metrics":
        assert (out / "reports" / "profile.md").read_text() == SENTINELS["reports/profile.md"]


BAD_PARAMS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("wrong type", lambda p: p["server"].update(max_tokens="lots"), "server.max_tokens"),
    (
        "negative k",
        lambda p: p["speculative"].update(num_draft_tokens=[2, -3]),
        "speculative.num_draft_tokens",
    ),
    ("unknown key", lambda p: p["server"].update(colour="red"), "server.colour: unknown key"),
    ("missing model", lambda p: p["models"].pop("main"), "models.main: required key is missing"),
]


@pytest.mark.fault(keeps_outputs=True)
@pytest.mark.parametrize(("case", "spoil", "named"), BAD_PARAMS, ids=[c[0] for c in BAD_PARAMS])
def test_invalid_params_name_the_key(
    project: Project, case: str, spoil: Callable[[dict[str, Any]], None], named: str
) -> None:
    spoil(project.params)
    project.write_params()
    lab = project.run_in_process(
        "profile", "--queries", str(project.queries(2)), "--out", str(project.out)
    )
    assert lab.returncode == 1, lab.stderr
    lab.assert_clean_error(named, "params.yaml")
    project.assert_outputs_intact()


# --------------------------------------------------------------------------------------
# Atomic writes: an interrupted write leaves the previous file
# --------------------------------------------------------------------------------------


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("serialisation failed midway")


@pytest.mark.fault(keeps_outputs=True)
def test_serialisation_failing_midway_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics" / "profile.json"
    results.write_json(path, {"accuracy": 1.0})
    before = path.read_bytes()
    rows = [{"query": f"q{i}", "seconds": float(i)} for i in range(1000)]
    rows.insert(500, {"query": "bad", "seconds": _Unprintable()})
    with pytest.raises(RuntimeError, match="midway"):
        results.write_json(path, {"records": rows})
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["profile.json"]


_WRITER = """
import sys
from pathlib import Path
from punie.results import write_json
path = Path(sys.argv[1])
big = {"rows": [{"query": "q%d" % i, "text": "x" * 200} for i in range(100_000)]}
print("writing", flush=True)
while True:
    write_json(path, big)
"""


@pytest.mark.fault(keeps_outputs=True)
def test_writer_killed_midway_leaves_a_complete_file(tmp_path: Path) -> None:
    """SIGKILL a process in the middle of writing ~25 MB of JSON, over and over: the file is
    always the previous complete version, never a prefix."""
    path = tmp_path / "metrics.json"
    results.write_json(path, {"previous": True})
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        # Kill while a temp file is being written (it exists only during a write).
        wait_for(lambda: list(tmp_path.glob(".metrics.json.*.tmp")), 30, "a write in progress")
    finally:
        proc.kill()
        proc.wait()
    data = json.loads(path.read_text())  # complete JSON: previous or a whole new version
    assert data == {"previous": True} or len(data["rows"]) == 100_000


@pytest.mark.fault(keeps_outputs=True)
def test_failed_fuse_keeps_the_previous_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A real `mlx_lm fuse` that fails (no adapters) must not have removed or half-replaced
    the model directory it was to replace."""
    from punie.models.train import fuse
    from punie.serving.runtime import MlxCommandError

    models = tmp_path / "models"
    previous = models / "main"
    previous.mkdir(parents=True)
    (previous / "config.json").write_text('{"previous": true}\n')
    no_adapters = tmp_path / "adapters"
    no_adapters.mkdir()
    with pytest.raises(MlxCommandError):
        fuse(tiny_model_dir, no_adapters, previous, tiny_model_dir, "auto")
    assert [p.name for p in models.iterdir()] == ["main"]
    assert [p.name for p in previous.iterdir()] == ["config.json"]
    assert (previous / "config.json").read_text() == '{"previous": true}\n'


def test_atomic_dir_replaces_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "model"
    with results.atomic_dir(out) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(KeyboardInterrupt), results.atomic_dir(out) as tmp:
        (tmp / "weights").write_text("v2 half")
        raise KeyboardInterrupt
    assert (out / "weights").read_text() == "v1"
    with results.atomic_dir(out) as tmp:
        (tmp / "weights").write_text("v2")
    assert (out / "weights").read_text() == "v2"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


# --------------------------------------------------------------------------------------
# Tools and model replies inside a measured run
# --------------------------------------------------------------------------------------


def _scripted(first_turn: Callable[[], dict[int, DeltaToolCall]], persistent: bool = False):
    """A streamed model: for a "Find ..." query its first turn (every turn if `persistent`)
    is `first_turn()`; anything else gets a direct answer."""

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        prompt = str(messages[0].parts[-1].content)  # type: ignore[union-attr]
        if prompt.startswith("Find") and (len(messages) == 1 or persistent):
            yield first_turn()
        else:
            yield "answered after the tool"

    return FunctionModel(stream_function=stream)


def _call(name: str, json_args: str) -> Callable[[], dict[int, DeltaToolCall]]:
    return lambda: {0: DeltaToolCall(name=name, json_args=json_args, tool_call_id="c0")}


def _measured(model: FunctionModel, toolset: FunctionToolset) -> Any:
    return build_agent(TimedModel(model), TimedToolset(toolset))


TOOL_QUERY = Query("Find all Django views", "tool", "run_command")
NEXT_QUERY = Query("What is dependency injection?", "direct")


def _run_two(agent: Any, timeout_s: float) -> list[Any]:
    cases = [Case("faulty", "f", TOOL_QUERY), Case("next", "f", NEXT_QUERY)]
    return asyncio.run(run_queries(agent, cases, timeout_s=timeout_s))


@pytest.mark.fault
def test_hanging_command_is_killed_by_the_tool_timeout_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    """A real command that blocks forever (cat on a FIFO without writer)."""
    os.mkfifo(tmp_path / "fifo")
    ws = Workspace(tmp_path, timeout_s=1.0)
    agent = _measured(
        _scripted(_call("run_command", '{"command": "cat fifo"}')), workspace_toolset(ws)
    )
    start = time.monotonic()
    faulty, following = _run_two(agent, timeout_s=20)
    assert time.monotonic() - start < 10
    assert faulty.error is None, faulty.error
    (tool,) = faulty.tools
    assert 1.0 <= tool.duration_s < 5
    assert faulty.output == "answered after the tool"
    assert following.error is None


@pytest.mark.fault
def test_hanging_python_tool_is_cut_by_the_query_timeout(tmp_path: Path) -> None:
    """A tool that never returns (no subprocess to kill): the query timeout ends the query,
    the error names it, and the next query still runs."""

    async def run_command(command: str) -> str:
        """Hang."""
        await asyncio.sleep(3600)
        return "never"

    toolset: FunctionToolset = FunctionToolset()
    toolset.add_function(run_command)
    agent = _measured(_scripted(_call("run_command", '{"command": "ls"}')), toolset)
    start = time.monotonic()
    faulty, following = _run_two(agent, timeout_s=2)
    assert time.monotonic() - start < 10
    assert faulty.error is not None and "TimeoutError" in faulty.error
    assert not faulty.correct
    assert following.error is None and following.correct


@pytest.mark.fault
def test_tool_that_raises_is_recorded_and_the_run_goes_on() -> None:
    """A tool outside the sandbox wrappers raises: the query fails naming the exception
    (never a crash of the whole run)."""

    def run_command(command: str) -> str:
        """Explode."""
        raise RuntimeError("disk on fire")

    toolset: FunctionToolset = FunctionToolset()
    toolset.add_function(run_command)
    agent = _measured(_scripted(_call("run_command", '{"command": "ls"}')), toolset)
    faulty, following = _run_two(agent, timeout_s=10)
    assert faulty.error is not None and "disk on fire" in faulty.error
    (tool,) = faulty.tools
    assert tool.error is not None and "disk on fire" in tool.error
    assert following.error is None and following.correct


@pytest.mark.fault
@pytest.mark.parametrize(
    ("name", "json_args"),
    [("run_command", '{"command": '), ("rm_everything", '{"path": "."}')],
    ids=["malformed-arguments", "unknown-tool"],
)
def test_model_that_keeps_sending_bad_tool_calls_is_bounded(name: str, json_args: str) -> None:
    """One bad call is retried (tests/test_agent.py); a model that never stops must end the
    query with an error naming the problem, not loop."""
    calls = 0

    def bad() -> dict[int, DeltaToolCall]:
        nonlocal calls
        calls += 1
        return {0: DeltaToolCall(name=name, json_args=json_args, tool_call_id=f"c{calls}")}

    agent = _measured(_scripted(bad, persistent=True), workspace_toolset(Workspace(WORKSPACE)))
    start = time.monotonic()
    faulty, following = _run_two(agent, timeout_s=10)
    assert time.monotonic() - start < 5
    assert faulty.error is not None and "retries" in faulty.error, faulty.error
    assert calls <= 5
    assert following.error is None and following.correct


# --------------------------------------------------------------------------------------
# Hard deaths: SIGKILL (what the OOM killer sends) and hang-ups leave nothing running
# --------------------------------------------------------------------------------------

# Every child of the lab must be gone this soon after the lab's hard death.
GONE_WITHIN_S = 5.0
LINUX = sys.platform.startswith("linux")
# How a child knows its parent died: the lifeline everywhere, and on Linux the kernel's
# parent-death signal too for children started from the main thread. "lifeline-only" turns
# the second off, so Linux tests the one defence macOS has.
DEFENCES = ["default", "lifeline-only"] if LINUX else ["default"]
# A module that says when it runs (the launcher has armed its defences by then) and sleeps.
SLEEPER = "import sys, time\nprint('ready', flush=True)\ntime.sleep(float(sys.argv[1]))\n"


def _defence_env(defence: str) -> dict[str, str]:
    return {launch.PDEATHSIG_ENV: "0"} if defence == "lifeline-only" else {}


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _describe(pids: list[int]) -> str:
    out = []
    for pid in pids:
        try:
            out.append(f"{pid}: {' '.join(psutil.Process(pid).cmdline())[:160]}")
        except psutil.Error:
            out.append(str(pid))
    return "; ".join(out)


def wait_gone(pids: list[int], timeout_s: float = GONE_WITHIN_S) -> float:
    """Seconds until none of `pids` runs (zombies waiting for init count as gone)."""
    start = time.monotonic()
    while (left := [p for p in pids if _running(p)]) and time.monotonic() - start < timeout_s:
        time.sleep(0.02)
    assert not left, f"still running {timeout_s:.0f}s after their parent died: {_describe(left)}"
    return time.monotonic() - start


def _kill_tree(pids: list[int]) -> None:
    """Cleanup after a failed test: every process of the tree, with its group."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _tree(pid: int) -> list[int]:
    try:
        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.Error:
        return [pid]


def _launched(pid: int, needle: str = "") -> list[psutil.Process]:
    """Processes under `pid` started through the launcher (with `needle` in their command)."""
    found = []
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    for child in children:
        try:
            cmdline = child.cmdline()
        except psutil.Error:
            continue
        if launch.LAUNCHER in cmdline and needle in " ".join(cmdline) and _running(child.pid):
            found.append(child)
    return found


@pytest.mark.fault(keeps_outputs=True, hard_kill=True)
@pytest.mark.parametrize("defence", DEFENCES)
def test_sigkilled_profile_leaves_no_server(project: Project, defence: str) -> None:
    """SIGKILL (the OOM killer's signal) gives the lab no chance to stop its server, which
    on a 32 GB Mac holds ~20 GB and blocks the next run: the server must stop itself."""
    lab = project.profile(project.queries(MID_RUN_QUERIES), env=_defence_env(defence))
    try:
        lab.wait_for_output(rf"q{MID_RUN_QUERIES}-1 r0:")
        server = lab.server()
        assert server is not None
        cmdline = server.cmdline()
        assert launch.LAUNCHER in cmdline and "--lifeline" in cmdline, cmdline
        assert ("--pdeathsig" in cmdline) == (LINUX and defence == "default"), cmdline
        lab.proc.send_signal(signal.SIGKILL)
        lab.wait(CAUSE_WITHIN_S)
        wait_gone([server.pid])
    finally:
        if lab.returncode is None:
            lab.kill()
    assert lab.returncode == -signal.SIGKILL
    if defence == "lifeline-only":  # the launcher said why it went
        log = (project.out / paths.PROFILE_SERVER_LOG).read_text(errors="replace")
        assert "the parent of mlx_lm" in log and "died" in log, log[-2000:]
    project.assert_outputs_intact()


@pytest.mark.fault(keeps_outputs=True, hard_kill=True)
@pytest.mark.parametrize("how", ["sighup", "terminal-closed"])
def test_hung_up_profile_stops_the_server_and_keeps_outputs(project: Project, how: str) -> None:
    """A closed terminal sends SIGHUP: handled like SIGTERM (unwind, stop the server, exit 130
    naming the signal). Closing the lab's real (pseudo-)terminal also makes every later write
    to it fail, which must not turn the clean stop into a crash."""
    lab = project.profile(project.queries(MID_RUN_QUERIES), terminal=how == "terminal-closed")

    def hang_up() -> None:
        lab.live_server()
        if how == "sighup":
            lab.proc.send_signal(signal.SIGHUP)
        else:
            lab.hang_up()

    lab.disturb_mid_run(hang_up)
    assert lab.returncode == 130, lab.stdout[-2000:] + lab.stderr
    if how == "sighup":  # on a closed terminal nobody can read the message
        lab.assert_clean_error("interrupted (SIGHUP")
    lab.assert_servers_gone()
    project.assert_outputs_intact()


_PARENT = """
import sys
from punie.serving.runtime import run_mlx, run_parallel
model, port, where = sys.argv[1:]
serve = lambda: run_mlx(["server", "--model", model, "--port", port])
serve() if where == "main-thread" else run_parallel([serve])
"""


@pytest.mark.fault(hard_kill=True)
@pytest.mark.parametrize(
    ("where", "defence"),
    [("main-thread", d) for d in DEFENCES] + [("worker-thread", "default")],
)
def test_run_mlx_child_dies_with_its_sigkilled_parent(
    tiny_model_dir: Path, tmp_path: Path, where: str, defence: str
) -> None:
    """A `run_mlx` child (a trainer, fuse, a worker; here a long-lived `mlx_lm server`) of a
    parent killed with SIGKILL, started from the main thread or from a `run_parallel` worker
    thread (as bootstrap's trainers are: only the lifeline protects those)."""
    port = free_port()
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(tiny_model_dir), str(port), where],
        stdin=subprocess.DEVNULL,
        stdout=(tmp_path / "parent.log").open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **_defence_env(defence)},
        start_new_session=True,
    )
    tree: list[int] = []
    try:
        (child,) = wait_for(lambda: _launched(parent.pid, "mlx_lm"), 30, "the run_mlx child")
        wait_for(
            lambda: port in {c.laddr.port for c in child.net_connections(kind="inet")},
            60,
            "the child to serve (up and running)",
        )
        pdeathsig = "--pdeathsig" in child.cmdline()
        assert pdeathsig == (LINUX and where == "main-thread" and defence == "default")
        tree = _tree(parent.pid)
        parent.kill()
        parent.wait()
        wait_gone([child.pid])
    finally:
        _kill_tree([parent.pid, *tree])
        parent.wait()


def test_a_child_started_from_a_finished_worker_thread_lives_on(tmp_path: Path) -> None:
    """The trap of the parent-death signal: it fires when the *thread* that started the child
    exits. `run_parallel`'s threads end when it returns, while the children they started may
    be meant to live on; `launch.popen` asks for the signal only from the main thread."""
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}

    def start() -> subprocess.Popen[str]:
        proc = launch.popen(
            [sys.executable, "-m", "sleeper", "60"], stdout=subprocess.PIPE, text=True, env=env
        )
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        assert "--pdeathsig" not in proc.args
        return proc

    (child,) = run_parallel([start])  # its thread has exited when this returns
    try:
        time.sleep(1.0)
        assert child.poll() is None, "the child died with the worker thread that started it"
    finally:
        launch.kill(child)
        child.wait()


@pytest.mark.skipif(not LINUX, reason="the parent-death signal is Linux's")
def test_the_parent_death_signal_trap_is_real(tmp_path: Path) -> None:
    """The test above would catch a regression: with the signal asked for from a worker
    thread, the child dies as soon as that thread ends, its parent process alive."""
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    fd = launch.lifeline_fd()
    cmd = launch.launcher_command(
        [sys.executable, "-m", "sleeper", "60"], lifeline=fd, pdeathsig=True
    )
    started: list[subprocess.Popen[str]] = []

    def start() -> None:
        proc = subprocess.Popen(
            cmd, pass_fds=(fd,), stdout=subprocess.PIPE, text=True, env=env,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        started.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    (child,) = started
    try:
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        launch.kill(child)
        child.wait()


_RUNNER = "import subprocess, sys; subprocess.run(sys.argv[1:])"


def _ignore_sighup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


@pytest.mark.fault(keeps_outputs=True, hard_kill=True)
@pytest.mark.parametrize("runner", ["dvc", "nohup"])
def test_a_stage_dies_with_the_dvc_that_runs_it(project: Project, runner: str) -> None:
    """DVC runs a stage as its child and waits; killed (SIGKILL), it would leave the stage
    running beside the next `dvc repro`. Run by DVC (DVC_STAGE set), the lab stops as on
    SIGTERM when its runner dies. Run by anything else it outlives its parent, and under
    `nohup` (SIGHUP ignored) a hang-up too, as `nohup punie-lab ... &` asks. The runner is a
    stand-in process for dvc or the shell, so this test needs no DVC project."""
    env = {**os.environ, "COLUMNS": "200"}
    if runner == "dvc":
        env["DVC_STAGE"] = "profile"
    args = ["--queries", str(project.queries(MID_RUN_QUERIES)), "--out", str(project.out)]
    out, err = project.root / "lab.out", project.root / "lab.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        parent = subprocess.Popen(
            [sys.executable, "-c", _RUNNER, sys.executable, "-m", "punie.cli", "profile", *args],
            cwd=project.root, env=env, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_ignore_sighup if runner == "nohup" else None,
        )  # fmt: skip
    tree: list[int] = []
    try:
        wait_for(lambda: re.search(rf"q{MID_RUN_QUERIES}-1 r0:", out.read_text()), 60, "a query")
        tree = _tree(parent.pid)
        lab = next(p for p in psutil.Process(parent.pid).children() if "punie.cli" in p.cmdline())
        (server,) = _launched(lab.pid, "mlx_lm")
        parent.kill()
        parent.wait()
        if runner == "dvc":
            wait_gone([lab.pid, server.pid], CAUSE_WITHIN_S)
            assert_clean_error(err.read_text(), "interrupted (the dvc process running this stage")
        else:
            lab.send_signal(signal.SIGHUP)
            time.sleep(2)
            assert _running(lab.pid) and _running(server.pid), "nohup'd lab stopped"
            lab.send_signal(signal.SIGTERM)
            wait_gone([lab.pid, server.pid], CAUSE_WITHIN_S)
            assert_clean_error(err.read_text(), "interrupted (SIGTERM)")
    finally:
        _kill_tree([parent.pid, *tree])
        parent.wait()
    project.assert_outputs_intact()


# --------------------------------------------------------------------------------------
# `dvc repro` killed with SIGKILL mid-stage, then run again
# --------------------------------------------------------------------------------------

BIN = Path(sys.executable).parent  # the venv's bin: dvc and punie-lab
# A killed stage's whole tree (dvc, punie-lab, trainers, servers) must be gone this soon: the
# stage notices dvc's death within a quarter second, then unwinds (trainers killed, the
# temporary directory removed).
TREE_GONE_WITHIN_S = 15.0


class DvcProject:
    """A scratch copy of the project that `dvc repro` runs for real: dvc.yaml, data/, the
    code its stages depend on, params.yaml shrunk by `shrink`; `dvc init --no-scm` (no git
    needed for repro and status). Git and DVC state stay inside it."""

    def __init__(self, root: Path, shrink: Callable[[dict[str, Any]], None]) -> None:
        self.root = root
        root.mkdir(parents=True)
        shutil.copy(ROOT / "dvc.yaml", root)
        shutil.copytree(ROOT / "data", root / "data", ignore=shutil.ignore_patterns("corpus"))
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(ROOT / "src" / "punie", root / "src" / "punie", ignore=ignore)
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        shrink(params)
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        home, self.tmp = root.parent / "home", root.parent / "tmp"
        home.mkdir(exist_ok=True)
        self.tmp.mkdir(exist_ok=True)
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "DVC_SITE_CACHE_DIR": str(root.parent / "dvc-site-cache"),
            "DVC_NO_ANALYTICS": "1",
            "TMPDIR": str(self.tmp),  # so a stage's leftover temporary files show
            "COLUMNS": "200",
        }
        self.dvc("init", "--no-scm", "-q")

    def dvc(self, *args: str, timeout_s: float = 180) -> str:
        done = subprocess.run(
            [str(BIN / "dvc"), *args], cwd=self.root, env=self.env, capture_output=True,
            text=True, timeout=timeout_s, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert done.returncode == 0, f"dvc {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def start(self, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.root.parent / f"dvc-{time.monotonic_ns()}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(BIN / "dvc"), *args], cwd=self.root, env=self.env, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        return proc, log

    def kill_dvc_when(
        self, args: list[str], ready: Callable[[int], list[psutil.Process]], what: str
    ) -> str:
        """Start `dvc ARGS`, wait until `ready(dvc pid)` names processes doing `what` (and
        still doing it a moment later), SIGKILL dvc alone, and check its whole tree is gone.
        Returns what dvc and the stage printed."""
        proc, log = self.start(*args)
        tree: list[int] = []
        try:

            def doing() -> list[psutil.Process]:
                if proc.poll() is not None:
                    raise AssertionError(f"dvc exited ({proc.returncode}):\n{log.read_text()}")
                return ready(proc.pid)

            workers = wait_for(doing, 120, what)
            time.sleep(1.0)  # well into it
            assert all(_running(w.pid) for w in workers), f"{what} ended before the kill"
            tree = _tree(proc.pid)
            proc.kill()  # dvc only, as the OOM killer or `kill -9 <dvc pid>` would
            proc.wait()
            wait_gone(tree, TREE_GONE_WITHIN_S)
        finally:
            _kill_tree([proc.pid, *tree])
            proc.wait()
        return log.read_text(errors="replace")

    def assert_no_temp_left(self) -> None:
        left = [p for p in self.tmp.iterdir() if p.name.startswith("punie")]  # not mlx's cache
        assert not left, f"temporary files left behind: {left}"


def _tiny_bootstrap(params: dict[str, Any]) -> None:
    """Every step of bootstrap (corpus, tokenizer, two models trained side by side, fuse),
    at sizes that take seconds; distillation off (rows 0) to stay within two minutes."""
    b = params["bootstrap"]
    b["corpus"].update(train=16, valid=4, test=4, processes=1)
    b["tokenizer"]["vocab_size"] = 1024
    for name, hidden in (("main", 32), ("draft", 16)):
        b[name].update(
            hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=1, intermediate_size=2 * hidden, iters=30, batch_size=2,
            max_seq_length=4096, val_batches=1,
        )  # fmt: skip
    b["distill"]["rows"] = 0


def _load_model(path: Path) -> None:
    from mlx_lm import load

    model = load(str(path))[0]
    assert len(model.layers) >= 1


@pytest.mark.slow
@pytest.mark.timeout(420)  # measured 2-2.3 min with the 2 cores shared (load 4), 4-5 at load 8
@pytest.mark.fault(keeps_outputs=True, hard_kill=True)
def test_dvc_repro_killed_mid_bootstrap_training_then_rerun(tmp_path: Path) -> None:
    """`dvc repro bootstrap` SIGKILLed while the two trainers run: nothing is left running
    (the stage notices dvc is gone and stops; its trainers die with it), no temporary
    directory is left, and `dvc repro` again finishes with loadable models, parsable metrics
    and a clean `dvc status`."""
    dvc = DvcProject(tmp_path / "project", _tiny_bootstrap)
    printed = dvc.kill_dvc_when(
        ["repro", "bootstrap"],
        lambda pid: trainers if len(trainers := _launched(pid)) == 2 else [],
        "both trainers of bootstrap",
    )
    assert "interrupted (the dvc process running this stage" in printed, printed[-3000:]
    dvc.assert_no_temp_left()
    assert not (dvc.root / "models" / "main").exists()  # never half-written

    dvc.dvc("repro", "bootstrap", timeout_s=300)
    for model in ("main", "draft"):
        _load_model(dvc.root / "models" / model)
    metrics = json.loads((dvc.root / paths.BOOTSTRAP_METRICS).read_text())
    assert metrics["main_params"] > metrics["draft_params"] > 0
    assert "up to date" in dvc.dvc("status", "bootstrap"), dvc.dvc("status", "bootstrap")
    dvc.assert_no_temp_left()


def _tiny_retrain(params: dict[str, Any]) -> None:
    """Retrain on the one-layer test model: one LoRA run long enough to be killed in, fused,
    then both models answer one query of each set."""
    params["models"] = {"main": "models/main", "draft": None}
    params["queries"] |= {name: f"data/tiny/{name}.yaml" for name in ("seed", "heldout", "wording")}
    params["server"]["max_tokens"] = 8
    c = params["conciseness"]
    c.update(tool_examples=4, direct_examples=2, parallel_servers=2)
    c["lora"].update(iters=[20], rank=2, num_layers=1, batch_size=1, max_seq_length=8192)


@pytest.mark.slow
@pytest.mark.timeout(420)  # measured 2-2.3 min with the 2 cores shared (load 4), 4-5 at load 8
@pytest.mark.fault(keeps_outputs=True, hard_kill=True)
def test_dvc_repro_killed_mid_retrain_lora_then_rerun(tmp_path: Path, tiny_model_dir: Path) -> None:
    """`dvc repro retrain` SIGKILLed during its LoRA run: nothing is left running, and
    `dvc repro` again finishes: metrics parse, models/concise is a loadable model or the
    marker that the main model stands, `dvc status retrain` is clean. Its inputs come the
    cheap way (the test model as models/main, the gate's decision, concise-data run in
    this process); `--single-item` runs retrain alone."""
    dvc = DvcProject(tmp_path / "project", _tiny_retrain)
    shutil.copytree(tiny_model_dir, dvc.root / "models" / "main")
    tiny = dvc.root / "data" / "tiny"
    tiny.mkdir()
    (tiny / "seed.yaml").write_text(
        "- query: Find all Django views\n  expect: tool\n  tool: run_command\n"
    )
    (tiny / "heldout.yaml").write_text("- query: What is a closure?\n  expect: direct\n")
    (tiny / "wording.yaml").write_text(
        "- query: Show me the settings module\n  expect: tool\n  tool: read_file\n"
    )
    results.write_json(dvc.root / paths.GATE, {"retrain": True, "reason": "test"})
    made = lab_in_process(dvc.root, "concise-data")  # saves an interpreter and dvc start-up
    assert made.returncode == 0, made.stdout + made.stderr

    printed = dvc.kill_dvc_when(
        ["repro", "--single-item", "retrain"],
        lambda pid: _launched(pid, "lora"),
        "the LoRA run of retrain",
    )
    assert "interrupted (the dvc process running this stage" in printed, printed[-3000:]

    dvc.dvc("repro", "--single-item", "retrain", timeout_s=300)
    metrics = json.loads((dvc.root / paths.RETRAIN_METRICS).read_text())
    concise = dvc.root / paths.CONCISE_MODEL
    if metrics.get("trained") is False:
        assert json.loads((concise / "MAIN_MODEL_STANDS.json").read_text())["trained"] is False
    else:
        _load_model(concise)
    assert "up to date" in dvc.dvc("status", "retrain")
    dvc.assert_no_temp_left()

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
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
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

from punie import cli, results
from punie.agent.production import build_agent
from punie.agent.queries import Query
from punie.agent.tools import Workspace, workspace_toolset
from punie.measurement.timing import Case, TimedModel, TimedToolset, run_queries
from punie.serving import server as server_mod
from punie.serving.config import ServerConfig
from punie.serving.server import ServerError, ServerProcess

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
        self, queries: Path, out: Path | None = None, *, sigint_ignored: bool = False
    ) -> Lab:
        args = ["profile", "--queries", str(queries), "--out", str(out or self.out)]
        return Lab(self.root, args, sigint_ignored=sigint_ignored)

    def run_in_process(self, *args: str) -> Finished:
        """`punie-lab ARGS` through its real entry point, in this process (for faults that
        stop a run before any server or signal is involved: no interpreter start-up)."""
        cwd, sigterm = Path.cwd(), signal.getsignal(signal.SIGTERM)
        out, err = io.StringIO(), io.StringIO()
        start = time.monotonic()
        try:
            os.chdir(self.root)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                returncode = cli.main(list(args))
        finally:
            os.chdir(cwd)
            signal.signal(signal.SIGTERM, sigterm)  # main() installs its own handler
        assert time.monotonic() - start < CAUSE_WITHIN_S
        return Finished(returncode, out.getvalue(), err.getvalue())

    def assert_outputs_intact(self) -> None:
        for rel, text in SENTINELS.items():
            assert (self.out / rel).read_text() == text, f"{rel} was changed"
        leftovers = [p for p in self.out.rglob("*") if p.name.endswith(".tmp")]
        assert not leftovers, f"half-written files left: {leftovers}"


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


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Lab:
    """`punie-lab ARGS` in its own process group (as a terminal runs it), output to files."""

    def __init__(self, cwd: Path, args: list[str], *, sigint_ignored: bool = False) -> None:
        self.stdout_path = cwd / f"lab-{time.monotonic_ns()}.out"
        self.stderr_path = self.stdout_path.with_suffix(".err")
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "punie.cli", *args],
                cwd=cwd,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "COLUMNS": "200"},
                start_new_session=True,
                # As a background job of a script starts it (bash ignores SIGINT there).
                preexec_fn=_ignore_sigint if sigint_ignored else None,
            )
        self.started = time.monotonic()
        self.returncode: int | None = None
        self.seen_servers: set[int] = set()

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

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
    lab.assert_clean_error("model_path does not exist", str(missing))
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
    try:
        lab.wait_for_output(rf"q{MID_RUN_QUERIES}-1 r0:")  # the first query is measured
        server = lab.server()
        assert server is not None
        server.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        lab.wait(CAUSE_WITHIN_S)
    finally:
        if lab.returncode is None:
            lab.kill()
    assert time.monotonic() - killed < CAUSE_WITHIN_S
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
    try:
        lab.wait_for_output(rf"q{MID_RUN_QUERIES}-1 r0:")
        server = lab.server()
        assert server is not None
        server.send_signal(signal.SIGSTOP)
        frozen = time.monotonic()
        lab.wait(CAUSE_WITHIN_S)
    finally:
        if lab.returncode is None:
            lab.kill()
    assert time.monotonic() - frozen < CAUSE_WITHIN_S
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
    try:
        addrs = wait_for(lab.listening, 60, "the server to listen")
        assert {ip for ip, _ in addrs} == {"127.0.0.2"}, addrs
        if when == "measuring":
            lab.wait_for_output(rf"q{MID_RUN_QUERIES}-1 r0:")
        if how == "ctrl-c":
            os.killpg(lab.proc.pid, signal.SIGINT)
        else:
            lab.proc.send_signal(signal.SIGTERM)
        interrupted = time.monotonic()
        lab.wait(CAUSE_WITHIN_S)
    finally:
        if lab.returncode is None:
            lab.kill()
    assert time.monotonic() - interrupted < CAUSE_WITHIN_S
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
    from punie.measurement.benchmark import server_config
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

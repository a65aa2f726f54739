"""ServerProcess against the real `mlx_lm server` on the tiny fixture model."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from punie.serving.config import ServerConfig
from punie.serving.server import ServerError, ServerProcess

from .conftest import mlx_server_pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_starts_answers_and_stops(tiny_model_dir: Path, tmp_path: Path) -> None:
    async def go() -> int:
        cfg = ServerConfig(model_path=str(tiny_model_dir), max_tokens=8)
        async with ServerProcess(cfg, log_path=tmp_path / "server.log") as server:
            assert server.config.port != 0
            assert server.config.host == "127.0.0.1"
            async with httpx.AsyncClient() as client:
                r = await client.post(
                    f"{server.base_url}/chat/completions",
                    json={
                        "model": "default_model",
                        "messages": [{"role": "user", "content": "hi"}],
                    },
                )
            assert r.status_code == 200
            assert r.json()["usage"]["completion_tokens"] >= 1
            return server.pid

    pid = asyncio.run(go())
    assert not _alive(pid)
    assert (tmp_path / "server.log").stat().st_size > 0


def test_binds_loopback_only(tiny_model_dir: Path, tmp_path: Path) -> None:
    async def go() -> None:
        async with ServerProcess(
            ServerConfig(model_path=str(tiny_model_dir)), log_path=tmp_path / "s.log"
        ) as server:
            import psutil

            addrs = [
                c.laddr
                for c in psutil.Process(server.pid).net_connections(kind="tcp")
                if c.status == psutil.CONN_LISTEN
            ]
            assert addrs, "server listens on nothing"
            assert all(a.ip == "127.0.0.1" for a in addrs), addrs

    asyncio.run(go())


@pytest.mark.fault
def test_missing_model_path_fails_fast(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(ServerError, match="model_path does not exist"):
        asyncio.run(ServerProcess(ServerConfig(model_path=str(tmp_path / "nope"))).start())
    assert time.monotonic() - start < 5


@pytest.mark.fault
def test_model_that_fails_to_load_is_detected(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    start = time.monotonic()
    server = ServerProcess(
        ServerConfig(model_path=str(broken)), log_path=tmp_path / "s.log", ready_timeout_s=60
    )
    with pytest.raises(ServerError) as err:
        asyncio.run(server.start())
    assert time.monotonic() - start < 30
    assert "log tail" in str(err.value)
    assert not server.is_alive()


@pytest.mark.fault
def test_port_already_taken_is_refused(tiny_model_dir: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ServerError, match="already in use"):
            asyncio.run(
                ServerProcess(ServerConfig(model_path=str(tiny_model_dir), port=port)).start()
            )


def test_a_server_without_a_log_path_leaves_no_temp_file(tiny_model_dir: Path) -> None:
    async def go() -> Path:
        async with ServerProcess(ServerConfig(model_path=str(tiny_model_dir))) as server:
            assert server.log_path.exists()
            return server.log_path

    assert not asyncio.run(go()).exists()
    refused = ServerProcess(ServerConfig(model_path="/no/such/model"))
    with pytest.raises(ServerError, match="does not exist"):
        asyncio.run(refused.start())
    assert not refused.log_path.exists()


@pytest.mark.fault
def test_notices_a_killed_server(tiny_model_dir: Path, tmp_path: Path) -> None:
    async def go() -> None:
        async with ServerProcess(
            ServerConfig(model_path=str(tiny_model_dir)), log_path=tmp_path / "s.log"
        ) as server:
            os.kill(server.pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while server.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert not server.is_alive()
            server.check_alive()

    with pytest.raises(ServerError, match="exited with status"):
        asyncio.run(go())


@pytest.mark.fault
def test_stops_on_exception_and_cancel(tiny_model_dir: Path, tmp_path: Path) -> None:
    pids: list[int] = []

    async def boom() -> None:
        async with ServerProcess(
            ServerConfig(model_path=str(tiny_model_dir)), log_path=tmp_path / "s.log"
        ) as server:
            pids.append(server.pid)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(boom())
    assert pids and not _alive(pids[0])
    assert pids[0] not in mlx_server_pids()


@pytest.mark.fault
def test_frozen_server_times_out_and_is_killed(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A SIGSTOPped server makes requests hang; our client timeout fires and stop() kills it."""

    async def go() -> int:
        async with ServerProcess(
            ServerConfig(model_path=str(tiny_model_dir)), log_path=tmp_path / "s.log"
        ) as server:
            os.kill(server.pid, signal.SIGSTOP)
            start = time.monotonic()
            with pytest.raises(httpx.TimeoutException):
                async with httpx.AsyncClient(timeout=2.0) as client:
                    await client.post(
                        f"{server.base_url}/chat/completions",
                        json={
                            "model": "default_model",
                            "messages": [{"role": "user", "content": "x"}],
                        },
                    )
            assert time.monotonic() - start < 10
            return server.pid

    pid = asyncio.run(go())
    assert not _alive(pid)

"""The BLAS preload of every mlx subprocess: OpenBLAS when present, a warning when it is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from punie.serving import runtime as mlx_runtime


@pytest.fixture
def linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mlx_runtime.sys, "platform", "linux")
    mlx_runtime.warn_no_openblas.cache_clear()


def test_auto_preloads_the_system_openblas_first(
    linux: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "libopenblas.so.0"
    lib.touch()
    monkeypatch.setattr(mlx_runtime, "OPENBLAS_CANDIDATES", (str(lib),))
    env = mlx_runtime.mlx_env("auto", {"LD_PRELOAD": "/x/libother.so"})
    assert env["LD_PRELOAD"] == f"{lib}:/x/libother.so"
    assert mlx_runtime.blas_in_use("auto") == "openblas"


def test_off_removes_an_inherited_openblas_and_keeps_other_preloads(linux: None) -> None:
    env = mlx_runtime.mlx_env("off", {"LD_PRELOAD": "/y/libopenblas.so.0:/x/libother.so"})
    assert env["LD_PRELOAD"] == "/x/libother.so"
    assert mlx_runtime.blas_in_use("off") == "bundled"


def test_auto_without_openblas_on_linux_warns_once(
    linux: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(mlx_runtime, "OPENBLAS_CANDIDATES", (str(tmp_path / "missing.so"),))
    for _ in range(3):
        env = mlx_runtime.mlx_env("auto", {})
    assert "LD_PRELOAD" not in env
    err = capsys.readouterr().err
    assert err.count("no system OpenBLAS") == 1
    assert "libopenblas0-pthread" in err


def test_off_and_macos_never_warn(
    linux: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(mlx_runtime, "OPENBLAS_CANDIDATES", (str(tmp_path / "missing.so"),))
    mlx_runtime.mlx_env("off", {})
    monkeypatch.setattr(mlx_runtime.sys, "platform", "darwin")
    mlx_runtime.mlx_env("auto", {})
    assert capsys.readouterr().err == ""


def test_an_unknown_blas_setting_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"runtime\.blas"):
        mlx_runtime.mlx_env("mkl", {})

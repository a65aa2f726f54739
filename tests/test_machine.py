"""Every figure names its machine: CPU, cores and the BLAS kernels actually in use."""

from __future__ import annotations

import subprocess
import sys

import pytest

from punie.machine import machine_keys
from punie.serving.runtime import find_openblas


def test_the_keys_name_cpu_cores_and_blas() -> None:
    keys = machine_keys("off")
    assert set(keys) == {"machine_cpu", "machine_cores", "machine_blas"}
    assert keys["machine_cpu"] and isinstance(keys["machine_cores"], int)
    assert keys["machine_blas"] == "mlx bundled BLAS" or sys.platform == "darwin"


@pytest.mark.skipif(find_openblas() is None, reason="no system OpenBLAS here")
def test_a_forced_openblas_kernel_set_shows_in_the_blas_key() -> None:
    """OPENBLAS_CORETYPE changes the kernels (and so the trained models): it must show."""
    code = "from punie.machine import blas; print(blas('auto'))"
    env = {"OPENBLAS_CORETYPE": "Sandybridge", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "Sandybridge" in out.stdout, out.stderr

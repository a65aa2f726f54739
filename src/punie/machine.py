"""The machine a figure was measured on: CPU model, cores and the BLAS kernels in use.

The embedded models are trained from random init, so the CPU's kernels (OpenBLAS picks them
per CPU; `OPENBLAS_CORETYPE` forces a set) change the trained weights and every figure after
them. Every stage writes these keys beside its metrics, so `dvc exp show` tells runs on
different machines apart.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import subprocess
import sys

from punie.serving.runtime import find_openblas


@functools.cache
def cpu_model() -> str:
    if sys.platform == "darwin":
        out = subprocess.run(
            ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True
        )
        return out.stdout.strip() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas(setting: str = "auto") -> str:
    """What mlx's CPU matmuls run on for `runtime.blas`: the preloaded OpenBLAS with its kernel
    set (honouring OPENBLAS_CORETYPE and OPENBLAS_NUM_THREADS), or what mlx brings."""
    if sys.platform == "darwin":
        return "Metal GPU (Accelerate on the CPU)"
    lib = find_openblas() if setting == "auto" else None
    if lib is None:
        return "mlx bundled BLAS"
    try:
        blas_lib = ctypes.CDLL(lib)
        blas_lib.openblas_get_config.restype = ctypes.c_char_p
        blas_lib.openblas_get_corename.restype = ctypes.c_char_p
        version = blas_lib.openblas_get_config().decode().split()[1]
        core = blas_lib.openblas_get_corename().decode()
    except (OSError, AttributeError, IndexError):
        return f"OpenBLAS ({lib})"
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default threads")
    return f"OpenBLAS {version} {core} kernels, {threads}"


def machine_keys(blas_setting: str = "auto") -> dict[str, str | int]:
    """Flat metrics keys naming the machine: `machine_cpu`, `machine_cores`, `machine_blas`."""
    return {
        "machine_cpu": cpu_model(),
        "machine_cores": os.cpu_count() or 0,
        "machine_blas": blas(blas_setting),
    }

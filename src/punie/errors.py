"""Errors the CLI reports as one clear line instead of a traceback."""

from __future__ import annotations

from punie.mlx_runtime import MlxCommandError
from punie.params import ParamsError
from punie.training.server import ServerError


class StageError(RuntimeError):
    """A stage cannot go on (bad input, failed gate, accuracy regression)."""


LabError = (ParamsError, ServerError, MlxCommandError, StageError, PermissionError, OSError)

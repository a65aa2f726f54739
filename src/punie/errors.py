"""Errors the CLI reports as one clear line instead of a traceback. A leaf module: every
layer raises these, none of them imports anything of the lab's."""

from __future__ import annotations


class LabError(Exception):
    """A failure with a message that says what went wrong and what to do about it."""


class ParamsError(LabError, ValueError):
    """params.yaml is missing, unreadable or invalid; the message names each bad key."""


class ServerError(LabError, RuntimeError):
    """The server could not start, died, or stopped answering. The message quotes its log."""


class MlxCommandError(LabError, RuntimeError):
    """An mlx subprocess failed; the message quotes the end of its output."""


class StageError(LabError, RuntimeError):
    """A stage cannot go on (bad input, failed gate, accuracy regression)."""

"""Re-export: the seed plan's name for `punie.serving.server`."""

from punie.serving.server import ServerError, ServerProcess, build_server_command

__all__ = ["ServerError", "ServerProcess", "build_server_command"]

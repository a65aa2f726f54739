"""Re-export: the seed plan's name for `punie.serving.config`."""

from punie.serving.config import ServerConfig

__all__ = ["ServerConfig"]

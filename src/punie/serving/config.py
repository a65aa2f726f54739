"""Typed configuration of one `mlx_lm server` process."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ServerConfig(BaseModel):
    """Everything `build_server_command` turns into `python -m mlx_lm server` flags.

    Frozen so a running server's configuration cannot drift from what it was started with.
    Unknown fields are refused, so a typo in params.yaml names itself instead of being ignored.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_path: str = Field(min_length=1, description="Main model directory or hub id.")
    port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port.")
    host: str = Field(default="127.0.0.1", min_length=1)
    adapter_path: str | None = None
    temp: float | None = Field(default=None, ge=0.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    chat_template_args: dict[str, Any] | None = None
    draft_model: str | None = Field(default=None, min_length=1)
    num_draft_tokens: int | None = Field(default=None, ge=1)
    prompt_cache_size: int | None = Field(default=None, ge=0)  # 0: no prompt cache reuse
    log_level: str | None = Field(default=None, pattern="^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")

    @model_validator(mode="after")
    def _draft_tokens_need_a_draft(self) -> ServerConfig:
        if self.num_draft_tokens is not None and self.draft_model is None:
            raise ValueError("num_draft_tokens is set but draft_model is not")
        return self

    @property
    def is_loopback(self) -> bool:
        return self.host in {"127.0.0.1", "localhost", "::1"} or self.host.startswith("127.")

"""build_server_command: `python -m mlx_lm server` with only the flags that are set."""

from __future__ import annotations

import json

from punie.serving.config import ServerConfig
from punie.serving.server import build_server_command


def _flag(cmd: list[str], name: str) -> str | None:
    return cmd[cmd.index(name) + 1] if name in cmd else None


def test_build_server_command_defaults() -> None:
    cmd = build_server_command(ServerConfig(model_path="m", port=8080), python="python")
    assert cmd[:4] == ["python", "-m", "mlx_lm", "server"]
    assert _flag(cmd, "--model") == "m"
    assert _flag(cmd, "--host") == "127.0.0.1"
    assert _flag(cmd, "--port") == "8080"
    for absent in ("--draft-model", "--num-draft-tokens", "--adapter-path", "--temp", "--top-p"):
        assert absent not in cmd


def test_build_server_command_with_draft_model() -> None:
    cmd = build_server_command(ServerConfig(model_path="m", draft_model="d"))
    assert _flag(cmd, "--draft-model") == "d"
    assert "--num-draft-tokens" not in cmd


def test_build_server_command_with_num_draft_tokens() -> None:
    cmd = build_server_command(ServerConfig(model_path="m", draft_model="d", num_draft_tokens=3))
    joined = " ".join(cmd)
    assert "--draft-model d --num-draft-tokens 3" in joined


def test_build_server_command_all_parameters() -> None:
    cfg = ServerConfig(
        model_path="m",
        port=9000,
        host="127.0.0.1",
        adapter_path="a",
        temp=0.0,
        top_p=0.9,
        max_tokens=64,
        chat_template_args={"enable_thinking": False},
        draft_model="d",
        num_draft_tokens=5,
        prompt_cache_size=3,
        log_level="DEBUG",
    )
    assert (cfg.port, cfg.draft_model, cfg.num_draft_tokens, cfg.top_p) == (9000, "d", 5, 0.9)
    assert cfg.is_loopback
    cmd = build_server_command(cfg)
    assert _flag(cmd, "--adapter-path") == "a"
    assert _flag(cmd, "--temp") == "0.0"
    assert _flag(cmd, "--top-p") == "0.9"
    assert _flag(cmd, "--max-tokens") == "64"
    assert json.loads(_flag(cmd, "--chat-template-args") or "") == {"enable_thinking": False}
    assert _flag(cmd, "--draft-model") == "d"
    assert _flag(cmd, "--num-draft-tokens") == "5"
    assert _flag(cmd, "--prompt-cache-size") == "3"
    assert _flag(cmd, "--log-level") == "DEBUG"

"""ServerConfig: defaults, each field, and invalid values named by field (all parameters at
once: tests/test_training_server.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from punie.serving.config import ServerConfig


def test_server_config_defaults() -> None:
    c = ServerConfig(model_path="m")
    assert c.model_path == "m"
    assert c.port == 0
    assert c.host == "127.0.0.1"
    assert c.adapter_path is None
    assert c.temp is None
    assert c.top_p is None
    assert c.max_tokens is None
    assert c.chat_template_args is None
    assert c.draft_model is None
    assert c.num_draft_tokens is None
    assert c.prompt_cache_size is None
    assert c.is_loopback


def test_server_config_with_draft_model() -> None:
    assert ServerConfig(model_path="m", draft_model="d").draft_model == "d"


def test_server_config_with_num_draft_tokens() -> None:
    c = ServerConfig(model_path="m", draft_model="d", num_draft_tokens=3)
    assert c.num_draft_tokens == 3


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("port", 8080),
        ("host", "0.0.0.0"),
        ("adapter_path", "adapters"),
        ("temp", 0.7),
        ("top_p", 0.9),
        ("max_tokens", 128),
        ("chat_template_args", {"enable_thinking": False}),
        ("prompt_cache_size", 4),
        ("log_level", "DEBUG"),
    ],
)
def test_server_config_each_field(field: str, value: object) -> None:
    assert getattr(ServerConfig.model_validate({"model_path": "m", field: value}), field) == value


def test_server_config_is_frozen() -> None:
    c = ServerConfig(model_path="m")
    with pytest.raises(ValidationError):
        c.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"model_path": "m", "draft_model": "d", "num_draft_tokens": 0}, "num_draft_tokens"),
        ({"model_path": "", "draft_model": "d"}, "model_path"),
        ({"draft_model": "d"}, "model_path"),
        ({"model_path": "m", "port": 70000}, "port"),
        ({"model_path": "m", "port": -1}, "port"),
        ({"model_path": "m", "max_tokens": 0}, "max_tokens"),
        ({"model_path": "m", "top_p": 0}, "top_p"),
        ({"model_path": "m", "temp": -1}, "temp"),
        ({"model_path": "m", "colour": "red"}, "colour"),
    ],
)
def test_invalid_values_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        ServerConfig.model_validate(kwargs)
    assert field in str(err.value)


def test_num_draft_tokens_without_draft_is_refused() -> None:
    with pytest.raises(ValidationError, match="draft_model"):
        ServerConfig(model_path="m", num_draft_tokens=3)

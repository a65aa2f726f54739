"""Shared fixtures: a tiny random-weight Qwen3 model that a real `mlx_lm server` loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from punie.measurement.records import QueryRecord
from punie.models.modelgen import Qwen3Shape, init_model_dir
from punie.models.tokenizer import save_tokenizer, train_tokenizer
from punie.params import Params, load_params

# Fault/hostile counting and reports/reliability.json (see tests/reliability_plugin.py).
from .reliability_plugin import pytest_addoption as pytest_addoption
from .reliability_plugin import register as _register_reliability
from .reliability_plugin import session_mlx_pids

ROOT = Path(__file__).resolve().parents[1]

_TEXTS = [
    "Find all Django views in the project.",
    "What is dependency injection? It is a way to pass collaborators in.",
    '<tool_call>{"name": "run_command", "arguments": {"command": "grep -rn def"}}</tool_call>',
    '<tool_call>\n{"name": "read_file", "arguments": {"path": "api/serializers.py"}}\n</tool_call>',
    "class UserSerializer(serializers.ModelSerializer): pass",
    "async def fetch(): await client.get(url)",
] * 10


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-tokenizer")
    save_tokenizer(train_tokenizer(_TEXTS, vocab_size=400), out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    """A loadable model directory (config, safetensors, tokenizer, chat template) in seconds."""
    out = tmp_path_factory.mktemp("tiny-model")
    init_model_dir(out, Qwen3Shape(32, 1, 2, 1, 64), tiny_tokenizer_dir, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_draft_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("tiny-draft")
    init_model_dir(out, Qwen3Shape(16, 1, 1, 1, 32), tiny_tokenizer_dir, seed=1)
    return out


def mlx_server_pids() -> list[int]:
    """This test session's running mlx_lm processes (another program's server on the machine,
    or another test run's, is not ours to count)."""
    return session_mlx_pids()


@pytest.fixture(scope="session", autouse=True)
def no_orphan_servers():
    """After the whole suite, no `mlx_lm server` this suite started may be left running
    (matched by the session token, so other programs' servers on the machine don't count)."""
    before = set(session_mlx_pids())
    yield
    left = set(session_mlx_pids()) - before
    assert not left, f"mlx_lm server processes left running: {sorted(left)}"


def pytest_configure(config: pytest.Config) -> None:
    _register_reliability(config)


def tiny_params(model: Path, tmp_path: Path) -> Params:
    """The committed params pointed at `model`, 8-token answers and two queries (one per
    decision) written under `tmp_path`, as both query sets."""
    queries = tmp_path / "queries.yaml"
    queries.write_text(
        "- query: Find all Django views\n  expect: tool\n  tool: run_command\n"
        "- query: What is a closure?\n  expect: direct\n"
    )
    params = load_params(ROOT / "params.yaml")
    return params.model_copy(
        update={
            "models": params.models.model_copy(update={"main": str(model)}),
            "server": params.server.model_copy(update={"max_tokens": 8}),
            "agent": params.agent.model_copy(update={"workspace": str(ROOT / "data/workspace")}),
            "queries": params.queries.model_copy(
                update={"seed": str(queries), "heldout": str(queries), "wording": str(queries)}
            ),
        }
    )


@pytest.fixture(scope="session")
def real_shape_hf_home() -> Path:
    """The real-shape pair (punie.models.real_shape: Qwen3's tokenizer and template, a 5-bit
    qwen3_moe main, a 4-bit qwen3 draft) as hub ids in the project's default cache
    (`.cache/real-shape-hf`, what `punie-lab real-shape` builds): built once for tests and CI,
    minutes from scratch, a second when up to date. Point HF_HOME at it to use the ids."""
    from punie.models.real_shape import build, default_hf_home

    home = default_hf_home(ROOT).absolute()
    build(home, root=ROOT)
    return home


def make_record(
    query: str,
    correct: bool,
    first_tool: str | None,
    *,
    error: str | None = None,
    expect: str = "direct",
    label: str | None = None,
) -> QueryRecord:
    """A query record with only its decision filled in (for tests of what compares them)."""
    return QueryRecord(
        label=label or query, set="heldout", query=query, expect=expect, expected_tool=None,
        repeat=0, total_s=0.1, generation_s=0.1, tool_s=0.0, overhead_s=0.0, n_turns=1,
        decision="tool" if first_tool else "direct", first_tool=first_tool, tools_called=[],
        correct=correct, error=error, prompt_tokens=10, completion_tokens=5, cached_tokens=0,
        output="", turns=[], tools=[],
    )  # fmt: skip

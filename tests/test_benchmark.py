"""measure_configs: configurations one after another, or several servers at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from punie.measurement.benchmark import ConfigRun, measure_configs
from punie.measurement.levers import server_config
from punie.measurement.records import QueryRecord
from punie.measurement.timing import load_cases
from punie.params import Params

from .conftest import mlx_server_pids, tiny_params


def _measure(
    params: Params,
    tmp_path: Path,
    concurrent: int,
    on_record: Callable[[str, QueryRecord], None] | None = None,
) -> dict[str, ConfigRun]:
    config = server_config(params, params.models.main)
    cases = load_cases({"seed": Path(params.queries.seed)})
    return asyncio.run(
        measure_configs(
            params,
            {"a": config, "b": config, "c": config},
            cases,
            repeats=1,
            interleave=False,
            log_dir=tmp_path / "logs",
            on_record=on_record,
            concurrent=concurrent,
        )
    )


@pytest.mark.slow
@pytest.mark.parametrize("concurrent", [1, 2])
def test_servers_at_once_overlap_up_to_the_limit_and_answer_alike(
    tiny_model_dir: Path, tmp_path: Path, concurrent: int
) -> None:
    params = tiny_params(tiny_model_dir, tmp_path)
    servers_up: list[int] = []

    def on_record(label: str, record: QueryRecord) -> None:
        servers_up.append(len(mlx_server_pids()))

    runs = _measure(params, tmp_path, concurrent, on_record)

    assert max(servers_up) == concurrent
    answers = {label: [(r.query, r.output) for r in run.records] for label, run in runs.items()}
    assert answers["a"] == answers["b"] == answers["c"]  # one model, greedy: same answers
    assert [r.query for r in runs["a"].records] == ["Find all Django views", "What is a closure?"]
    assert all(run.peak_rss_mb > 0 for run in runs.values())
    assert mlx_server_pids() == []


@pytest.mark.slow
def test_a_failure_in_one_configuration_stops_every_server(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    params = tiny_params(tiny_model_dir, tmp_path)

    def on_record(label: str, record: QueryRecord) -> None:
        if label == "b":
            raise RuntimeError("injected failure in b")

    with pytest.raises(RuntimeError, match="injected failure in b"):
        _measure(params, tmp_path, 2, on_record)
    assert mlx_server_pids() == []

"""The concise-draft stage: when it distils, what it writes when it does not, what final serves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from punie import paths
from punie.errors import StageError
from punie.params import Params, load_params
from punie.stages import concise_draft as stage

ROOT = Path(__file__).resolve().parents[1]


def _params(rows: int = 1200) -> Params:
    params = load_params(ROOT / "params.yaml")
    c = params.conciseness
    draft = c.draft.model_copy(update={"rows": rows})
    return params.model_copy(update={"conciseness": c.model_copy(update={"draft": draft})})


def _local_model(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


TRAINED = {"trained": True}


@pytest.mark.parametrize(
    ("rows", "retrain", "choice", "reason"),
    [
        (0, TRAINED, {"draft": "LOCAL"}, "rows is 0"),
        (1200, {"trained": False}, {"draft": "LOCAL"}, "main model stands"),
        (1200, TRAINED, {"draft": None}, "chose no draft"),
        # A hub id not in the local cache (a cached one resolves and is distilled).
        (1200, TRAINED, {"draft": "org/not-cached"}, "hf download org/not-cached"),
        # A quantized draft (mlx-community/Qwen3-0.6B-4bit) trains only through an adapter.
        (1200, TRAINED, {"draft": "QUANTIZED"}, "quantized (4-bit)"),
    ],
)
def test_skips_with_a_reason(
    rows: int, retrain: dict[str, Any], choice: dict[str, Any], reason: str, tmp_path: Path
) -> None:
    local = str(_local_model(tmp_path / "draft"))
    quantized = _local_model(tmp_path / "draft-4bit")
    (quantized / "config.json").write_text('{"quantization": {"bits": 4, "group_size": 64}}')
    models = {"LOCAL": local, "QUANTIZED": str(quantized)}
    choice = {k: models.get(v, v) if isinstance(v, str) else v for k, v in choice.items()}
    got = stage.skip_reason(_params(rows), retrain, choice)
    assert got is not None and reason in got


def test_distils_when_a_concise_model_and_a_local_draft_exist(tmp_path: Path) -> None:
    draft = str(_local_model(tmp_path / "draft"))
    assert stage.skip_reason(_params(), TRAINED, {"draft": draft}) is None


def _project(tmp: Path, monkeypatch: pytest.MonkeyPatch, retrain: dict[str, Any]) -> None:
    monkeypatch.chdir(tmp)
    (tmp / "metrics").mkdir()
    (tmp / paths.RETRAIN_METRICS).write_text(json.dumps(retrain))
    (tmp / paths.SPECULATIVE_CHOICE).write_text(
        json.dumps({"draft": "models/draft", "num_draft_tokens": 2})
    )


def test_skipped_path_writes_the_declared_output_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _project(tmp_path, monkeypatch, {"trained": False})
    _local_model(tmp_path / "models/concise_draft")  # a stale draft from an earlier run
    stage.run_concise_draft(_params(), paths.CONCISE_DRAFT)
    marker = json.loads((paths.CONCISE_DRAFT / stage.DRAFT_STANDS).read_text())
    assert marker["trained"] is False and "main model stands" in marker["reason"]
    assert not (paths.CONCISE_DRAFT / "config.json").exists()


def test_missing_retrain_metrics_say_what_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StageError, match=r"retrain\.json: not found"):
        stage.run_concise_draft(_params(), paths.CONCISE_DRAFT)

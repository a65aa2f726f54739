"""Hub ids resolved from the local Hugging Face cache (never the network), the stages' fast
checks, and the readiness wait sized from the weights on disk."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
import yaml

from punie import cli
from punie.errors import ServerError, StageError
from punie.measurement.benchmark import params_server, ready_timeout
from punie.measurement.levers import server_config
from punie.serving import hub
from punie.serving.hub import ModelNotFound, is_hub_id, resolve_model, size_text, weights_bytes
from punie.serving.preflight import check_draft_tokenizer, fast_checks, local_models
from punie.serving.runtime import mlx_env
from punie.serving.server import build_server_command
from punie.stages import speculative

from .conftest import ROOT, tiny_params
from .hf_cache import put_in_hf_cache

MAIN_ID, DRAFT_ID = "punie-test/tiny-main", "punie-test/tiny-draft"
FAIL_WITHIN_S = 10.0  # a missing model fails in seconds (measured here: well under one)


@pytest.fixture
def hf_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, tiny_draft_dir: Path
) -> Path:
    """A Hugging Face cache holding the tiny pair as hub ids; HF_HOME points at it."""
    home = tmp_path / "hf"
    put_in_hf_cache(home, MAIN_ID, tiny_model_dir)
    put_in_hf_cache(home, DRAFT_ID, tiny_draft_dir)
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    return home


@pytest.mark.parametrize(
    ("value", "hub_id"),
    [
        ("mlx-community/Qwen3-30B-A3B-5bit", True),
        ("models/main", False),  # the lab's own output, even before `models/` exists
        ("./main", False),
        ("/abs/model", False),
        ("a/b/c", False),
        ("~/model", False),
        ("bad//id", False),
    ],
)
def test_hub_ids_are_told_from_paths(value: str, hub_id: bool) -> None:
    assert is_hub_id(value) is hub_id


def test_a_local_directory_is_used_as_it_is(tiny_model_dir: Path) -> None:
    assert resolve_model(str(tiny_model_dir)) == tiny_model_dir


def test_the_embedded_model_not_built_says_to_bootstrap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ModelNotFound, match=r"models\.main: models/main does not exist.*dvc repro bootstrap"
    ):
        resolve_model("models/main", "models.main")
    with pytest.raises(ModelNotFound, match="does not exist"):
        resolve_model(str(tmp_path / "nowhere"), "models.main")


def test_a_cached_hub_id_resolves_to_its_snapshot(hf_home: Path, tiny_model_dir: Path) -> None:
    start = time.monotonic()
    path = resolve_model(MAIN_ID, "models.main")
    assert time.monotonic() - start < FAIL_WITHIN_S
    assert path.parent.parent.name == "models--punie-test--tiny-main"
    assert str(path).startswith(str(hf_home / "hub"))
    assert (path / "config.json").read_bytes() == (tiny_model_dir / "config.json").read_bytes()
    assert weights_bytes(path) == weights_bytes(tiny_model_dir) > 0  # through the symlinks


@pytest.mark.parametrize("offline", [False, True])
def test_a_missing_hub_id_fails_in_seconds_saying_how_to_get_it(
    hf_home: Path, monkeypatch: pytest.MonkeyPatch, offline: bool
) -> None:
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ModelNotFound) as e:
        resolve_model("mlx-community/Qwen3-30B-A3B-5bitt", "models.main")
    assert time.monotonic() - start < FAIL_WITHIN_S
    message = str(e.value)
    assert "models.main: mlx-community/Qwen3-30B-A3B-5bitt" in message
    assert str(hf_home / "hub") in message  # where it looked
    if offline:
        assert "`hf download mlx-community/Qwen3-30B-A3B-5bitt`" in message
        assert "HF_HUB_OFFLINE is set" in message
    else:  # no hub here: size unknown; with one, a size or "no such model"
        assert "hf download" in message or "the hub has no model" in message


def test_a_near_miss_names_the_cached_model(hf_home: Path) -> None:
    with pytest.raises(ModelNotFound, match=f"cached and close: {MAIN_ID}"):
        resolve_model("punie-test/tiny-mian", "models.main")


def test_a_partly_downloaded_model_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path
) -> None:
    home = tmp_path / "hf"
    put_in_hf_cache(home, MAIN_ID, tiny_model_dir, skip=("model.safetensors",))
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(ModelNotFound, match=rf"only partly.*hf download {MAIN_ID}"):
        resolve_model(MAIN_ID, "models.main")


def test_hf_hub_cache_wins_over_hf_home(hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_home / "elsewhere"))
    with pytest.raises(ModelNotFound, match=re.escape(str(hf_home / "elsewhere"))):
        resolve_model(MAIN_ID)


def test_mlx_children_are_not_put_offline_behind_the_users_back() -> None:
    assert "HF_HUB_OFFLINE" not in mlx_env(base={"PATH": "/usr/bin"})
    assert mlx_env(base={"HF_HUB_OFFLINE": "1"})["HF_HUB_OFFLINE"] == "1"  # theirs passes


def test_tokenizers_of_hub_ids_compare_from_the_cache(hf_home: Path) -> None:
    check_draft_tokenizer(MAIN_ID, DRAFT_ID)


def test_stages_get_local_directories_for_hub_ids(hf_home: Path, tmp_path: Path) -> None:
    params = tiny_params(Path(MAIN_ID), tmp_path)
    params = params.model_copy(
        update={"models": params.models.model_copy(update={"main": MAIN_ID, "draft": DRAFT_ID})}
    )
    main, draft = speculative.check_draft(params)
    assert Path(main) == resolve_model(MAIN_ID) and Path(draft) == resolve_model(DRAFT_ID)
    local = local_models(params, use_draft=True)
    assert (local.models.main, local.models.draft) == (main, draft)
    # The server is handed the directory: it never resolves (or downloads) anything, even
    # when a caller passes the id on.
    assert server_config(params, main, draft, 2).model_path == main
    config = server_config(params, MAIN_ID, DRAFT_ID, 2)
    server = params_server(params, config, tmp_path / "s.log")
    assert (server.config.model_path, server.config.draft_model) == (main, draft)
    assert "--model " + main in " ".join(build_server_command(server.config))


def test_a_missing_id_stops_a_stage_in_seconds_before_any_server(
    hf_home: Path, tmp_path: Path
) -> None:
    params = tiny_params(Path(MAIN_ID), tmp_path)
    params = params.model_copy(
        update={"models": params.models.model_copy(update={"main": MAIN_ID, "draft": "org/nope"})}
    )
    start = time.monotonic()
    with pytest.raises(StageError, match="hf download org/nope"):
        speculative.benchmark(params, tmp_path / "out")
    assert time.monotonic() - start < FAIL_WITHIN_S
    assert not (tmp_path / "out").exists()
    with pytest.raises(StageError, match="punie-lab doctor"):
        fast_checks(params)


def test_profile_with_a_missing_hub_id_fails_in_seconds(
    hf_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["models"] = {"main": "mlx-community/Qwen3-30B-A3B-5bit", "draft": None}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    queries = tmp_path / "q.yaml"
    queries.write_text("- query: What is a closure?\n  expect: direct\n")
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    code = cli.main(["profile", "--queries", str(queries), "--out", str(tmp_path / "out")])
    assert code == 1
    assert time.monotonic() - start < FAIL_WITHIN_S
    err = capsys.readouterr().err
    assert "hf download mlx-community/Qwen3-30B-A3B-5bit" in err
    assert str(hf_home / "hub") in err


# --- Readiness wait sized from the weights ---------------------------------------------


def _sparse_model(root: Path, gb: float) -> Path:
    """A directory whose safetensors weigh `gb` GB on paper (a sparse file: no disk used)."""
    root.mkdir(parents=True)
    with open(root / "model.safetensors", "wb") as f:
        f.truncate(int(gb * hub.GB))
    return root


def test_ready_timeout_grows_with_the_weights_on_disk(tmp_path: Path) -> None:
    params = tiny_params(tmp_path, tmp_path)
    s = params.server
    main, draft = _sparse_model(tmp_path / "m", 20.0), _sparse_model(tmp_path / "d", 0.5)
    timeout, note = ready_timeout(params, server_config(params, str(main), str(draft), 2))
    assert timeout == pytest.approx(s.ready_timeout_s + 20.5 * s.ready_timeout_per_gb_s)
    assert timeout >= 180 + 20.5 * 20  # the committed knobs: minutes for a 20 GB pair
    assert "20.50 GB" in note and "server.ready_timeout_per_gb_s" in note
    alone, _ = ready_timeout(params, server_config(params, str(main)))
    assert alone == pytest.approx(s.ready_timeout_s + 20.0 * s.ready_timeout_per_gb_s)
    tiny, _ = ready_timeout(params, server_config(params, "org/not-a-directory"))
    assert tiny == s.ready_timeout_s  # nothing on disk to size it from: the floor


def test_a_server_not_ready_in_time_names_the_size_and_the_knob(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    params = tiny_params(tiny_model_dir, tmp_path)
    params = params.model_copy(
        update={
            "server": params.server.model_copy(
                update={"ready_timeout_s": 0.3, "ready_timeout_per_gb_s": 0.0}
            )
        }
    )
    server = params_server(params, server_config(params, str(tiny_model_dir)), tmp_path / "s.log")
    with pytest.raises(ServerError) as e:
        asyncio.run(server.start())
    assert "not ready after" in str(e.value)
    assert "GB of weights on disk" in str(e.value)
    assert "server.ready_timeout_per_gb_s" in str(e.value)
    assert not server.is_alive()


def test_every_server_a_stage_starts_is_sized_by_params_server() -> None:
    """Only `params_server` constructs a ServerProcess in the stages and their helpers."""
    src = ROOT / "src" / "punie"
    found = [
        f"{p.relative_to(src)}"
        for p in sorted(src.rglob("*.py"))
        if "ServerProcess(" in p.read_text()
        and p.parent.name in {"stages", "commands", "measurement"}
    ]
    assert found == ["measurement/benchmark.py"]
    assert (src / "measurement/benchmark.py").read_text().count("ServerProcess(") == 1


def test_sizes_read_in_gb_and_a_test_model_in_mb() -> None:
    assert size_text(21.1e9) == "21.10 GB"
    assert size_text(0.34e9) == "0.34 GB"
    assert size_text(3.7e6) == "3.7 MB"

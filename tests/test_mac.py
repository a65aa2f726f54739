"""The Mac path is one command (`nox -s mac`), and CI runs exactly it on the real-shape pair.

The README's Mac section tells the user to run `nox -s mac` (Qwen3-30B-A3B-5bit with
Qwen3-0.6B-4bit); .ci/run runs `nox ... -s mac -- <main> <draft>` with the real-shape ids
(punie.models.real_shape), so what CI proves is what the user runs, the model ids aside.
The overrides themselves (noxfile.MAC_OVERRIDES) must apply to params.yaml as DVC applies
them and give valid params.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import shutil
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from punie.models.real_shape import DRAFT_ID, MAIN_ID
from punie.params import parse_params

ROOT = Path(__file__).resolve().parents[1]
MAC_SECTION = "## Running it on a Mac with real models"


@functools.cache
def _noxfile() -> ModuleType:
    """noxfile.py, loaded once (nox registers its sessions at import)."""
    pytest.importorskip("nox")
    spec = importlib.util.spec_from_file_location("punie_noxfile", ROOT / "noxfile.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mac_section() -> str:
    text = (ROOT / "README.md").read_text()
    assert MAC_SECTION in text, f"README.md has no {MAC_SECTION!r} section"
    section = text.split(MAC_SECTION, 1)[1]
    return section.split("\n## ", 1)[0]


def test_the_readme_mac_section_runs_nox_mac() -> None:
    lines = [line.strip() for line in _mac_section().splitlines()]
    assert "nox -s mac" in lines, "the README's Mac section must have the line `nox -s mac`"
    # No second, hand-written copy of the overrides that could drift from what CI runs.
    assert not any(line.startswith("dvc exp run") for line in lines)


def test_ci_runs_the_same_session_on_the_real_shape_pair() -> None:
    ci = (ROOT / ".ci/run").read_text()
    runs = re.findall(r"nox\b[^\n]*-s mac -- ([\w./-]+) ([\w./-]+)", ci)
    assert runs == [(MAIN_ID, DRAFT_ID)], runs
    assert "HF_HOME=" in ci and "real-shape-hf" in ci


def test_the_default_pair_is_the_users() -> None:
    assert _noxfile().MAC_MODELS == (
        "mlx-community/Qwen3-30B-A3B-5bit",
        "mlx-community/Qwen3-0.6B-4bit",
    )


def test_the_overrides_apply_as_dvc_applies_them(tmp_path: Path) -> None:
    """Every `-S` of the command, applied to params.yaml by DVC's own code, gives valid params
    (`-S 'server.chat_template_args={enable_thinking: false}'` did not: DVC refuses to add a
    key to the empty mapping)."""
    from dvc.utils.hydra import apply_overrides

    nox = _noxfile()
    cmd = nox.mac_command("org/main-model", "org/draft-model")
    assert cmd[:3] == ["dvc", "exp", "run"]
    sets = cmd[4::2]
    assert cmd[3::2] == ["-S"] * len(sets)
    params_file = tmp_path / "params.yaml"
    shutil.copyfile(ROOT / "params.yaml", params_file)
    apply_overrides(str(params_file), sets)
    params = parse_params(yaml.safe_load(params_file.read_text()), params_file)
    assert params.models.main == "org/main-model"
    assert params.models.draft == "org/draft-model"
    assert params.server.chat_template_args == {"enable_thinking": False}
    assert params.speculative.interleave is False
    assert params.final.interleave is False
    assert params.conciseness.parallel_servers == 1
    assert params.conciseness.force is True
    assert params.queries.per_set == 6
    assert params.speculative.acceptance_prompts == 16
    assert params.bootstrap.corpus.train >= params.conciseness.draft.rows


def test_the_doctor_checks_the_overridden_params(monkeypatch: pytest.MonkeyPatch) -> None:
    """`nox -s mac` runs `punie-lab doctor` with the same `-S` overrides first. Without them,
    params.yaml keeps two servers up at once and a 30B pair (~21 GB of 5-bit weights) fails
    the doctor's memory check on a 32 GB Mac before the experiment starts."""
    from punie.commands.doctor import overridden_params
    from punie.serving.preflight import memory

    monkeypatch.chdir(ROOT)
    main_bytes, draft_bytes = 21_000_000_000, 340_000_000
    sets = _noxfile().mac_sets(*_noxfile().MAC_MODELS)
    params = overridden_params(sets[1::2])
    assert params.models.main == "mlx-community/Qwen3-30B-A3B-5bit"
    assert memory(params, main_bytes, draft_bytes).ok
    assert not memory(overridden_params([]), main_bytes, draft_bytes).ok

"""dvc.yaml itself: a code change that can move a stage's figures must re-run that stage."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
# Built by a stage, so absent from a fresh clone: such a dep need not exist, only be declared.
OUTPUTS = {
    str(out if isinstance(out, str) else next(iter(out)))
    for stage in STAGES.values()
    for key in ("outs", "metrics", "plots")
    for out in stage.get(key, [])
}

# Every query record is shaped by these: the agent and its tools, the timing wrappers, the
# record and its grounding check, and how the server is started (flags, prompt cache, env).
RECORD_CODE = (
    "src/punie/agent.py",
    "src/punie/tools.py",
    "src/punie/measure.py",
    "src/punie/records.py",
    "src/punie/grounding.py",
    "src/punie/memory.py",
    "src/punie/training/server.py",
    "src/punie/training/server_config.py",
)


@pytest.mark.parametrize("stage", ["profile", "speculative", "retrain", "final"])
def test_stages_that_run_the_agent_depend_on_the_code_of_their_records(stage: str) -> None:
    missing = [path for path in RECORD_CODE if path not in STAGES[stage]["deps"]]
    assert not missing, f"dvc.yaml stage {stage} lacks deps {missing}"


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_stage_depends_on_its_own_module_and_every_listed_file_exists(stage: str) -> None:
    deps = STAGES[stage]["deps"]
    command = STAGES[stage]["cmd"].split()[1].replace("-", "_")
    own = {"gate": "concise", "concise_data": "concise"}.get(command, command)
    assert f"src/punie/stages/{own}.py" in deps
    assert [d for d in deps if d not in OUTPUTS and not (ROOT / d).exists()] == []

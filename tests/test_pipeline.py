"""dvc.yaml itself: a stage's code deps are exactly the modules its command runs.

A stage runs `punie-lab <name>`: the CLI, the stage's module and everything they import,
plus the modules started as `python -m punie....` (named by a string in the code). If
dvc.yaml missed one, `dvc repro` would call the stage up to date after its code changed; if
it listed an extra one, an unrelated edit would re-run the stage.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from punie.cli import STAGES as COMMANDS

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
# Built by a stage, so absent from a fresh clone: such a dep need not exist, only be declared.
OUTPUTS = {
    str(out if isinstance(out, str) else next(iter(out)))
    for stage in STAGES.values()
    for key in ("outs", "metrics", "plots")
    for out in stage.get(key, [])
}
MODULE_NAME = re.compile(r"^punie(\.[a-z_0-9]+)+$")
# Files a module reads at run time, which are code too: a stage that runs the module depends
# on them (the server patches are diffs applied to mlx_lm.server; the corpus's request
# families are a table).
MODULE_DATA = {
    "src/punie/serving/patching.py": "src/punie/serving/patches",
    "src/punie/models/corpus_text.py": "src/punie/models/families.yaml",
}


def module_file(name: str) -> Path | None:
    """The source file of module `name` under src/ (None for a name that is not a module,
    such as `punie.errors.LabError`)."""
    base = SRC.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def parents(name: str) -> list[str]:
    """`punie.a.b` -> [`punie`, `punie.a`]: importing a module runs its packages' __init__."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@cache
def direct_imports(name: str, follow_strings: bool) -> frozenset[str]:
    """punie modules `name` imports (anywhere in its code, lazily or not), and with
    `follow_strings` the ones it names in a string (`python -m punie.x`, `module="punie.x"`)."""
    path = module_file(name)
    assert path is not None, name
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            # `from punie.agent import tools` imports the submodule punie.agent.tools
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif (
            follow_strings
            and isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and MODULE_NAME.match(node.value)
        ):
            found.add(node.value)
    return frozenset(m for m in found if m.startswith("punie") and module_file(m) is not None)


def closure(roots: list[str], follow_strings: bool = True) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += parents(name)
        todo += direct_imports(name, follow_strings)
    return seen


def code_of(stage: str) -> set[str]:
    """Repository paths of the source files `punie-lab <command>` of `stage` runs."""
    command = STAGES[stage]["cmd"].split()
    assert command[0] == "punie-lab", f"{stage}: command must be `punie-lab ...`"
    stage_module = COMMANDS[command[1]][0]
    # The CLI names every stage module in a string table; only its real imports count.
    modules = closure(["punie.cli"], follow_strings=False) | closure([stage_module])
    files = {module_file(m) for m in modules}
    code = {str(f.relative_to(ROOT)) for f in files if f is not None}
    return code | {MODULE_DATA[f] for f in code if f in MODULE_DATA}


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_module_a_stage_runs_is_a_dep(stage: str) -> None:
    deps = STAGES[stage]["deps"]
    missing = sorted(p for p in code_of(stage) if not covered(p, deps))
    assert not missing, f"dvc.yaml stage {stage} lacks deps {missing}"


@pytest.mark.parametrize("stage", list(STAGES))
def test_no_stage_depends_on_code_it_does_not_run(stage: str) -> None:
    code = code_of(stage)
    extra = [
        d
        for d in STAGES[stage]["deps"]
        if d.startswith("src/") and not any(covered(p, [d]) for p in code)
    ]
    assert not extra, f"dvc.yaml stage {stage} depends on code it never runs: {extra}"


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_listed_dep_exists_or_is_built_by_a_stage(stage: str) -> None:
    deps = STAGES[stage]["deps"]
    assert [d for d in deps if d not in OUTPUTS and not (ROOT / d).exists()] == []


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_declared_param_is_in_params_yaml(stage: str) -> None:
    """`dvc repro` refuses a stage whose `params` name a key params.yaml lacks ("Parameters
    'speculative.draft_prompt_cache_size' are missing"): the final stage never ran."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())

    def present(key: str) -> bool:
        node = params
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    keys = [k for k in STAGES[stage].get("params", []) if isinstance(k, str)]
    assert [k for k in keys if not present(k)] == []


def test_the_closure_follows_lazy_imports_and_modules_run_as_scripts() -> None:
    """The test itself: a stage that imports inside a function and starts a probe with
    `python -m` still has both in its code."""
    code = code_of("speculative")
    assert "src/punie/measurement/spec_probe.py" in code  # run as `python -m`
    assert "src/punie/serving/server.py" in code
    assert "src/punie/agent/__init__.py" in code  # a package's __init__ runs on import
    assert "src/punie/stages/final.py" not in code

"""Sharing through DVC instead of rebuilding: two clones of the committed project, a bare Git
remote and a directory DVC remote. Clone A runs a real stage, `dvc push`es its output and
`dvc exp push`es an experiment; clone B gets both with `dvc pull` / `dvc exp pull`.

Clone B runs with `punie-lab` off its PATH, so it cannot have run a stage: whatever it has,
it pulled.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: dvc and punie-lab
EXPERIMENT = "fewer-tool-examples"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Git and DVC state kept inside tmp_path: no global config, site cache or analytics."""
    home = tmp_path / "home"
    home.mkdir()
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site-cache"),
        "DVC_NO_ANALYTICS": "1",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
    }


def run(cwd: Path, *args: str, env: dict[str, str]) -> str:
    """Run a command in `cwd`; its stdout, or a failure that shows stdout and stderr.

    A clone runs its own committed code: the venv's editable install points at the working
    tree, which may hold uncommitted changes, so `src` of the clone goes first on the path."""
    command = [str(BIN / "dvc"), *args[1:]] if args[0] == "dvc" else list(args)
    done = subprocess.run(
        command,
        cwd=cwd,
        env={**env, "PYTHONPATH": str(cwd / "src")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, (
        f"`{' '.join(args)}` in {cwd} exited {done.returncode}\n"
        f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    )
    return done.stdout


def clone(origin: Path, dest: Path, env: dict[str, str]) -> Path:
    run(origin.parent, "git", "clone", "--quiet", str(origin), str(dest), env=env)
    run(dest, "git", "config", "user.email", "lab@example.com", env=env)
    run(dest, "git", "config", "user.name", "Punie lab test", env=env)
    return dest


def tree_bytes(directory: Path) -> dict[str, bytes]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def cached_tree(repo: Path, dir_md5: str) -> dict[str, bytes]:
    """A directory output as it sits in `repo`'s DVC cache (its `.dir` manifest, then files)."""

    def blob(md5: str) -> bytes:
        return (repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).read_bytes()

    return {entry["relpath"]: blob(entry["md5"]) for entry in json.loads(blob(dir_md5))}


def concise_data_md5(lock_text: str) -> str:
    (out,) = yaml.safe_load(lock_text)["stages"]["concise_data"]["outs"]
    assert out["path"] == "data/concise"
    return out["md5"]


@pytest.mark.slow
def test_a_second_clone_pulls_outputs_and_experiments_instead_of_rebuilding(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # B: the venv's bin off PATH (dvc is called by its full path), so no stage can run there.
    path_b = [p for p in env["PATH"].split(os.pathsep) if p and Path(p).resolve() != BIN.resolve()]
    env_b = {**env, "PATH": os.pathsep.join(path_b)}
    assert shutil.which("punie-lab", path=env_b["PATH"]) is None
    origin = tmp_path / "origin.git"
    store = tmp_path / "dvc-store"
    # Only what is committed: uncommitted changes in the working tree stay out.
    run(tmp_path, "git", "clone", "--quiet", "--bare", str(ROOT), str(origin), env=env)

    # --- clone A: the team's remote, committed in .dvc/config; one real stage, pushed.
    a = clone(origin, tmp_path / "a", env)
    run(a, "dvc", "remote", "add", "--default", "shared", str(store), env=env)
    # Not `dvc repro concise_data`: in a fresh clone models/ is not in the cache, so DVC would
    # rebuild bootstrap and profile upstream (gate depends on profile's metrics/profile.json).
    # --single-item checks and runs only the named stages; gate's output is committed (gate
    # reruns from the committed profile metrics when a code change left dvc.lock behind).
    ran = run(a, "dvc", "repro", "--single-item", "gate", "concise_data", env=env)
    assert "Running stage 'concise_data'" in ran
    run(a, "dvc", "push", "concise_data", env=env)
    run(a, "git", "add", ".dvc/config", "dvc.lock", env=env)
    run(a, "git", "commit", "--quiet", "-m", "dvc remote: shared", env=env)
    run(a, "git", "push", "--quiet", "origin", "HEAD", env=env)

    # --- clone B: a fresh clone, no cache; `dvc pull` gets A's output byte for byte.
    b = clone(origin, tmp_path / "b", env_b)
    assert not (b / "data/concise").exists()
    run(b, "dvc", "pull", "concise_data", env=env_b)
    assert tree_bytes(b / "data/concise") == tree_bytes(a / "data/concise")
    assert "up to date" in run(b, "dvc", "status", "concise_data", env=env_b)
    assert run(b, "git", "status", "--porcelain", env=env_b) == ""  # dvc.lock untouched

    # --- experiments: run in A, `dvc exp push`; in B, `dvc exp pull` shows it and its data.
    run(
        a, "dvc", "exp", "run", "--single-item", "concise_data",
        "-S", "conciseness.tool_examples=5", "-n", EXPERIMENT, env=env,
    )  # fmt: skip
    run(a, "dvc", "exp", "push", "origin", EXPERIMENT, env=env)  # git refs and DVC cache
    run(b, "dvc", "exp", "pull", "origin", EXPERIMENT, env=env_b)

    shown = json.loads(run(b, "dvc", "exp", "show", "--json", env=env_b))
    experiments = {e["name"]: e for row in shown for e in row.get("experiments") or []}
    assert EXPERIMENT in experiments, f"dvc exp show in B lists {sorted(experiments)}"
    (rev,) = experiments[EXPERIMENT]["revs"]
    assert rev["data"]["params"]["params.yaml"]["data"]["conciseness"]["tool_examples"] == 5
    # The experiment's output came along into B's cache: the bytes A's experiment wrote.
    exp_md5 = concise_data_md5(run(b, "git", "show", f"{rev['rev']}:dvc.lock", env=env_b))
    assert exp_md5 != concise_data_md5((b / "dvc.lock").read_text())
    assert cached_tree(b, exp_md5) == tree_bytes(a / "data/concise")

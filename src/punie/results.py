"""Atomic writes of JSON, plot rows and reports: an interrupted stage never half-writes."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Generator, Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from punie.errors import StageError


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temp file in the same directory, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(*paths: Path) -> None:
    """Fail before any work if an output cannot be written, not after a long run: each
    file's directory is created and a probe file written there (as root, permission bits
    say nothing, so only a real write tells)."""
    for path in paths:
        parent = Path(path).parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=parent, prefix=".write-probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise OSError(f"{path}: cannot write this output ({e.strerror or e})") from None


@contextmanager
def atomic_dir(path: Path) -> Generator[Path]:
    """Build a directory output (a model) in a fresh sibling temp directory; on success it
    replaces `path`, on any failure or Ctrl-C it is deleted and `path` is left as it was.

    The swap is two renames, so `path` is missing for an instant but never half-written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    tmp.chmod(0o755)  # mkdtemp makes it private; a model directory is not
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = tmp.with_name(f"{tmp.name}.old")
    if path.exists() or path.is_symlink():
        os.replace(path, old)
    os.replace(tmp, path)
    if old.exists() or old.is_symlink():
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


def write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def read_yaml(path: Path, error: type[Exception], hint: str = "") -> Any:
    """`path` parsed as YAML; a missing or malformed file raises `error` naming the path."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise error(f"{path}: file not found{hint}") from None
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML: {e}") from None


def read_object(path: Path) -> dict[str, Any]:
    """A JSON object another stage wrote, or a StageError that says what is wrong."""

    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise StageError(f"{path}: not found (run the stage that writes it first)") from None
    except ValueError as e:
        raise StageError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise StageError(f"{path}: expected a JSON object")
    return data


def write_rows(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Plot data for `dvc plots show`: a JSON list of flat rows."""
    write_json(path, [dict(r) for r in rows])


def round_floats(data: Mapping[str, Any], digits: int = 4) -> dict[str, Any]:
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in data.items()}

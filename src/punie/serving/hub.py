"""A `models.*` value (a local directory or a Hugging Face hub id) -> a local model directory.

- A local path is used as it is; a missing one fails at once, and the lab's own
  `models/main`/`models/draft` say to build them (`dvc repro bootstrap`).
- A hub id (`org/name`) is looked up in the local Hugging Face cache only
  (`snapshot_download(id, local_files_only=True)`, with the cache directory HF_HUB_CACHE /
  HF_HOME name at call time). One that is not there, or only partly, fails in seconds with
  the id, the cache directory looked in and the command that gets it (`hf download <id>`),
  with its size when the hub answers within `SIZE_LOOKUP_S` (never under HF_HUB_OFFLINE).

Nothing here downloads. The stages resolve each model once, before any server starts, and
pass the **resolved local directory** to everything that loads it (`mlx_lm server --model`
and `--draft-model`, the in-process probes, the direct floor, LoRA and fuse, tokenizer
checks), while records and reports keep the id the user wrote. Why not hand the id on:

- a server given an id that is not cached downloads it inside its start-up, where the
  download eats the readiness timeout and shows only in the server log; a 20 GB download
  would be killed as a "server not ready" after minutes, or succeed silently after half an
  hour. Downloading is the user's explicit step (`hf download`), with its own progress bar;
- the server, the in-process probes and the tokenizer checks then read the same snapshot,
  even if the hub's `main` moves during a run (each `mlx_lm.load(id)` would re-resolve it);
- a cached id costs no network round trip, so nothing needs HF_HUB_OFFLINE set behind the
  user's back (the lab used to set it for every mlx child, which made hub ids unusable).
"""

from __future__ import annotations

import difflib
import json
import os
import threading
from pathlib import Path
from typing import Any

from punie import paths
from punie.errors import LabError

# What mlx-lm itself fetches for a model (mlx_lm.utils.DEFAULT_ALLOW_PATTERNS): a snapshot
# holding these is complete for serving, whatever else (README, .gitattributes) it lacks.
ALLOW_PATTERNS = [
    "*.json",
    "model*.safetensors",
    "*.py",
    "tokenizer.model",
    "*.tiktoken",
    "tiktoken.model",
    "*.txt",
    "*.jsonl",
    "*.jinja",
]
SIZE_LOOKUP_S = 3.0  # longest wait for the hub to say how big a missing model is
GB = 1e9

# The lab's own model outputs (DVC outputs, never committed) and the stage that builds them.
_BUILT_BY = {
    paths.MAIN_MODEL: "dvc repro bootstrap",
    paths.DRAFT_MODEL: "dvc repro bootstrap",
    paths.CONCISE_MODEL: "dvc repro retrain",
    paths.CONCISE_DRAFT: "dvc repro concise_draft",
}


class ModelNotFound(LabError, FileNotFoundError):
    """A configured model is not on this machine; the message says how to get it."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set by the user, read now."""
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(
        os.environ.get("TRANSFORMERS_OFFLINE")
    )


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, from the environment as it is now (huggingface_hub reads
    it once at import): HF_HUB_CACHE, else HF_HOME/hub, else XDG_CACHE_HOME/huggingface/hub."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface"
    )
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def is_hub_id(value: str) -> bool:
    """True when `value` names a hub model rather than a local directory: it does not exist
    here, is not path-like (absolute, ./, ~, more than one slash, under the lab's `models/`
    or another existing directory) and is a valid repo id."""
    path = Path(value).expanduser()
    if path.exists() or path.is_absolute() or value.startswith((".", "~")) or value.endswith("/"):
        return False
    parts = Path(value).parts
    if len(parts) > 2 or parts[0] == paths.MAIN_MODEL.parts[0] or Path(parts[0]).is_dir():
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


def resolve_model(value: str, key: str = "model") -> Path:
    """The local directory of `value` (see the module docstring); ModelNotFound otherwise.
    `key` names the setting in errors, e.g. `models.main`."""
    if not is_hub_id(value):
        return _local(value, key)
    return _cached(value, key)


def _local(value: str, key: str) -> Path:
    path = Path(value).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelNotFound(f"{key}: {value} is a file, not a model directory")
    built_by = next(
        (cmd for out, cmd in _BUILT_BY.items() if path.absolute() == out.absolute()), None
    )
    if built_by:
        raise ModelNotFound(
            f"{key}: {value} does not exist: the lab builds it, run `{built_by}` "
            f"(or point {key} at a model directory or a hub id such as "
            "mlx-community/Qwen3-30B-A3B-5bit)"
        )
    raise ModelNotFound(
        f"{key}: {value} does not exist (not a local directory; a hub id looks like org/name)"
    )


def _cached(repo_id: str, key: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import IncompleteSnapshotError

    cache = hub_cache_dir()
    try:
        folder = Path(
            snapshot_download(
                repo_id, cache_dir=cache, local_files_only=True, allow_patterns=ALLOW_PATTERNS
            )
        )
    except IncompleteSnapshotError:
        raise ModelNotFound(_partial(repo_id, key, cache, "files are missing")) from None
    except Exception:  # LocalEntryNotFoundError and kin: not in this cache
        raise ModelNotFound(missing_message(repo_id, key, cache)) from None
    problem = incomplete(folder)
    if problem:
        raise ModelNotFound(_partial(repo_id, key, cache, problem))
    return folder


def incomplete(folder: Path) -> str | None:
    """What a model directory lacks to load (config, a weight shard), or None."""
    if not (folder / "config.json").is_file():
        return "no config.json"
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError):
            return f"unreadable {index.name}"
        missing = sorted(s for s in shards if not (folder / s).is_file())
        return f"weight shards missing: {', '.join(missing[:3])}" if missing else None
    if not any(folder.glob("*.safetensors")):
        return "no .safetensors weights"
    return None


def _partial(repo_id: str, key: str, cache: Path, problem: str) -> str:
    return (
        f"{key}: {repo_id} is only partly in the Hugging Face cache ({cache}): {problem}; "
        f"finish the download with `hf download {repo_id}`"
    )


def missing_message(repo_id: str, key: str, cache: Path) -> str:
    """Not in the cache: the id, where we looked, how to get it (and its size if known)."""
    size = hub_size(repo_id)
    if size == "no such model":
        get = (
            f"the hub has no model {repo_id} either: check the spelling "
            f"(e.g. mlx-community/Qwen3-30B-A3B-5bit)"
        )
    else:
        get = f"get it with `hf download {repo_id}` ({size}) and run again"
    near = difflib.get_close_matches(repo_id, cached_ids(cache), n=1, cutoff=0.8)
    hint = f"; cached and close: {near[0]}" if near else ""
    what = "is not" if "/" in repo_id else "is neither a local directory nor"
    return (
        f"{key}: {repo_id} {what} in the local Hugging Face cache ({cache}, from "
        f"HF_HUB_CACHE / HF_HOME); {get}{hint}"
    )


def cached_ids(cache: Path | None = None) -> list[str]:
    """Hub ids of the models in the cache (`models--org--name` folders)."""
    root = cache or hub_cache_dir()
    try:
        names = [p.name for p in root.iterdir() if p.name.startswith("models--")]
    except OSError:
        return []
    return sorted(n.removeprefix("models--").replace("--", "/") for n in names)


def hub_size(repo_id: str, timeout_s: float = SIZE_LOOKUP_S) -> str:
    """How big `repo_id` is on the hub ("21.1 GB"), "no such model", or why it is unknown.
    Gives up after `timeout_s` (a hanging DNS lookup included); not asked under
    HF_HUB_OFFLINE."""
    if offline():
        return "size not looked up: HF_HUB_OFFLINE is set"
    result: dict[str, Any] = {}

    def ask() -> None:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import RepositoryNotFoundError

        try:
            info = HfApi().model_info(repo_id, files_metadata=True, timeout=timeout_s)
            result["bytes"] = sum(s.size or 0 for s in info.siblings or [])
        except RepositoryNotFoundError:
            result["none"] = True
        except Exception as e:  # no network, hub down, gated: the size stays unknown
            result["error"] = type(e).__name__

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if "none" in result:
        return "no such model"
    if result.get("bytes"):
        return size_text(result["bytes"])
    return f"size unknown: the hub did not answer ({result.get('error', 'timed out')})"


def size_text(n_bytes: float) -> str:
    """`21.10 GB`, or `3.7 MB` below a tenth of a GB (a test model is not `0.00 GB`)."""
    return f"{n_bytes / GB:.2f} GB" if n_bytes >= GB / 10 else f"{n_bytes / 1e6:.1f} MB"


def weights_bytes(model: str | Path | None) -> int:
    """Bytes of the `*.safetensors` weights of a local model directory (through the HF
    cache's symlinks); 0 for None or anything that is not a local directory."""
    if model is None:
        return 0
    path = Path(model).expanduser()
    if not path.is_dir():
        return 0
    return sum(f.stat().st_size for f in path.glob("*.safetensors") if f.is_file())

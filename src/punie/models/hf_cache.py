"""The Hugging Face cache layout of the real-shape pair (punie.models.real_shape): blobs, a
snapshot of symlinks and `refs/main` under `$HF_HOME/hub`, as huggingface_hub makes them, so a
hub id resolves from the cache like a downloaded model."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from punie.models.qwen3_package import RealShapeError

# --- the Hugging Face cache layout ---------------------------------------------------------

LFS_MIN_BYTES = 10 * 1024 * 1024  # the Hub stores these (and every *.safetensors) with LFS


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _blob_id(path: Path) -> str:
    """The blob name huggingface_hub gives a file: the sha256 of an LFS file, else the git
    blob sha1 (its etag)."""
    size = path.stat().st_size
    if path.suffix == ".safetensors" or size >= LFS_MIN_BYTES:
        return _sha256(path)
    h = hashlib.sha1(f"blob {size}\0".encode())
    h.update(path.read_bytes())
    return h.hexdigest()


def repo_dir(hf_home: Path, repo_id: str) -> Path:
    return Path(hf_home) / "hub" / ("models--" + repo_id.replace("/", "--"))


def install_snapshot(hf_home: Path, repo_id: str, src: Path) -> str:
    """Lay the files of `src` out as `repo_id` in `$HF_HOME/hub` and return the commit hash.

    Blobs are written first (content-addressed, each by rename), then the snapshot of
    symlinks under a temporary name renamed into place, then `refs/main`: the id resolves
    only once everything it points to is complete. Older snapshots and their blobs go after.
    """
    repo = repo_dir(hf_home, repo_id)
    files = sorted(p for p in Path(src).iterdir() if p.is_file())
    blobs = {p.name: _blob_id(p) for p in files}
    listing = "".join(f"{name} {blob}\n" for name, blob in sorted(blobs.items()))
    commit = hashlib.sha1(listing.encode()).hexdigest()
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "snapshots").mkdir(exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    for p in files:
        blob = repo / "blobs" / blobs[p.name]
        if not blob.exists():
            tmp = blob.with_name(f".{blob.name}.incomplete")
            shutil.copyfile(p, tmp)
            os.replace(tmp, blob)
    snapshot = repo / "snapshots" / commit
    if not snapshot.exists():
        tmp_snap = Path(tempfile.mkdtemp(dir=repo / "snapshots", prefix=f".{commit}."))
        for name, blob in blobs.items():
            (tmp_snap / name).symlink_to(Path("..", "..", "blobs", blob))
        tmp_snap.chmod(0o755)
        os.replace(tmp_snap, snapshot)
    ref = repo / "refs" / "main"
    tmp_ref = ref.with_name(".main.tmp")
    tmp_ref.write_text(commit)
    os.replace(tmp_ref, ref)
    # Garbage: other snapshots (and their blobs), leftovers of interrupted installs.
    for old in (repo / "snapshots").iterdir():
        if old.name != commit:
            shutil.rmtree(old, ignore_errors=True)
    for blob in (repo / "blobs").iterdir():
        if blob.name not in blobs.values():
            blob.unlink(missing_ok=True)
    return commit


def resolve(repo_id: str, hf_home: Path) -> Path:
    """The snapshot directory `repo_id` resolves to in `$HF_HOME/hub`, without any network
    call (huggingface_hub's own lookup, as mlx-lm does it offline)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(
            snapshot_download(repo_id, cache_dir=str(Path(hf_home) / "hub"), local_files_only=True)
        )
    except (LocalEntryNotFoundError, OSError) as e:
        raise RealShapeError(f"{repo_id} is not in {hf_home}/hub: {e}") from None


def snapshot_complete(hf_home: Path, repo_id: str, commit: str | None, files: list[str]) -> bool:
    """`refs/main` names `commit` and its snapshot holds every file (links resolving): what
    huggingface_hub checks offline, without importing it (a second, for an up-to-date run)."""
    repo = repo_dir(hf_home, repo_id)
    try:
        if not commit or (repo / "refs" / "main").read_text().strip() != commit:
            return False
    except OSError:
        return False
    snapshot = repo / "snapshots" / commit
    return bool(files) and all((snapshot / name).is_file() for name in files)

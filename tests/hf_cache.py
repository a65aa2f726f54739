"""Lay a model directory out as a hub id in a Hugging Face cache, as `hf download` does:
`models--org--name/{refs/main, snapshots/<commit>/<file> -> ../../blobs/<hash>}`."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def put_in_hf_cache(
    hf_home: Path, repo_id: str, model_dir: Path, skip: tuple[str, ...] = ()
) -> Path:
    """Copy `model_dir`'s files (but `skip`) into `hf_home`/hub as `repo_id`; the snapshot."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for f in sorted(model_dir.iterdir()):
        if not f.is_file() or f.name in skip:
            continue
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / f.name
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, snapshot))
    return snapshot

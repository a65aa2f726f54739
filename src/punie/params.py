"""params.yaml -> typed, validated objects. Errors name the bad key, e.g. `speculative.repeats`.

params.yaml is the one home of every value: no field here has a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
)

from punie import paths
from punie.errors import ParamsError
from punie.results import read_yaml

Share = Annotated[float, Field(ge=0.0, le=1.0)]

# What the final stage can add to the seed's configuration (punie.measurement.levers).
LEVERS = ("thinking_off", "loop_guard", "server_path", "speculative", "concise")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Runtime(_Section):
    blas: Literal["auto", "off"]
    seed: int


class Models(_Section):
    main: str = Field(min_length=1)
    draft: str | None = Field(min_length=1)


class Server(_Section):
    host: str
    temp: float = Field(ge=0.0)
    max_tokens: PositiveInt
    prompt_cache_size: PositiveInt
    ready_timeout_s: PositiveFloat  # floor of the readiness wait
    ready_timeout_per_gb_s: float = Field(ge=0)  # added per GB of the server's weights
    request_timeout_s: PositiveFloat
    chat_template_args: dict[str, Any]


class AgentParams(_Section):
    workspace: str
    loop_guard_words: int = Field(ge=2)
    tool_timeout_s: PositiveFloat
    tool_output_cap: int = Field(ge=100)


# The query sets of `queries` (the section's other keys are settings), in report order.
QUERY_SETS = ("seed", "heldout", "wording")


class Queries(_Section):
    seed: str
    heldout: str
    wording: str
    # At most this many queries of each set, evenly spread through the file (None: all): a
    # 30B model on a Mac pays seconds per query, in every configuration of every stage.
    per_set: PositiveInt | None


class CorpusSizes(_Section):
    train: PositiveInt
    valid: PositiveInt
    test: PositiveInt
    # Share of tool queries whose second-turn answer is trained too. Those rows carry the
    # tool output and are the longest; the first-turn decision is what accuracy rests on.
    answer_share: Share
    # Share of conceptual questions about a made-up term, so that "What is <term>?" is
    # answered directly for terms never seen in training (the held-out topics are unseen).
    nonce_share: Share
    # Second-turn answers are trained only where the tool output is at most this many
    # characters (0: any length); the longest rows cost the most training time per row.
    answer_max_chars: int = Field(ge=0)
    tool_share: Share  # share of queries that call a tool
    processes: PositiveInt  # worker processes rendering the corpus at once
    # "definitions": each topic's own sentence; "generic": one plain sentence per kind of
    # question, which a small model can learn word for word.
    direct_answers: Literal["definitions", "generic"]


class TokenizerParams(_Section):
    vocab_size: int = Field(ge=300)
    # True: merges stay inside words, so a word is the same tokens wherever it appears;
    # False: merges cross spaces (repeated phrases become single tokens).
    split_words: bool
    # The agent's fixed system turn (instructions and tool schemas) as a single token.
    system_token: bool
    # Each tool's call opening (`<tool_call>` up to its first argument's value) as one token.
    call_tokens: bool


class ModelShape(_Section):
    hidden_size: int = Field(ge=8)
    num_hidden_layers: PositiveInt
    num_attention_heads: PositiveInt
    num_key_value_heads: PositiveInt
    intermediate_size: int = Field(ge=8)
    iters: PositiveInt
    batch_size: PositiveInt
    learning_rate: PositiveFloat
    max_seq_length: int = Field(ge=16)
    val_batches: int = Field(ge=-1)  # -1: the whole valid split
    blas_threads: PositiveInt  # OpenBLAS threads of this model's trainer

    @field_validator("val_batches")
    @classmethod
    def _some_batches(cls, v: int) -> int:
        if v == 0:
            raise ValueError("must be -1 (the whole valid split) or at least 1")
        return v


class Distill(_Section):
    """Fine-tune the draft on the main model's greedy answers (0 rows: no distillation)."""

    rows: int = Field(ge=0)  # train prompts answered by the main model
    valid_rows: PositiveInt
    max_tokens: PositiveInt
    iters: PositiveInt
    learning_rate: PositiveFloat
    processes: PositiveInt  # teacher processes answering at once


class Bootstrap(_Section):
    corpus: CorpusSizes
    tokenizer: TokenizerParams
    main: ModelShape
    draft: ModelShape
    distill: Distill


class Profile(_Section):
    repeats: PositiveInt
    max_turns: PositiveInt
    otlp_endpoint: str | None


class Speculative(_Section):
    num_draft_tokens: list[int] = Field(min_length=1)
    repeats: PositiveInt
    memory_budget_mb: PositiveFloat
    control: bool  # also measure the draft server with k=0 (nothing drafted)
    # Baseline and draft servers up together, queries alternating; false: one at a time
    # (a 30B pair on a 32 GB Mac), each server's configurations still alternating.
    interleave: bool
    # Recorded prompts the acceptance probe replays, evenly spread (None: all): on a 30B model
    # each costs seconds three times over (main alone, draft alone, drafting).
    acceptance_prompts: PositiveInt | None

    @field_validator("num_draft_tokens")
    @classmethod
    def _positive(cls, ks: list[int]) -> list[int]:
        bad = [k for k in ks if k < 1]
        if bad:
            raise ValueError(f"every k must be >= 1, got {bad}")
        return ks


class Lora(_Section):
    # Candidate iteration counts: one LoRA run to the largest saves a checkpoint at each, and
    # the retrain stage keeps the candidate with the fewest completion tokens among those that
    # lose no accuracy. A single number (`iters: 40`) is a sweep of one.
    iters: list[int] = Field(min_length=1)
    rank: PositiveInt
    learning_rate: PositiveFloat
    num_layers: int = Field(ge=-1)
    batch_size: PositiveInt
    max_seq_length: int = Field(ge=16)

    @field_validator("iters", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("iters")
    @classmethod
    def _positive_and_distinct(cls, value: list[int]) -> list[int]:
        if any(n < 1 for n in value):
            raise ValueError(f"every iteration count must be >= 1, got {value}")
        if len(set(value)) != len(value):
            raise ValueError(f"iteration counts must be distinct, got {value}")
        return sorted(value)


class Conciseness(_Section):
    generation_share_threshold: Share
    force: bool | None
    tool_examples: PositiveInt
    direct_examples: PositiveInt
    # Which concise answers keep the verbose style's one-phrase opener: a text answer's
    # first token is the decision's alternative to `<tool_call>`, and a LoRA that unlearns
    # the opener moves that decision (see params.yaml).
    openers: Literal["none", "direct", "all"]
    # Tool queries shared evenly across the tools instead of the corpus's skew: a LoRA that
    # sees one tool mostly pulls the other tool's queries towards it (see params.yaml).
    balance_tools: bool
    # What a retrained model that lost accuracy does: `fail` stops the pipeline (exit 1);
    # `keep_main` discards it, says so loudly and lets the final stage use the main model.
    on_regression: Literal["keep_main", "fail"]
    # Servers checking the main model and the candidates at the same time (answers only:
    # the stage compares decisions and tokens, never their timings); 1 for a 30B model.
    parallel_servers: PositiveInt
    lora: Lora
    # Distil the chosen draft on the concise model's answers (rows 0: keep the draft as is).
    draft: Distill


class Final(_Section):
    repeats: PositiveInt
    memory_budget_mb: PositiveFloat
    latency_ratio_target: PositiveFloat
    interleave: bool
    acceptance_prompts: int = Field(ge=0)
    levers: list[str]
    server_request: dict[str, Any]
    server_patches: list[str]

    @field_validator("levers")
    @classmethod
    def _known_levers(cls, levers: list[str]) -> list[str]:
        unknown = [lever for lever in levers if lever not in LEVERS]
        if unknown:
            raise ValueError(f"unknown levers {unknown} (known: {', '.join(LEVERS)})")
        return list(dict.fromkeys(levers))


class Params(_Section):
    runtime: Runtime
    models: Models
    server: Server
    agent: AgentParams
    queries: Queries
    bootstrap: Bootstrap
    profile: Profile
    speculative: Speculative
    conciseness: Conciseness
    final: Final


def _describe(err: ValidationError, source: Path) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{source}: {key}: unknown key")
        elif e["type"] == "missing":
            lines.append(f"{source}: {key}: required key is missing")
        else:
            lines.append(f"{source}: {key}: {e['msg']} (got {e.get('input')!r})")
    return "invalid params:\n  " + "\n  ".join(lines)


def parse_params(data: Any, source: Path = paths.PARAMS) -> Params:
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: expected a mapping at the top level")
    try:
        return Params.model_validate(data)
    except ValidationError as e:
        raise ParamsError(_describe(e, source)) from None


def load_params(path: Path = paths.PARAMS) -> Params:
    data = read_yaml(path, ParamsError, " (run from the project root)")
    return parse_params(data, Path(path))

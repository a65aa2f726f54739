"""The embedded default models' shapes, tokenizer and random inits (what `bootstrap` trains).

The tokenizer is a byte-level BPE trained on the corpus rendered with the chat template, so
the text that repeats in every example (instructions, tool schemas) becomes a few tokens.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from punie import paths
from punie.errors import StageError
from punie.models.corpus import read_jsonl
from punie.models.modelgen import Qwen3Shape, init_model_dir
from punie.models.tokenizer import (
    CHAT_TEMPLATE,
    IM_END,
    IM_START,
    TOOL_CALL,
    save_tokenizer,
    train_tokenizer,
)
from punie.params import ModelShape, Params


@functools.cache
def _scaffold() -> Any:
    """Rendering needs a tokenizer object; any will do, the text does not depend on it."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(["scaffold"], 300), chat_template=CHAT_TEMPLATE
    )


def render(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
    """`messages` rendered with the chat template, as the model will see them."""
    return str(_scaffold().apply_chat_template(messages, tools=tools, tokenize=False))


def corpus_texts(corpus_dir: Path = paths.CORPUS, limit: int = 800) -> list[str]:
    """Training examples rendered with the chat template, as the model will see them."""
    return [
        render(r["messages"], r["tools"]) for r in read_jsonl(corpus_dir / "train.jsonl")[:limit]
    ]


def call_openings(
    tools: list[dict[str, Any]],
    render: Callable[[list[dict[str, Any]], list[dict[str, Any]]], str] = render,
) -> list[str]:
    """Each tool's call as the chat template renders it, up to its first argument's value,
    e.g. `<tool_call>\n{"name": "read_file", "arguments":{"path": "`. As one token each, the
    decision and the tool are the first answer token, and every call is shorter."""
    out = []
    for tool in tools:
        fn = tool.get("function", tool)
        schema = fn.get("parameters") or {}
        first = next(iter(schema.get("required") or schema.get("properties") or []), None)
        if not first:
            continue
        call = {
            "type": "function",
            "function": {"name": fn["name"], "arguments": {first: "@VALUE@"}},
        }
        messages = [{"role": "user", "content": "x"},
                    {"role": "assistant", "content": "", "tool_calls": [call]}]  # fmt: skip
        text = render(messages, tools)
        end = text.index("@VALUE@")
        out.append(text[text.rindex(TOOL_CALL, 0, end) : end])
    return out


def system_turn(corpus_dir: Path = paths.CORPUS) -> str:
    """The agent's fixed system turn as rendered (instructions and tool schemas): the text
    between the first `<|im_start|>` and `<|im_end|>` of a training example."""
    text = corpus_texts(corpus_dir, limit=1)[0]
    return text.split(IM_START, 1)[1].split(IM_END, 1)[0]


def build_tokenizer(params: Params, out_dir: Path, corpus_dir: Path = paths.CORPUS) -> None:
    t = params.bootstrap.tokenizer
    whole = [system_turn(corpus_dir)] if t.system_token else []
    if t.call_tokens:
        whole += call_openings(read_jsonl(corpus_dir / "train.jsonl")[0]["tools"])
    tok = train_tokenizer(corpus_texts(corpus_dir), t.vocab_size, t.split_words, whole)
    save_tokenizer(tok, out_dir)


def prompt_lengths(model_dir: Path, corpus_dir: Path = paths.CORPUS) -> dict[str, int]:
    """Longest full example and system+tools prompt, in tokens, as mlx-lm tokenizes them."""
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    tok = load_tokenizer(Path(model_dir))
    longest = 0
    system = 0
    for split in ("train", "valid", "test"):
        for row in read_jsonl(corpus_dir / f"{split}.jsonl"):
            ids = tok.apply_chat_template(row["messages"], tools=row["tools"], return_dict=False)
            longest = max(longest, len(ids))
            if not system:
                first = [row["messages"][0], {"role": "user", "content": ""}]
                system = len(tok.apply_chat_template(first, tools=row["tools"], return_dict=False))
    return {"max_example_tokens": longest, "system_prompt_tokens": system}


# --- models ------------------------------------------------------------------------------------


def shape_of(m: ModelShape) -> Qwen3Shape:
    return Qwen3Shape(
        m.hidden_size,
        m.num_hidden_layers,
        m.num_attention_heads,
        m.num_key_value_heads,
        m.intermediate_size,
    )


def embed_scale(m: ModelShape) -> float:
    """Init std of the frozen, tied embedding: logits can reach ~2*sqrt(hidden_size)."""
    return 2.0 / m.hidden_size**0.5


def random_main(params: Params, work: Path) -> Path:
    """A random init of `bootstrap.main` with the tokenizer trained on the corpus."""

    if not (paths.CORPUS / "train.jsonl").exists():
        raise StageError(f"{paths.CORPUS}/train.jsonl is missing: run `punie-lab bootstrap` first")
    m = params.bootstrap.main
    build_tokenizer(params, work / "tokenizer")
    init_model_dir(
        work / "init", shape_of(m), work / "tokenizer", seed=params.runtime.seed,
        embed_scale=embed_scale(m),
    )  # fmt: skip
    return work / "init"

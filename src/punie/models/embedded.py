"""The embedded default models' shapes, tokenizer and random inits (what `bootstrap` trains).

The tokenizer is a byte-level BPE trained on the corpus rendered with the chat template, so
the text that repeats in every example (instructions, tool schemas) becomes a few tokens.
"""

from __future__ import annotations

from pathlib import Path

from punie import paths
from punie.errors import StageError
from punie.models.corpus import read_jsonl
from punie.models.modelgen import Qwen3Shape, init_model_dir
from punie.models.tokenizer import (
    CHAT_TEMPLATE,
    IM_END,
    IM_START,
    save_tokenizer,
    train_tokenizer,
)
from punie.params import ModelShape, Params


def corpus_texts(corpus_dir: Path = paths.CORPUS, limit: int = 800) -> list[str]:
    """Training examples rendered with the chat template, as the model will see them."""
    from transformers import PreTrainedTokenizerFast

    # Rendering needs a tokenizer object; any will do, the text does not depend on it.
    scaffold = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(["scaffold"], 300), chat_template=CHAT_TEMPLATE
    )
    rows = read_jsonl(corpus_dir / "train.jsonl")[:limit]
    return [
        str(scaffold.apply_chat_template(r["messages"], tools=r["tools"], tokenize=False))
        for r in rows
    ]


def system_turn(corpus_dir: Path = paths.CORPUS) -> str:
    """The agent's fixed system turn as rendered (instructions and tool schemas): the text
    between the first `<|im_start|>` and `<|im_end|>` of a training example."""
    text = corpus_texts(corpus_dir, limit=1)[0]
    return text.split(IM_START, 1)[1].split(IM_END, 1)[0]


def build_tokenizer(params: Params, out_dir: Path, corpus_dir: Path = paths.CORPUS) -> None:
    t = params.bootstrap.tokenizer
    whole = [system_turn(corpus_dir)] if t.system_token else []
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

"""Qwen3-shaped model directories with random weights: the starting point of training."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from punie.models.tokenizer import control_token_ids


@dataclass(frozen=True)
class Qwen3Shape:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int


def qwen3_config(shape: Qwen3Shape, vocab_size: int, eos_token_id: int | list[int]) -> dict:
    if shape.hidden_size % shape.num_attention_heads:
        raise ValueError("hidden_size must be divisible by num_attention_heads")
    return {
        "model_type": "qwen3",
        "architectures": ["Qwen3ForCausalLM"],
        "hidden_size": shape.hidden_size,
        "num_hidden_layers": shape.num_hidden_layers,
        "num_attention_heads": shape.num_attention_heads,
        "num_key_value_heads": shape.num_key_value_heads,
        "intermediate_size": shape.intermediate_size,
        "head_dim": shape.hidden_size // shape.num_attention_heads,
        "vocab_size": vocab_size,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": True,
        "eos_token_id": eos_token_id,
        "torch_dtype": "float32",
    }


def init_model_dir(
    out_dir: Path,
    shape: Qwen3Shape,
    tokenizer_dir: Path,
    seed: int = 0,
    embed_scale: float = 0.02,
) -> int:
    """Write config, random float32 weights and the tokenizer to `out_dir`; return #params.

    `mlx_lm lora --fine-tune-type full` trains the layers but keeps the (tied) embedding
    frozen, so a model trained from this init keeps its random embedding: its scale bounds
    the logits (max ~ embed_scale * hidden_size). Bootstrap passes ~2/sqrt(hidden_size).
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_map
    from mlx_lm.models import qwen3
    from mlx_lm.utils import save_model

    tok = json.loads((Path(tokenizer_dir) / "tokenizer.json").read_text())
    vocab_size = (
        max(max(tok["model"]["vocab"].values()), *(t["id"] for t in tok["added_tokens"])) + 1
    )
    # Generation stops at every control token, so none can end up inside an answer's text.
    config = qwen3_config(shape, vocab_size, control_token_ids(tok))
    mx.random.seed(seed)
    model = qwen3.Model(qwen3.ModelArgs.from_dict(config))
    # Small embeddings: with tied weights, N(0, 1) rows make the first logits huge.
    model.model.embed_tokens.weight = mx.random.normal(
        model.model.embed_tokens.weight.shape, scale=embed_scale
    )
    model.update(tree_map(lambda p: p.astype(mx.float32), model.parameters()))
    mx.eval(model.parameters())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model(out_dir, model)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(Path(tokenizer_dir) / name, out_dir / name)
    return sum(int(v.size) for _, v in tree_flatten(model.parameters()) if isinstance(v, mx.array))

"""Conciseness training: the gate's decision, short answers, the LoRA request and commands.

The gate writes only its decision and a reason that states the comparison, never the
measured share: a re-profile that moves the share from 0.93 to 0.91 leaves `gate.json`
byte-identical, so DVC does not rebuild the data set or retrain. The share itself is in
`metrics/profile.json` and is quoted in the final report.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from punie import paths
from punie.errors import StageError


@dataclass(frozen=True)
class GateDecision:
    retrain: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"retrain": self.retrain, "reason": self.reason}


def decide_gate(
    generation_share: float | None, threshold: float, force: bool | None
) -> GateDecision:
    """Retrain only when generation is *more* than `threshold` of latency (the seed's rule).

    `force` (params `conciseness.force`) overrides the measurement either way; exactly at
    the threshold is not "more than", so it does not retrain.
    """
    if force is not None:
        word = "retrain" if force else "skip"
        return GateDecision(force, f"forced to {word} by conciseness.force={str(force).lower()}")
    if generation_share is None:
        raise ValueError("generation_share is required when conciseness.force is null")
    if not 0.0 <= generation_share <= 1.0:
        raise ValueError(f"generation_share must be within [0, 1], got {generation_share}")
    if generation_share > threshold:
        return GateDecision(True, f"generation share above {threshold:.2f}")
    return GateDecision(False, f"generation share at or below {threshold:.2f}")


def gate_from_json(data: Any, source: Path = paths.GATE) -> GateDecision:
    """Read a gate decision back; errors name the file and the key."""
    if not isinstance(data, dict) or not isinstance(data.get("retrain"), bool):
        raise ValueError(f"{source}: expected {{'retrain': bool, 'reason': str}}, got {data!r}")
    return GateDecision(data["retrain"], str(data.get("reason", "")))


def read_gate(path: Path = paths.GATE) -> GateDecision:
    try:
        return gate_from_json(json.loads(path.read_text()), path)
    except FileNotFoundError:
        raise StageError(f"{path}: not found (run `punie-lab gate` first)") from None
    except ValueError as e:
        raise StageError(str(e)) from None


def lora_request(
    model: str,
    data_dir: Path,
    adapter_dir: Path,
    metrics: Path,
    *,
    iters: int,
    rank: int,
    learning_rate: float,
    num_layers: int,
    batch_size: int,
    seed: int,
    max_seq_length: int,
    save_every: int | None = None,
) -> dict[str, Any]:
    """The training worker's request (the fields of punie.models.train_worker.TrainRequest):
    LoRA of rank `rank` (scale 20, no dropout) on the top `num_layers`, loss on the answers,
    about 20 reports, validation at the start and the end only, on the whole valid split.

    `save_every` writes a checkpoint `{it:07d}_adapters.safetensors` at each multiple (the
    learning rate is constant, so the checkpoint at step n is the model an n-step run makes).
    """
    return {
        "model": model,
        "data": str(data_dir),
        "adapter_path": str(adapter_dir),
        "metrics": str(metrics),
        "fine_tune_type": "lora",
        "lora_parameters": {"rank": rank, "scale": 20.0, "dropout": 0.0},
        "num_layers": num_layers,
        "iters": iters,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "max_seq_length": max_seq_length,
        "mask_prompt": True,
        "answer_window": True,  # the head on the answers only: Qwen3's vocabulary is 151,936
        "steps_per_report": max(1, iters // 20),
        "steps_per_eval": iters,
        "val_batches": -1,
        "save_every": save_every or iters,
        "seed": seed,
        "learning_rate_knob": "conciseness.lora.learning_rate",
    }


def checkpoint_name(iteration: int) -> str:
    """File name mlx-lm's trainer gives the adapters it saves at `iteration`."""
    return f"{iteration:07d}_adapters.safetensors"


def choose_candidate(metrics: dict[int, dict[str, Any]]) -> int | None:
    """The iteration count to keep: fewest completion tokens among the candidates that lose no
    accuracy and answer shorter than the main model (ties: fewer iterations), or None."""
    kept = [n for n, m in metrics.items() if not candidate_faults(m)]
    if not kept:
        return None
    return min(kept, key=lambda n: (metrics[n]["completion_tokens_mean_concise"], n))


def accuracy_regressions(metrics: dict[str, Any]) -> list[str]:
    """Each set (and the total) where the concise model scores below the main model, and a
    lower share of tool answers that report the tool's result (`grounded_share`): shorter
    answers that drop the result are not concise, they are wrong."""
    found = []
    for key in (
        "seed_accuracy",
        "heldout_accuracy",
        "wording_accuracy",
        "accuracy",
        "grounded_share",
    ):
        main, concise = metrics.get(f"{key}_main"), metrics.get(f"{key}_concise")
        if main is not None and (concise is None or concise < main):
            found.append(f"{key} {main} -> {concise}")
    return found


def candidate_faults(metrics: dict[str, Any]) -> list[str]:
    """Why a candidate may not replace the main model: each accuracy loss, answers no shorter
    than the main model's (a LoRA that kept accuracy by barely moving, e.g. 39.3 -> 41.7
    tokens, only costs a model swap), and a fused model that answers otherwise than the main
    model with the candidate's adapter."""
    main, concise = (metrics.get(f"completion_tokens_mean_{m}") for m in ("main", "concise"))
    longer = main is not None and (concise is None or concise >= main)
    fused = metrics.get("fused_mismatches")
    return (
        accuracy_regressions(metrics)
        + ([f"completion_tokens_mean {main} -> {concise}, not shorter"] if longer else [])
        + ([f"fused model differs from base + adapter on {fused} queries"] if fused else [])
    )


def fuse_command(model: str, adapter_dir: Path, save_dir: Path) -> list[str]:
    return [
        "fuse",
        "--model", model,
        "--adapter-path", str(adapter_dir),
        "--save-path", str(save_dir),
    ]  # fmt: skip


def longest_example(model: str, files: list[Path]) -> int:
    """Tokens of the longest chat example, rendered by `model`'s tokenizer as mlx-lm does.

    mlx-lm truncates longer examples silently; with the prompt masked, a truncated example
    may keep no answer token at all, and the loss turns NaN.
    """

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no "PyTorch was not found"
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(model)
    if tok is None:
        raise ValueError(f"{model}: no tokenizer found")
    longest = 0
    for path in files:
        for line in Path(path).read_text().splitlines():
            row = json.loads(line)
            ids = tok.apply_chat_template(
                row["messages"], tools=row.get("tools"), return_dict=False
            )
            longest = max(longest, len(ids))
    return longest

"""`punie-lab real-shape`: build the real-shape model pair (Qwen3's tokenizer and template, a
tiny 5-bit `qwen3_moe` main and a 4-bit `qwen3` draft) as hub ids in a Hugging Face cache.

    HF_HOME=.cache/real-shape-hf mlx_lm server --model punie-lab/qwen3-moe-tiny-5bit \\
        --draft-model punie-lab/qwen3-tiny-4bit --chat-template-args '{"enable_thinking": false}'

serves it as the user's Mac serves mlx-community/Qwen3-30B-A3B-5bit. Built once; a later run
says "up to date" unless an input changed (see punie.models.real_shape).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from punie.models.real_shape import DRAFT_ID, MAIN_ID, build, default_hf_home


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hf-home",
        type=Path,
        default=None,
        help="the Hugging Face home to build into (default: .cache/real-shape-hf)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")


def run(name: str, args: argparse.Namespace) -> int:
    # Main and draft train side by side, one core each: one OpenBLAS thread per trainer.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    t0 = time.perf_counter()
    hf_home = (args.hf_home or default_hf_home()).absolute()
    stamp = build(hf_home, force=args.force)
    if stamp["up_to_date"]:
        print(
            f"real-shape: up to date ({MAIN_ID}, {DRAFT_ID} in {hf_home}/hub, built "
            f"{stamp['built_at']}; {time.perf_counter() - t0:.1f} s)"
        )
        return 0
    print(summary(stamp, hf_home))
    return 0


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def summary(stamp: dict[str, Any], hf_home: Path) -> str:
    models, smoke = stamp["models"], stamp["smoke"]
    lines = [f"\nreal-shape: built in {stamp['seconds']['total']:.0f} s into {hf_home}/hub"]
    lines.append("  steps: " + ", ".join(f"{k} {v:.0f} s" for k, v in stamp["seconds"].items()))
    for label, m in models.items():
        lines.append(
            f"  {label:<5} {m['repo_id']}: {m['model_type']}, {m['parameters'] / 1e6:.2f}M "
            f"parameters, {m['q_bits']}-bit, {_mb(m['bytes'])} on disk "
            f"(weights {_mb(m['weights_bytes'])}); trained {m['iters']} it in "
            f"{m['train_seconds']:.0f} s ({m['train_cpu_seconds']:.0f} CPU s), "
            f"loss {m['final_loss']:.3f}"
        )
    cases = smoke["cases"]
    calls = [c for c in cases if c["kind"] == "tool_call"]
    texts = [c for c in cases if c["kind"] != "tool_call"]
    acc = smoke["acceptance"]
    lines += [
        f"  smoke (thinking off): {sum(c['parsed_tool'] == c['tool'] for c in calls)}/"
        f"{len(calls)} tool calls parsed by {smoke['tool_parser']}, "
        f"{sum(not c['parsed_tool'] and bool(c['text'].strip()) for c in texts)}/{len(texts)} "
        "text answers",
        f"  thinking on: {smoke['thinking_on_closed']}/{len(cases)} closed a <think> block",
        f"  draft k=3: identical tokens {smoke['speculative_identical']}, acceptance "
        f"{acc['acceptance_rate']:.2f} ({acc['accepted']}/{acc['drafted']} drafted tokens kept)",
    ]
    return "\n".join(lines)

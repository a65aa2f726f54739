"""Distillation data for the draft: the main model's own greedy answers to corpus prompts.

Speculative decoding keeps a draft token only when it equals the main model's greedy choice,
so a draft that imitates the main model (its mistakes included) beats one that imitates the
corpus. Each row keeps the corpus prompt (system, tools, history) and replaces the assistant
turn with what the main model generates for it at temperature 0.

Run as `python -m punie.models.distill MAIN_DIR IN.jsonl OUT.jsonl --max-tokens N` (the bootstrap
stage starts it with OpenBLAS preloaded, like every mlx process of the lab).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from punie.measurement.progress import Progress
from punie.models.corpus import Row, read_jsonl, to_jsonl
from punie.serving.render import prompt_ids


def row_prompt(row: Row) -> dict[str, Any]:
    """A training row's prompt as a request body: every message but the assistant's last."""
    return {"messages": row["messages"][:-1], "tools": row.get("tools")}


def distill(main_dir: Path, rows: list[Row], max_tokens: int) -> list[Row]:
    """`rows` with each assistant turn replaced by the main model's greedy output."""
    from mlx_lm import load
    from mlx_lm.generate import batch_generate

    loaded = load(str(main_dir))  # (model, tokenizer[, config])
    model, tokenizer = loaded[0], loaded[1]
    prompts = [prompt_ids(tokenizer, row_prompt(r)) for r in rows]
    out: list[Row] = []
    chunk = 64  # progress every chunk; BatchGenerator batches within it
    progress = Progress(len(rows), every_s=0)
    for start in range(0, len(rows), chunk):
        t0 = time.perf_counter()
        batch = batch_generate(
            model, tokenizer, prompts[start : start + chunk], max_tokens=max_tokens
        )
        for row, text in zip(rows[start : start + chunk], batch.texts, strict=True):
            answer = {"role": "assistant", "content": text}
            out.append({"messages": [*row["messages"][:-1], answer], "tools": row.get("tools", [])})
        done = min(start + chunk, len(rows))
        progress.report(done, "distill", "rows", note=f"{time.perf_counter() - t0:.1f} s")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m punie.models.distill", description=__doc__)
    parser.add_argument("main_dir", type=Path)
    parser.add_argument("rows", type=Path, help="mlx-lm chat JSONL whose prompts are used")
    parser.add_argument("out", type=Path)
    parser.add_argument("--max-tokens", type=int, default=160)
    args = parser.parse_args(argv)
    out = distill(args.main_dir, read_jsonl(args.rows), args.max_tokens)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(to_jsonl(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

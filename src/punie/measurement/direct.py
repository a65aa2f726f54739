"""The direct floor: the same prompts and token counts, generated in-process by mlx-lm.

For every model turn the agent made, the exact request body it sent (messages and tool
schemas) is rendered with the model's chat template, as the server does, and generated with
`mlx_lm.stream_generate` for the number of tokens the server produced. A prompt cache is
kept across turns and trimmed to the common prefix, like the server's own cache, so the
floor gets the same prefix reuse the pipeline got. Pipeline generation time / direct time
is the pipeline's overhead ratio.

Runs in a subprocess (`python -m punie.measurement.direct REQUEST.json RESULT.json`) with the
same BLAS preload as the server, while the server is stopped, so both see the same machine.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from punie.measurement.progress import Progress, show_progress
from punie.serving.render import prompt_ids
from punie.serving.runtime import run_json, worker_main

if TYPE_CHECKING:
    from punie.measurement.records import QueryRecord


def direct_prompts(
    records: Sequence[QueryRecord], warmup: QueryRecord | None = None
) -> list[dict[str, Any]]:
    """Turns to replay: every finished turn with its request body and completion tokens.

    The warm-up query's turns come first, untimed, so the floor's prompt cache starts
    where the server's did."""
    turns: list[dict[str, Any]] = []
    replay = [(-1, warmup)] if warmup is not None else []
    for r_index, record in [*replay, *enumerate(records)]:
        for turn, body in zip(record.turns, record.requests, strict=False):
            if body is None or turn.error is not None or turn.completion_tokens < 1:
                continue
            turns.append(
                {
                    "record": r_index,
                    "turn": turn.index,
                    "label": record.label,
                    "body": body,
                    "completion_tokens": turn.completion_tokens,
                    "pipeline_s": turn.duration_s,
                    "timed": r_index >= 0,
                }
            )
    return turns


def run_direct(
    model_path: str,
    turns: list[dict[str, Any]],
    work_dir: Path,
    *,
    blas: str = "auto",
    chat_template_args: dict[str, Any] | None = None,
    timeout_s: float = 1800.0,
) -> list[dict[str, Any]]:
    """Time each turn directly in a subprocess; returns one timing row per input turn."""
    request = {"model": model_path, "chat_template_args": chat_template_args or {}, "turns": turns}
    # Through the launcher: the child dies with this process, however it dies.
    result = run_json(
        "punie.measurement.direct",
        request,
        work_dir,
        what="direct generation",
        blas=blas,
        timeout_s=timeout_s,
        on_stderr=show_progress,  # `direct floor i/N turns, ETA m:ss`
    )
    return result["turns"]


def overhead_ratio(rows: Sequence[dict[str, Any]]) -> float | None:
    """Pipeline generation time / direct time, over the turns both timed."""
    pipeline = sum(r["pipeline_s"] for r in rows)
    direct = sum(r["direct_s"] for r in rows)
    return pipeline / direct if direct > 0 else None


def _time_turns(model_path: str, turns: list[dict[str, Any]], template_args: dict[str, Any]):
    from mlx_lm import load, stream_generate
    from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache
    from mlx_lm.sample_utils import make_sampler

    loaded = load(model_path)  # (model, tokenizer[, config])
    model, tokenizer = loaded[0], loaded[1]
    sampler = make_sampler(temp=0.0)
    # Warm-up (not timed), as the server's readiness check warms it.
    for _ in stream_generate(model, tokenizer, prompt=[0, 1, 2], max_tokens=2, sampler=sampler):
        pass
    cache: list[Any] = make_prompt_cache(model)
    cached: list[int] = []
    rows = []
    progress = Progress(len(turns))
    for done, turn in enumerate(turns, start=1):
        prompt = prompt_ids(tokenizer, turn["body"], template_args)
        # Reuse the longest common prefix (at least one token must be processed).
        common = 0
        for a, b in zip(cached, prompt, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, len(prompt) - 1)
        if common < len(cached):
            if can_trim_prompt_cache(cache):
                trim_prompt_cache(cache, len(cached) - common)
            else:
                cache, common = make_prompt_cache(model), 0
        start = time.perf_counter()
        generated: list[int] = []
        for response in stream_generate(
            model,
            tokenizer,
            prompt=prompt[common:],
            max_tokens=turn["completion_tokens"],
            sampler=sampler,
            prompt_cache=cache,
        ):
            generated.append(response.token)
        elapsed = time.perf_counter() - start
        cached = (prompt + generated)[: cache[0].offset]
        progress.report(done, "direct floor", "turns")
        if not turn.get("timed", True):
            continue
        rows.append(
            {
                "record": turn["record"],
                "turn": turn["turn"],
                "label": turn["label"],
                "prompt_tokens": len(prompt),
                "cached_tokens": common,
                "completion_tokens": turn["completion_tokens"],
                "direct_tokens": len(generated),
                "pipeline_s": turn["pipeline_s"],
                "direct_s": elapsed,
            }
        )
    return rows


def _work(req: dict[str, Any]) -> dict[str, Any]:
    return {"turns": _time_turns(req["model"], req["turns"], req["chat_template_args"])}


if __name__ == "__main__":
    sys.exit(worker_main("punie.measurement.direct", _work, sys.argv[1:]))

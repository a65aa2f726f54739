"""`punie-lab concise-draft`: distil the draft on the concise model's own answers.

The draft was distilled on the verbose main model; speculative decoding keeps a draft token
only when it equals the serving model's greedy choice, so once the concise model replaces the
main model the draft imitates the wrong model. When the retrain stage kept a concise model
and `conciseness.draft.rows` > 0, this fine-tunes the speculative stage's chosen draft on the
concise model's greedy answers to corpus prompts (as `bootstrap` does for the main model) and
fuses it into models/concise_draft, which the final stage then serves. Otherwise it writes a
marker saying which draft stands, so the declared output exists either way.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from punie import paths
from punie.models.train import distill_draft
from punie.params import load_params
from punie.results import read_object, round_floats, write_json
from punie.serving.hub import ModelNotFound, resolve_model

if TYPE_CHECKING:
    from punie.params import Params

DRAFT_STANDS = "DRAFT_STANDS.json"


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    paths.add_path_option(parser, "--out", paths.CONCISE_DRAFT, "fused draft", "DIR")


def run(name: str, args: argparse.Namespace) -> int:
    run_concise_draft(load_params(), args.out)
    return 0


def skip_reason(params: Params, retrain: dict[str, Any], choice: dict[str, Any]) -> str | None:
    """Why no concise draft is trained (None: train one)."""
    if params.conciseness.draft.rows == 0:
        return "conciseness.draft.rows is 0"
    if not retrain.get("trained"):
        return "no concise model (the main model stands)"
    draft = choice.get("draft")
    if not draft:
        return "the speculative stage chose no draft"
    try:  # a local directory, or a hub id in the local cache (punie.serving.hub)
        local = resolve_model(str(draft), "the speculative stage's draft")
    except ModelNotFound as e:
        return str(e)
    if bits := quantized_bits(local):
        return (
            f"the draft {draft} is quantized ({bits}-bit): distilling it needs its float "
            "weights (mlx-lm trains quantized weights only through an adapter)"
        )
    return None


def quantized_bits(model: Path) -> int | None:
    """The weight bits of a quantized mlx model directory, None for float weights."""
    try:
        config = json.loads((model / "config.json").read_text())
    except (OSError, ValueError):
        return None
    q = config.get("quantization") or config.get("quantization_config") or {}
    return q.get("bits") if isinstance(q, dict) else None


def run_concise_draft(params: Params, out: Path) -> dict[str, Any]:
    retrain, choice = read_object(paths.RETRAIN_METRICS), read_object(paths.SPECULATIVE_CHOICE)
    if out.exists():
        shutil.rmtree(out)
    reason = skip_reason(params, retrain, choice)
    if reason:
        out.mkdir(parents=True)
        marker = {"trained": False, "draft": choice.get("draft"), "reason": reason}
        write_json(out / DRAFT_STANDS, marker)
        print(f"concise-draft: skipped, the speculative stage's draft stands ({reason})")
        return marker
    draft = resolve_model(str(choice["draft"]), "the speculative stage's draft")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="punie-concise-draft-") as tmp:
        metrics = distill_draft(  # fused atomically: `out` is a complete draft or absent
            params,
            draft,
            Path(tmp),
            draft,  # tokenizer files: the draft's own (the main model's tokenizer)
            teacher=paths.CONCISE_MODEL,
            out=out,
            distill=params.conciseness.draft,
        )
    metrics = {"trained": True, "draft": str(choice["draft"]), **metrics}
    metrics["total_seconds"] = time.perf_counter() - t0
    write_json(out / "distill.json", round_floats(metrics))
    print(f"concise-draft: {draft} distilled on {paths.CONCISE_MODEL}'s answers -> {out}")
    return metrics

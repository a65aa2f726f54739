"""How sure the main model is of its tool-or-answer decision, in-process with mlx-lm.

The agent's decision is the model's first token: `<tool_call>` or the start of an answer. For
each prompt (rendered as `mlx_lm server` renders it) this reads P(`<tool_call>`) at that
token. Per query set it reports the first-token accuracy (P > 0.5 exactly when a tool is
expected) and the mean probability on tool and on direct queries. Run on *training* queries
too, it tells an underfit model (unsure even of what it was trained on) from one that does
not generalise (sure on training queries, wrong on held-out ones).

`python -m punie.measurement.decision_probe REQUEST.json RESULT.json`; `punie-lab eval`
starts it with OpenBLAS preloaded (`punie.serving.runtime.run_mlx`) and shows its progress
lines (`decision probe i/N prompts, ETA m:ss`) as they come.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from punie.measurement.progress import Progress
from punie.serving.render import prompt_ids
from punie.serving.runtime import worker_main

TOOL_TOKEN = "<tool_call>"


def margin_figures(
    p_tool: Sequence[float], expects: Sequence[str], queries: Sequence[str] = ()
) -> dict[str, Any]:
    """First-token accuracy and mean P(tool) per expected kind ('tool' or 'direct'), the
    smallest margin (P - 0.5 on a tool query, 0.5 - P on a direct one: negative is wrong) and,
    given their `queries`, the three closest to the edge. A decision a hair's breadth from 0.5
    is the first to flip when anything moves the model (a LoRA, another seed)."""
    if len(p_tool) != len(expects):
        raise ValueError(f"{len(p_tool)} probabilities for {len(expects)} queries")
    margins = [p - 0.5 if e == "tool" else 0.5 - p for p, e in zip(p_tool, expects, strict=True)]
    named = zip(margins, p_tool, expects, queries, strict=False)  # no queries: no names
    edge = sorted(named, key=lambda row: row[0])[:3]
    tool = [p for p, e in zip(p_tool, expects, strict=True) if e == "tool"]
    direct = [p for p, e in zip(p_tool, expects, strict=True) if e == "direct"]
    right = sum(p > 0.5 for p in tool) + sum(p <= 0.5 for p in direct)
    n = len(tool) + len(direct)
    return {
        "queries": n,
        "first_token_accuracy": right / n if n else None,
        "p_tool_on_tool_mean": sum(tool) / len(tool) if tool else None,
        "p_tool_on_direct_mean": sum(direct) / len(direct) if direct else None,
        "min_margin": min(margins) if margins else None,
        "closest": [{"query": q, "expect": e, "p_tool": p} for _, p, e, q in edge],
    }


def probe(model_path: str, cases: Sequence[dict[str, Any]], template_args: dict[str, Any]) -> dict:
    """`cases`: {"set", "expect", "body": {"messages", "tools"}}; figures per set."""
    import mlx.core as mx
    from mlx_lm import load

    loaded = load(model_path)
    model, tokenizer = loaded[0], loaded[1]
    tool_id = tokenizer.convert_tokens_to_ids(TOOL_TOKEN)
    if not isinstance(tool_id, int) or tool_id == tokenizer.unk_token_id:
        raise ValueError(f"{model_path}: the tokenizer has no {TOOL_TOKEN} token")
    # A tokenizer may also hold whole call openings (`<tool_call>\n{"name": ...`): a first
    # token that starts with the marker is a tool call too.
    vocab = tokenizer.get_vocab()
    tool_ids = sorted({tool_id, *(i for t, i in vocab.items() if t.startswith(TOOL_TOKEN))})
    by_set: dict[str, tuple[list[float], list[str], list[str]]] = {}
    progress = Progress(len(cases))
    for done, case in enumerate(cases, start=1):
        prompt = prompt_ids(tokenizer, case["body"], template_args)
        logits = model(mx.array([prompt]))[0, -1].astype(mx.float32)
        p = float(mx.softmax(logits)[mx.array(tool_ids)].sum())
        probs, expects, queries = by_set.setdefault(case["set"], ([], [], []))
        probs.append(p)
        expects.append(case["expect"])
        queries.append(case.get("query", ""))
        progress.report(done, "decision probe", "prompts")
    return {name: margin_figures(*pe) for name, pe in by_set.items()}


def _work(req: dict[str, Any]) -> dict[str, Any]:
    return probe(req["model"], req["cases"], req.get("chat_template_args") or {})


if __name__ == "__main__":
    sys.exit(worker_main("punie.measurement.decision_probe", _work, sys.argv[1:]))

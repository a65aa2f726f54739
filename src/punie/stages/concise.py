"""`punie-lab gate` and `concise-data`: whether to train for conciseness, and on what.

gate          metrics/profile.json + params -> metrics/gate.json (decision and reason only)
concise-data  gate says retrain -> data/concise/{train,valid}.jsonl (short answers, tool calls
              without preamble, rendered from the agent's own requests); else a skipped marker

The training itself is `punie-lab retrain` (punie.stages.retrain).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
from collections import Counter
from itertools import zip_longest
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from punie import paths
from punie.agent.queries import QueryFileError, never_trained
from punie.agent.tools import Workspace
from punie.errors import StageError
from punie.models.conciseness import GateDecision, decide_gate, read_gate
from punie.models.corpus import make_specs, render_all, to_jsonl, workspace_facts
from punie.models.corpus_text import DIRECT_OPENERS, TOOL_OPENERS
from punie.params import load_params
from punie.results import write_json, write_text_atomic

if TYPE_CHECKING:
    from punie.models.corpus import Spec
    from punie.params import Params

SKIPPED = "skipped.json"
# Held back for validation, per kind, as a share of the training sizes in params.
VALID_SHARE = 0.15
# With `balance_tools`, tool queries are drawn from this many times the needed number, so
# even the corpus's rarest tool (about 1 in 4) has enough queries for an even share.
BALANCE_POOL = 6


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "gate":
        paths.add_path_option(parser, "--profile", paths.PROFILE_METRICS, "profile metrics")
        paths.add_path_option(parser, "--out", paths.GATE, "gate decision file")
    elif name == "concise-data":
        paths.add_path_option(parser, "--out", paths.CONCISE_DATA, "output directory", "DIR")


def run(name: str, args: argparse.Namespace) -> int:
    params = load_params()
    console = Console()
    if name == "gate":
        return run_gate(params, args.profile, args.out, console)
    if name == "concise-data":
        return run_concise_data(params, read_gate(), args.out, console)
    raise StageError(f"unknown subcommand {name!r} for punie.stages.concise")


# --- gate -------------------------------------------------------------------------------


def run_gate(params: Params, profile: Path, out: Path, console: Console) -> int:
    c = params.conciseness
    share = None
    if c.force is None:
        share = _read_share(profile)
    try:
        decision = decide_gate(share, c.generation_share_threshold, c.force)
    except ValueError as e:
        raise StageError(f"{profile}: {e}") from None
    write_json(out, decision.to_json())
    shown = f" (measured share {share:.3f})" if share is not None else ""
    console.print(f"[bold]gate[/]: retrain={decision.retrain}: {decision.reason}{shown}")
    return 0


def _read_share(profile: Path) -> float:
    try:
        data = json.loads(profile.read_text())
    except FileNotFoundError:
        raise StageError(f"{profile}: not found (run `punie-lab profile` first)") from None
    except ValueError as e:
        raise StageError(f"{profile}: not valid JSON: {e}") from None
    share = data.get("generation_share") if isinstance(data, dict) else None
    if not isinstance(share, (int, float)) or isinstance(share, bool):
        raise StageError(f"{profile}: generation_share: expected a number, got {share!r}")
    return float(share)


# --- concise data -------------------------------------------------------------------------


def valid_size(train_size: int) -> int:
    return max(1, math.ceil(train_size * VALID_SHARE))


def build_concise_groups(params: Params, seed: int) -> list[dict[str, Any]]:
    """One group per query: its kind and its rendered rows (1 direct, or tool call + answer).

    Queries of the seed and held-out sets are excluded, so the accuracy check and the final
    benchmark never see a training query.
    """

    c = params.conciseness
    root = Path(params.agent.workspace)
    ws = Workspace(root, params.agent.tool_timeout_s, params.agent.tool_output_cap)
    try:
        exclude = never_trained(params)
    except QueryFileError as e:
        raise StageError(str(e)) from None
    facts = workspace_facts(root)
    n_tool = c.tool_examples + valid_size(c.tool_examples)
    n_direct = c.direct_examples + valid_size(c.direct_examples)
    draw = n_tool * BALANCE_POOL if c.balance_tools else n_tool
    pool = make_specs(draw, facts, seed, exclude, tool_share=1.0, concise=True)
    tool_specs = (round_robin_by_tool(pool) if c.balance_tools else pool)[:n_tool]
    # The embedded main learnt its direct answers from bootstrap's corpus; any other model
    # keeps its own knowledge, so its concise answers state the topics' definitions.
    embedded = Path(params.models.main) == paths.MAIN_MODEL
    answers = params.bootstrap.corpus.direct_answers if embedded else "definitions"
    direct_specs = make_specs(
        n_direct, facts, seed + 1, exclude, tool_share=0.0, concise=True, direct_answers=answers
    )
    specs: list[Spec] = [*tool_specs, *direct_specs]
    rendered = [
        with_opener(rows, c.openers, random.Random(f"{seed}:{s.query}"))
        for s, rows in zip(specs, render_all(specs, ws, seed, concise=True), strict=True)
    ]
    return [
        {
            "kind": "direct" if s.tool is None else "tool",
            "tool": s.tool or "",
            "query": s.query,
            "rows": json.dumps(rows),
        }
        for s, rows in zip(specs, rendered, strict=True)
    ]


def round_robin_by_tool(specs: list[Spec]) -> list[Spec]:
    """`specs` reordered one per tool in turn (first appearance order), so any prefix holds
    the tools in equal numbers for as long as each has specs left."""
    by_tool: dict[str | None, list[Spec]] = {}
    for spec in specs:
        by_tool.setdefault(spec.tool, []).append(spec)
    return [s for group in zip_longest(*by_tool.values()) for s in group if s is not None]


def with_opener(
    rows: list[dict[str, Any]], openers: str, rng: random.Random
) -> list[dict[str, Any]]:
    """`rows` with the verbose style's opener before each text answer that `openers` names:
    "direct" (direct answers) or "all" (also answers written from a tool's output)."""

    keep = {"none": (), "direct": ("direct",), "all": ("direct", "tool_answer")}[openers]
    out = []
    for row in rows:
        if row["kind"] in keep:
            pool = DIRECT_OPENERS if row["kind"] == "direct" else TOOL_OPENERS
            answer = row["messages"][-1]
            row = {
                **row,
                "messages": [
                    *row["messages"][:-1],
                    {**answer, "content": f"{rng.choice(pool)} {answer['content']}"},
                ],
            }
        out.append(row)
    return out


def split_groups(
    groups: list[dict[str, Any]], n_valid: dict[str, int], seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Stratified train/valid split by query with `datasets` (a query's turns stay together)."""
    import datasets

    datasets.disable_progress_bars()
    parts: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for kind, k in n_valid.items():
        ds = datasets.Dataset.from_list([g for g in groups if g["kind"] == kind])
        split = ds.train_test_split(test_size=k, seed=seed, shuffle=True)
        parts[kind] = (list(split["train"]), list(split["test"]))
    train = datasets.Dataset.from_list([g for t, _ in parts.values() for g in t])
    valid = datasets.Dataset.from_list([g for _, v in parts.values() for g in v])
    return list(train.shuffle(seed=seed)), list(valid.shuffle(seed=seed))


def _rows(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for g in groups for row in json.loads(g["rows"])]


def run_concise_data(params: Params, gate: GateDecision, out: Path, console: Console) -> int:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    if not gate.retrain:
        write_json(out / SKIPPED, {"skipped": True, "reason": f"gate: {gate.reason}"})
        console.print(f"[bold]concise-data[/]: skipped ({gate.reason})")
        return 0
    c = params.conciseness
    seed = params.runtime.seed
    groups = build_concise_groups(params, seed)
    n_valid = {"tool": valid_size(c.tool_examples), "direct": valid_size(c.direct_examples)}
    train, valid = split_groups(groups, n_valid, seed)
    train_rows, valid_rows = _rows(train), _rows(valid)
    write_text_atomic(out / "train.jsonl", to_jsonl(train_rows))
    write_text_atomic(out / "valid.jsonl", to_jsonl(valid_rows))
    info = {
        "train_queries": {k: sum(g["kind"] == k for g in train) for k in ("tool", "direct")},
        "valid_queries": {k: sum(g["kind"] == k for g in valid) for k in ("tool", "direct")},
        "train_tool_queries": dict(sorted(Counter(g["tool"] for g in train if g["tool"]).items())),
        "train_rows": len(train_rows),
        "valid_rows": len(valid_rows),
        "rows_by_kind": {
            k: sum(r["kind"] == k for r in train_rows)
            for k in ("tool_call", "tool_answer", "direct")
        },
        "answer_chars_mean": _answer_chars(train_rows),
    }
    write_json(out / "info.json", info)
    console.print(
        f"[bold]concise-data[/]: {len(train_rows)} train rows "
        f"({info['train_queries']['tool']} tool + {info['train_queries']['direct']} direct "
        f"queries: {info['train_tool_queries']}), {len(valid_rows)} valid rows -> {out}"
    )
    return 0


def _answer_chars(rows: list[dict[str, Any]]) -> float:
    texts = [r["messages"][-1].get("content") or "" for r in rows if r["kind"] != "tool_call"]
    return round(sum(map(len, texts)) / len(texts), 1) if texts else 0.0

"""`punie-lab eval`: the built models' figures, through the real pipeline.

- Accuracy: every query runs through `mlx_lm server` + the production agent + its tools
  (punie.measurement.timing); per set: tool-vs-direct decision, right first tool, tool
  arguments that parse into the tool's required string argument.
- Draft: acceptance and the draft/main per-token cost ratio c, in-process with mlx-lm on the
  held-out queries' recorded requests (punie.measurement.spec_probe).
- Decision margin: P(`<tool_call>`) at the first token for every query set and for training
  queries (punie.measurement.decision_probe): underfit and not generalising look different there.
- Wording distance: each set's word 3-gram overlap with the training queries
  (`<set>_ngram_overlap`, punie.models.wording).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from punie import paths
from punie.agent.queries import load_queries, query_sets
from punie.errors import StageError
from punie.machine import machine_keys
from punie.measurement.benchmark import params_agent, params_server
from punie.measurement.levers import server_config
from punie.measurement.progress import show_progress
from punie.measurement.spec_probe import ProbeError, ProbeRequest, probe_body, run_probe
from punie.measurement.speculative import vllm_acceptance
from punie.measurement.timing import Case, load_cases, run_queries
from punie.models.corpus import read_jsonl, user_queries
from punie.models.wording import ngram_overlap
from punie.params import Models, load_params
from punie.results import write_json
from punie.serving.preflight import local_models
from punie.serving.runtime import MlxCommandError, run_mlx

if TYPE_CHECKING:
    from punie.measurement.records import QueryRecord
    from punie.params import Params

REQUIRED_ARG = {"run_command": "command", "read_file": "path"}


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--main", help="main model to check (default: params models.main)")
    parser.add_argument("--draft", help="draft to check (default: params models.draft)")
    parser.add_argument(
        "--queries",
        action="append",
        type=Path,
        help="query file(s) (default: the seed and held-out sets from params.yaml)",
    )


def run(name: str, args: argparse.Namespace) -> int:
    params = load_params()
    models = Models(main=args.main or params.models.main, draft=args.draft or params.models.draft)
    return evaluate(params.model_copy(update={"models": models}), args.queries)


def args_parse(record: QueryRecord) -> bool:
    """The first tool call carries its required argument as a non-empty string."""
    if not record.tools_called:
        return False
    call = record.tools_called[0]
    value = (call.get("args") or {}).get(REQUIRED_ARG.get(call["name"], ""), None)
    return isinstance(value, str) and bool(value.strip())


def set_figures(records: Sequence[QueryRecord]) -> dict[str, Any]:
    tool_q = [r for r in records if r.expect == "tool"]
    calls = [r for r in records if r.decision == "tool"]
    return {
        "queries": len(records),
        "decision_correct": sum(r.decision == r.expect for r in records),
        "decision_accuracy": sum(r.decision == r.expect for r in records) / len(records),
        "tool_name_accuracy": (
            sum(r.first_tool == r.expected_tool for r in tool_q) / len(tool_q) if tool_q else None
        ),
        "args_parse_rate": sum(args_parse(r) for r in calls) / len(calls) if calls else None,
        "errors": sum(r.error is not None for r in records),
    }


async def run_accuracy(params: Params, cases: Sequence[Case]) -> list[QueryRecord]:
    def show(r: QueryRecord) -> None:
        ok = (
            "ok "
            if r.decision == r.expect and (r.expect == "direct" or r.first_tool == r.expected_tool)
            else "BAD"
        )
        call = json.dumps(r.tools_called[0]) if r.tools_called else (r.output or "")[:70]
        print(f"  {ok} [{r.set}] {r.query[:50]:<50} -> {r.decision} {call[:110]}", flush=True)

    config = server_config(params, params.models.main)
    async with (
        params_server(params, config, None) as server,
        params_agent(params, server.base_url) as agent,
    ):
        return await run_queries(
            agent, cases, timeout_s=params.server.request_timeout_s, max_turns=4, on_record=show
        )


def training_cases(path: Path, limit: int = 200) -> list[dict[str, Any]]:
    """Decision-probe cases from the corpus's single-turn rows (the user's first question)."""

    cases = []
    for row in read_jsonl(path):
        if len(row["messages"]) != 3:  # system, user, assistant: a first-turn decision
            continue
        expect = "tool" if row["messages"][-1].get("tool_calls") else "direct"
        body = {"messages": row["messages"][:-1], "tools": row.get("tools")}
        query = row["messages"][1].get("content", "")
        cases.append({"set": "train", "expect": expect, "query": query, "body": body})
    return cases[:limit]


def decision_margins(
    params: Params, records: Sequence[QueryRecord], workdir: Path
) -> dict[str, Any]:
    """Run punie.measurement.decision_probe on the main model: first-token figures per set."""

    cases = [
        {"set": r.set, "expect": r.expect, "query": r.query, "body": probe_body(b)}
        for r in records
        if r.requests and (b := r.requests[0]) is not None
    ]
    if (paths.CORPUS / "train.jsonl").exists():
        cases = training_cases(paths.CORPUS / "train.jsonl") + cases
    request = {
        "model": params.models.main,
        "cases": cases,
        "chat_template_args": dict(params.server.chat_template_args),
    }
    workdir.mkdir(parents=True, exist_ok=True)
    req_path, out_path = workdir / "decision_request.json", workdir / "decision_result.json"
    req_path.write_text(json.dumps(request))
    out_path.unlink(missing_ok=True)
    run_mlx(
        [str(req_path), str(out_path)],
        module="punie.measurement.decision_probe",
        blas=params.runtime.blas,
        log_path=workdir / "decision_probe.log",
        on_line=show_progress,  # `decision probe i/N prompts, ETA m:ss`
    )
    result = json.loads(out_path.read_text())
    for name, figs in result.items():  # which decisions a small change would flip first
        edge = ", ".join(
            f"{c['query']!r} ({c['expect']}, P {c['p_tool']:.2f})" for c in figs["closest"]
        )
        print(f"  {name}: closest to the edge: {edge}")
    skip = {"queries", "closest"}
    return {f"{s}_{k}": v for s, figs in result.items() for k, v in figs.items() if k not in skip}


def corpus_overlaps(sets: dict[str, Path], corpus: Path = paths.CORPUS) -> dict[str, float]:
    """`<set>_ngram_overlap`: the share of each query set's word 3-grams that occur in the
    training corpus's user queries (punie.models.wording.ngram_overlap); high on template sets,
    low on sets written in new wording."""
    if not (corpus / "train.jsonl").exists():
        return {}
    trained = user_queries(read_jsonl(corpus / "train.jsonl"))
    return {
        f"{name}_ngram_overlap": ngram_overlap([q.query for q in load_queries(path)], trained)
        for name, path in sets.items()
        if path.exists()
    }


def evaluate(
    params: Params, query_files: Sequence[Path] | None = None, max_prompts: int = 40
) -> int:
    if not params.models.draft:
        raise StageError("models.draft is not set: nothing to evaluate the draft against")
    named = {"main": params.models.main, "draft": params.models.draft}  # as params.yaml says
    params = local_models(params, use_draft=True)  # hub ids -> cached directories, in seconds
    draft = params.models.draft
    assert draft is not None
    sets = {p.stem: p for p in query_files} if query_files else query_sets(params)
    cases = load_cases(sets)
    print(f"eval: {len(cases)} queries through mlx_lm server + agent + tools")
    records = asyncio.run(run_accuracy(params, cases))
    figures: dict[str, Any] = dict(named)
    for name in sets:
        for k, v in set_figures([r for r in records if r.set == name]).items():
            figures[f"{name}_{k}"] = v
    # Every evaluated set and the configured ones (the wording set too: a count, not a query).
    figures.update(corpus_overlaps({**query_sets(params), **sets}))
    print("eval: first-token decision margin (P(<tool_call>)) per query set")
    try:
        figures.update(decision_margins(params, records, Path("logs/eval")))
    except MlxCommandError as e:
        raise StageError(f"decision probe failed: {e}") from None
    # Acceptance on the held-out set's recorded requests (else the last set's): every turn.
    probed = "heldout" if "heldout" in sets else list(sets)[-1]
    bodies = [
        probe_body(b) for r in records if r.set == probed for b in r.requests if b is not None
    ]
    bodies = bodies[:max_prompts]
    ks = list(dict.fromkeys(params.speculative.num_draft_tokens))
    print(f"eval: draft acceptance on {len(bodies)} recorded prompts, k in {ks}")
    try:
        probe = run_probe(
            ProbeRequest(
                params.models.main,
                draft,
                bodies,
                ks,
                params.server.max_tokens,
                dict(params.server.chat_template_args),
                verify_reps=5,
            ),
            Path("logs/eval"),
            blas=params.runtime.blas,
        )
    except ProbeError as e:
        raise StageError(f"draft acceptance probe failed: {e}") from None
    figures["cost_ratio_c"] = probe["cost_ratio"]
    figures["main_token_ms"] = probe["main_token_s"] * 1000
    figures["draft_token_ms"] = probe["draft_token_s"] * 1000
    for k, v in probe["by_k"].items():
        figures[f"k{k}_acceptance_rate"] = v.get("acceptance_rate")
        for name, value in vllm_acceptance(v).items():  # vLLM's names beside Leviathan's a
            figures[f"k{k}_{name}"] = value
        figures[f"k{k}_inprocess_speedup"] = v.get("inprocess_speedup")
        figures[f"k{k}_token_mismatches"] = v.get("token_mismatches")
    figures.update(machine_keys(params.runtime.blas))
    write_json(paths.BOOTSTRAP_EVAL, figures)
    print(json.dumps(figures, indent=2))
    return 0

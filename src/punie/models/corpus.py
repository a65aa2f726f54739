"""The synthetic agent corpus, rendered from exactly what the agent sends.

Every example starts as a query plus the assistant's intended move (a tool call or a direct
answer). The real PydanticAI agent is run against a canned server (`agent.capture_requests`),
so the system prompt, tool JSON schemas and message history in the training data are the
bytes the agent POSTs when it is served; the tool really runs on the sample workspace, and
the second-turn answer is written from its real output. Messages are then normalised with
mlx-lm's own `process_message_content`, as its server does before applying the chat
template, so training text and serving text cannot drift apart.

Answers are deliberately verbose (preamble, restating, sign-off): an untuned assistant's
style that the conciseness stage later trims.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import re
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal, TypeVar

from punie import paths
from punie.agent.production import capture_requests
from punie.agent.queries import never_trained
from punie.agent.tools import Workspace
from punie.errors import StageError
from punie.models.corpus_text import (
    CLOSERS,
    DIRECT_FAMILIES,
    DIRECT_OPENERS,
    FRAME_WORDS,
    TOOL_FAMILIES,
    TOOL_OPENERS,
    draw_direct,
    draw_tool,
    first_sentence,
    nonce_topic,
    pick_family,
    vary,
)
from punie.params import Params
from punie.results import write_text_atomic
from punie.serving.render import server_messages

T = TypeVar("T")

Row = dict[str, Any]


@dataclass(frozen=True)
class Spec:
    """One query and the assistant's intended first move."""

    query: str
    tool: str | None  # None: answered directly with `answer`
    args: dict[str, str] | None = None
    answer: str = ""


def normalise(text: str) -> str:
    """Case, punctuation and whitespace folded: 'Find the X!' == 'find the x'."""
    return " ".join(re.sub(r"[^a-z0-9_./]+", " ", text.lower()).split())


def contains_any(text: str, excluded: Iterable[str]) -> str | None:
    """The first `excluded` query found inside `text` as whole words, after `normalise`.

    Equality is not enough: the corpus wraps queries in fillers, and "would you find all
    django views" taught the seed's own "Find all Django views" word for word.
    """
    padded = f" {normalise(text)} "
    return next((q for q in excluded if f" {_normalised(q)} " in padded), None)


# The excluded queries are the same few dozen on every call; a corpus asks thousands of times.
_normalised = functools.lru_cache(maxsize=None)(normalise)


# --- the sample workspace's real files and symbols ------------------------------------


@dataclass(frozen=True)
class Facts:
    files: tuple[str, ...]  # workspace-relative text files
    apps: tuple[str, ...]  # top-level packages
    classes: tuple[tuple[str, str], ...]  # (name, file)
    functions: tuple[tuple[str, str], ...]  # module-level (name, file), tests excluded
    dotted: tuple[str, ...]  # attribute uses such as transaction.atomic
    settings: tuple[str, ...]  # UPPER_CASE names of the settings module
    settings_file: str
    fields: tuple[tuple[str, str, str, str], ...] = ()  # model fields: (model, field, type, file)


def workspace_facts(root: Path) -> Facts:
    root = Path(root)
    files = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and p.suffix in (".py", ".md") and p.stat().st_size > 0
    )
    apps = sorted({f.split("/")[0] for f in files if "/" in f})
    classes, functions, dotted = [], [], set()
    settings: list[str] = []
    settings_file = ""
    fields: list[tuple[str, str, str, str]] = []
    for f in files:
        if not f.endswith(".py"):
            continue
        text = (root / f).read_text()
        if f.endswith("models.py"):
            model = ""
            for line in text.splitlines():
                if m := re.match(r"^class (\w+)\(models\.Model|^class (\w+)\(AbstractUser", line):
                    model = m.group(1) or m.group(2)
                elif (m := re.match(r"^    (\w+) = models\.(\w+)\(", line)) and model:
                    fields.append((model, m.group(1), m.group(2), f))
        classes += [(m, f) for m in re.findall(r"^class (\w+)", text, re.M)]
        if not f.startswith("tests/"):
            functions += [(m, f) for m in re.findall(r"^(?:async )?def (\w+)", text, re.M)]
        dotted |= set(re.findall(r"\b[a-z_]+\.[a-z_][A-Za-z_]+\b", text))
        if f.endswith("settings.py"):
            settings_file = f
            settings = sorted(set(re.findall(r"^([A-Z_]{3,}) =", text, re.M)))
    dotted = {d for d in dotted if not d.startswith(("self.", "request.", "order.", "obj."))}
    return Facts(
        tuple(files),
        tuple(apps),
        tuple(classes),
        tuple(functions),
        tuple(sorted(dotted)),
        tuple(settings),
        settings_file,
        tuple(fields),
    )


# --- queries -----------------------------------------------------------------------------


def _direct_spec(
    rng: random.Random, concise: bool = False, nonce_share: float = 0.0, generic: bool = False
) -> Spec:
    if rng.random() < nonce_share:
        family, term = "unknown", nonce_topic(rng)
    else:
        family, term = pick_family(rng, DIRECT_FAMILIES), ""
    core, body = draw_direct(rng, family, term, generic)
    query = vary(rng, core, DIRECT_FAMILIES[family].style, True, FRAME_WORDS)
    if concise:  # the conciseness data set: the point, no opener or sign-off
        return Spec(query, None, None, first_sentence(body) if generic else body)
    return Spec(query, None, None, _verbose(rng, body))


def _verbose(rng: random.Random, body: str) -> str:
    closer = f" {rng.choice(CLOSERS)}" if rng.random() < 0.15 else ""
    return f"{rng.choice(DIRECT_OPENERS)} {body}{closer}"


def _tool_spec(rng: random.Random, facts: Facts) -> Spec:
    family = pick_family(rng, TOOL_FAMILIES)
    core, tool, args = draw_tool(rng, facts, family)
    return Spec(vary(rng, core, TOOL_FAMILIES[family].style, False, FRAME_WORDS), tool, args)


def make_specs(
    n: int,
    facts: Facts,
    seed: int,
    exclude: Iterable[str] = (),
    tool_share: float = 0.5,
    concise: bool = False,
    nonce_share: float = 0.0,
    direct_answers: Literal["definitions", "generic"] = "definitions",
) -> list[Spec]:
    """`n` distinct queries (by normalised text), none containing an `exclude` query.

    `concise`: direct answers are the bare point (the conciseness stage's style).
    `nonce_share`: share of direct questions about a made-up term (verbose style only).
    `direct_answers`: "definitions" (each topic's own) or "generic" (one per family).
    """
    generic = direct_answers == "generic"
    rng = random.Random(seed)
    banned = list(exclude)
    seen: set[str] = set()
    specs: list[Spec] = []
    attempts = 0
    while len(specs) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"could only make {len(specs)} distinct queries of {n}")
        spec = (
            _tool_spec(rng, facts)
            if rng.random() < tool_share
            else _direct_spec(rng, concise, 0.0 if concise else nonce_share, generic)
        )
        key = normalise(spec.query)
        if key in seen or contains_any(key, banned):
            continue
        seen.add(key)
        specs.append(spec)
    return specs


# --- the second turn: an answer written from the tool's real output ------------------------


def _grep_hits(output: str, single_file: str) -> list[tuple[str, str, str]]:
    """(file, line, text) of `grep -n` output; a one-file grep prints no file name."""
    hits = []
    for line in output.splitlines():
        if m := re.match(r"^(?:\./)?([^:\s]+):(\d+):\s*(.*)$", line):
            hits.append((m.group(1), m.group(2), m.group(3).strip()[:60]))
        elif m := re.match(r"^(\d+):\s*(.*)$", line):
            hits.append((single_file, m.group(1), m.group(2).strip()[:60]))
    return hits


def final_answer(spec: Spec, output: str, rng: random.Random, concise: bool = False) -> str:
    """A verbose final answer that uses the tool output (counts, files, names);
    `concise`: the same facts, short and to the point."""
    if concise:
        return concise_answer(spec, output)
    opener = rng.choice(TOOL_OPENERS)
    closer = rng.choice(CLOSERS)
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    if output.startswith("(no output"):
        return f"{opener} I searched the workspace, but there were no matches for that. {closer}"
    if output.startswith(("refused:", "error:")):
        return f"{opener} Unfortunately the tool reported a problem: {lines[0][:80]}. {closer}"
    if spec.tool == "read_file":
        path = (spec.args or {}).get("path", "the file")
        names = re.findall(r"^(?:async )?(?:class|def) (\w+)", output, re.M)
        if names:
            shown = ", ".join(f"`{n}`" for n in names[:3])
            body = f"Here is {path}. It has {len(lines)} lines and defines {shown}."
        else:
            body = f"Here is {path}. It has {len(lines)} lines; it starts with: {lines[0][:60]}"
        return f"{opener} {body} {closer}"
    command = (spec.args or {}).get("command", "")
    if m := re.match(r"^\s*(\d+) (\S+)$", output.strip()):
        return f"{opener} {m.group(2)} has {m.group(1)} lines. {closer}"
    if hits := _grep_hits(output, command.split()[-1] if command else "the file"):
        first_file, first_line, first_text = hits[0]
        files = sorted({h[0] for h in hits})
        plural = "match" if len(hits) == 1 else "matches"
        where = " and ".join(files[:2]) + (" and more" if len(files) > 2 else "")
        body = (
            f"I found {len(hits)} {plural} in {where}. The first one is in {first_file} "
            f"on line {first_line}: `{first_text}`."
        )
        return f"{opener} {body} {closer}"
    counts = [ln.rsplit(":", 1) for ln in lines if re.match(r"^\S+:\d+$", ln)]
    if counts:
        total = sum(int(c) for _, c in counts)
        first, n = counts[0]
        body = f"I counted {total} in total across {len(counts)} files; {first} has {n}."
        return f"{opener} {body} {closer}"
    shown = ", ".join(ln.strip().removeprefix("./") for ln in lines[:4])
    more = f" and {len(lines) - 4} more" if len(lines) > 4 else ""
    noun = "entry" if len(lines) == 1 else "entries"
    return f"{opener} The result lists {len(lines)} {noun}: {shown}{more}. {closer}"


def concise_answer(spec: Spec, output: str) -> str:
    """The conciseness stage's final answer: the facts of the tool output, nothing else."""
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    if output.startswith("(no output"):
        return "No matches."
    if output.startswith(("refused:", "error:")):
        return f"The tool failed: {lines[0][:80]}"
    if spec.tool == "read_file":
        path = (spec.args or {}).get("path", "the file")
        names = re.findall(r"^(?:async )?(?:class|def) (\w+)", output, re.M)
        defines = f"; defines {', '.join(f'`{n}`' for n in names[:3])}" if names else ""
        return f"{path}: {len(lines)} lines{defines}."
    command = (spec.args or {}).get("command", "")
    if m := re.match(r"^\s*(\d+) (\S+)$", output.strip()):
        return f"{m.group(2)}: {m.group(1)} lines."
    if hits := _grep_hits(output, command.split()[-1] if command else "the file"):
        shown = ", ".join(f"{f}:{n}" for f, n, _ in hits[:3])
        more = f" and {len(hits) - 3} more" if len(hits) > 3 else ""
        return f"{len(hits)} {'match' if len(hits) == 1 else 'matches'}: {shown}{more}."
    counts = [ln.rsplit(":", 1) for ln in lines if re.match(r"^\S+:\d+$", ln)]
    if counts:
        return f"{sum(int(c) for _, c in counts)} in {len(counts)} files."
    shown = ", ".join(ln.strip().removeprefix("./") for ln in lines[:4])
    more = f" and {len(lines) - 4} more" if len(lines) > 4 else ""
    return f"{shown}{more}."


# --- rendering -------------------------------------------------------------------------


def tool_call_message(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """An assistant tool call as the server's parser returns it (arguments as an object)."""
    call = {"type": "function", "function": {"name": name, "arguments": args}}
    return {"role": "assistant", "content": "", "tool_calls": [call]}


def chat_row(body: dict[str, Any], target: dict[str, Any], kind: str) -> Row:
    """An mlx-lm chat example: the request's messages plus the assistant target."""
    return {
        "messages": [*server_messages(body["messages"]), target],
        "tools": body.get("tools") or [],
        "kind": kind,
    }


async def render_spec(
    spec: Spec, ws: Workspace, rng: random.Random, concise: bool = False, answer: bool = True
) -> list[Row]:
    """Training rows for one spec: [direct answer] or [tool call, final answer];
    `answer` False: a tool query's call only (the tool is not run)."""

    if spec.tool is None:
        bodies = await capture_requests(spec.query, ws, None, spec.answer)
        return [chat_row(bodies[0], {"role": "assistant", "content": spec.answer}, "direct")]
    args = dict(spec.args or {})
    if not answer:  # the first request does not depend on the reply
        bodies = await capture_requests(spec.query, ws, None, "Done.")
        return [chat_row(bodies[0], tool_call_message(spec.tool, args), "tool_call")]
    bodies = await capture_requests(spec.query, ws, (spec.tool, args), "Done.")
    if len(bodies) != 2 or bodies[1]["messages"][-1].get("role") != "tool":
        raise ValueError(f"agent did not run the tool for {spec.query!r}")
    output = bodies[1]["messages"][-1]["content"]
    if output.startswith(("refused:", "error:")):
        raise ValueError(f"tool call for {spec.query!r} failed: {output[:200]}")
    text = final_answer(spec, output, rng, concise)
    return [
        chat_row(bodies[0], tool_call_message(spec.tool, args), "tool_call"),
        chat_row(bodies[1], {"role": "assistant", "content": text}, "tool_answer"),
    ]


async def render_specs(
    specs: list[Spec], ws: Workspace, seeds: list[float], concise: bool, answers: list[bool]
) -> list[list[Row]]:
    return [
        await render_spec(s, ws, random.Random(x), concise, a)
        for s, x, a in zip(specs, seeds, answers, strict=True)
    ]


def contiguous_shards(items: list[T], n: int) -> list[list[T]]:
    """`items` cut into at most `n` contiguous, near-equal, non-empty parts, in order."""
    size = -(-len(items) // max(1, min(n, len(items)))) or 1
    return [items[i : i + size] for i in range(0, len(items), size)]


Shard = tuple[list[Spec], Workspace, list[float], bool, list[bool]]


def _render_shard(shard: Shard) -> list[list[Row]]:
    return asyncio.run(render_specs(*shard))


def render_all(
    specs: list[Spec],
    ws: Workspace,
    seed: int,
    concise: bool = False,
    processes: int = 1,
    answers: list[bool] | None = None,
) -> list[list[Row]]:
    """Every spec's rows, in order. Each runs the real agent to capture its requests, a
    single-core job: `processes` > 1 splits the specs over that many worker processes (each
    spec keeps its own random seed, so the rows do not depend on the split). `answers`: per
    spec, whether a tool query's second turn is rendered too (default: all are)."""
    rng = random.Random(seed)
    seeds = [rng.random() for _ in specs]
    wanted = answers if answers is not None else [True] * len(specs)
    if processes <= 1 or len(specs) < 2:
        return _render_shard((specs, ws, seeds, concise, wanted))

    triples = contiguous_shards(list(zip(specs, seeds, wanted, strict=True)), processes)
    shards: list[Shard] = [
        ([s for s, _, _ in part], ws, [x for _, x, _ in part], concise, [a for _, _, a in part])
        for part in triples
    ]
    # spawn: a fork of this process would copy whatever threads and event loop it holds
    with ProcessPoolExecutor(len(shards), mp_context=get_context("spawn")) as pool:
        return [group for part in pool.map(_render_shard, shards) for group in part]


def user_queries(rows: Iterable[Row]) -> set[str]:
    """Every user message in `rows` (for the held-out leakage check)."""
    return {m["content"] for r in rows for m in r["messages"] if m["role"] == "user"}


def to_jsonl(rows: Iterable[Row]) -> str:
    """mlx-lm chat JSONL: `messages` and `tools` only (our `kind` tag stays out)."""
    return "".join(
        json.dumps({"messages": r["messages"], "tools": r["tools"]}, ensure_ascii=False) + "\n"
        for r in rows
    )


def read_jsonl(path: Path) -> list[Row]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# --- the bootstrap corpus ---------------------------------------------------------------


def answer_draws(specs: list[Spec], share: float, seed: int) -> list[bool]:
    """Which tool queries keep their second-turn answer: about `share` of them, a fixed
    choice per seed (drawn before rendering, so the dropped ones never run their tool)."""
    rng = random.Random(seed + 1)
    return [spec.tool is not None and rng.random() < share for spec in specs]


def drop_long_answers(groups: list[list[Row]], max_chars: int) -> list[list[Row]]:
    """Second-turn answers only where the tool output has at most `max_chars` characters
    (0: any); a tool query's call row and every direct answer always stay."""

    def fits(group: list[Row]) -> bool:
        if len(group) == 1 or not max_chars:
            return True
        return len(group[1]["messages"][-2].get("content") or "") <= max_chars

    return [g if fits(g) else g[:1] for g in groups]


def build_corpus(params: Params, out_dir: Path = paths.CORPUS) -> dict[str, int]:
    """Render train/valid/test JSONL; returns row counts per split and kind."""
    import datasets

    sizes = params.bootstrap.corpus
    seed = params.runtime.seed
    ws = Workspace(
        Path(params.agent.workspace), params.agent.tool_timeout_s, params.agent.tool_output_cap
    )
    total = sizes.train + sizes.valid + sizes.test
    # A direct query gives one row, a tool query its call plus (answer_share of the time)
    # the second-turn answer; make_specs draws a tool query tool_share of the time (answers
    # with long tool outputs are dropped, hence the margin).
    rows_per_spec = 1 + sizes.tool_share * sizes.answer_share
    specs = make_specs(
        int(total / rows_per_spec * 1.03) + 80,
        workspace_facts(ws.root),
        seed,
        never_trained(params),
        tool_share=sizes.tool_share,
        nonce_share=sizes.nonce_share,
        direct_answers=sizes.direct_answers,
    )
    answers = answer_draws(specs, sizes.answer_share, seed)
    groups = drop_long_answers(
        render_all(specs, ws, seed, processes=sizes.processes, answers=answers),
        sizes.answer_max_chars,
    )
    # Whole specs go to one split, so no query is in two splits.
    splits: dict[str, list[dict[str, Any]]] = {"test": [], "valid": [], "train": []}
    targets = {"test": sizes.test, "valid": sizes.valid, "train": sizes.train}
    names = iter(splits)
    current = next(names)
    for group in groups:
        while len(splits[current]) >= targets[current]:
            current = next(names, None)  # type: ignore[arg-type]
            if current is None:
                break
        if current is None:
            break
        splits[current].extend(group)
    counts: dict[str, int] = {}
    for split, rows in splits.items():
        if len(rows) < targets[split]:
            raise StageError(f"corpus: only {len(rows)} {split} rows, wanted {targets[split]}")
        # `datasets` shuffles with a fixed seed; rows stay JSON strings so Arrow does not merge
        # the two tools' schemas into one struct (that would add null keys to every schema).
        ds = datasets.Dataset.from_dict(
            {"row": [json.dumps(r) for r in rows], "kind": [r["kind"] for r in rows]}
        ).shuffle(seed=seed)
        decoded = [json.loads(r) for r in ds["row"]]
        write_text_atomic(out_dir / f"{split}.jsonl", to_jsonl(decoded))
        counts[f"corpus_{split}"] = len(rows)
        for kind in ("tool_call", "tool_answer", "direct"):
            counts[f"corpus_{split}_{kind}"] = sum(r["kind"] == kind for r in rows)
    return counts

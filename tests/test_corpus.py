"""The corpus is rendered from the agent's own requests and never contains held-out queries."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from punie.agent.production import capture_requests
from punie.agent.queries import load_queries
from punie.agent.tools import Workspace
from punie.models.corpus import (
    Spec,
    contains_any,
    final_answer,
    make_specs,
    normalise,
    read_jsonl,
    render_all,
    render_spec,
    user_queries,
    workspace_facts,
)
from punie.serving.render import server_messages

ROOT = Path(__file__).resolve().parents[1]
WS = Workspace(ROOT / "data/workspace")
QUERY_FILES = [ROOT / "data/queries/discrimination.yaml", ROOT / "data/queries/heldout.yaml"]
TOOL_SPEC = Spec("Where is UserSerializer defined?", "run_command",
                 {"command": 'grep -rn "class UserSerializer" .'})  # fmt: skip
DIRECT_SPEC = Spec("What is a mixin?", None, None, "Sure! A mixin is a small class. Bye!")


def _excluded() -> list[str]:
    return [q.query for p in QUERY_FILES for q in load_queries(p)]


def _tokenizer(model_dir: Path):
    from mlx_lm.tokenizer_utils import load

    return load(model_dir)


def test_rows_carry_exactly_the_agent_request() -> None:
    rows = asyncio.run(render_spec(TOOL_SPEC, WS, random.Random(0)))
    bodies = asyncio.run(
        capture_requests(TOOL_SPEC.query, WS, (TOOL_SPEC.tool, TOOL_SPEC.args), "Done.")
    )
    assert [r["kind"] for r in rows] == ["tool_call", "tool_answer"]
    for row, body in zip(rows, bodies, strict=True):
        assert row["tools"] == body["tools"]
        assert row["messages"][:-1] == server_messages(body["messages"])
    # The second turn's answer is written from the tool's real output.
    assert "accounts/serializers.py" in rows[1]["messages"][-1]["content"]


def test_training_prompt_equals_server_prompt(tiny_model_dir: Path) -> None:
    """What ChatDataset trains on starts with exactly the tokens the server prompts with."""
    from mlx_lm.tuner.datasets import ChatDataset

    tok = _tokenizer(tiny_model_dir)
    for spec in (TOOL_SPEC, DIRECT_SPEC):
        rows = asyncio.run(render_spec(spec, WS, random.Random(1)))
        bodies = asyncio.run(
            capture_requests(spec.query, WS, (spec.tool, spec.args) if spec.tool else None, "x")
        )
        for row, body in zip(rows, bodies, strict=True):
            # The server: process_message_content, then the template with the body's tools.
            served = tok.apply_chat_template(
                server_messages(body["messages"]), tools=body["tools"], add_generation_prompt=True
            )
            row = json.loads(json.dumps(row))  # through JSONL, as mlx_lm lora reads it
            tokens, offset = ChatDataset([row], tok, mask_prompt=True).process(row)
            assert tokens[:offset] == served
            assert len(tokens) > offset


def test_tool_call_target_renders_as_a_parsable_tool_call(tiny_model_dir: Path) -> None:
    from mlx_lm.tool_parsers.json_tools import parse_tool_call

    tok = _tokenizer(tiny_model_dir)
    row = asyncio.run(render_spec(TOOL_SPEC, WS, random.Random(0)))[0]
    prompt = tok.apply_chat_template(row["messages"][:-1], tools=row["tools"],
                                     add_generation_prompt=True, tokenize=False)  # fmt: skip
    full = tok.apply_chat_template(row["messages"], tools=row["tools"], tokenize=False)
    target = full[len(prompt) :]
    assert target.startswith("<tool_call>\n") and target.rstrip().endswith("</tool_call><|im_end|>")
    inner = target.split("<tool_call>", 1)[1].split("</tool_call>", 1)[0]
    assert parse_tool_call(inner) == {"name": "run_command", "arguments": TOOL_SPEC.args}


def test_a_query_wrapped_in_fillers_still_counts_as_the_excluded_one() -> None:
    excluded = ["Find all Django views", "List the test files"]
    assert contains_any("would you find all django views", excluded) == "Find all Django views"
    assert contains_any("So, list the test files, thanks!", excluded) == "List the test files"
    assert contains_any("Find all Django views in orders", excluded) == "Find all Django views"
    # whole words only: a longer word is another query
    assert contains_any("list the test filesystem", excluded) is None
    assert contains_any("Find all Django viewsets", excluded) is None


def test_generated_queries_never_contain_held_out_or_seed() -> None:
    excluded = _excluded()
    specs = make_specs(3000, workspace_facts(WS.root), seed=0, exclude=excluded)
    assert [s.query for s in specs if contains_any(s.query, excluded)] == []


def test_built_corpus_has_no_held_out_query() -> None:
    corpus = ROOT / "data/corpus"
    if not (corpus / "train.jsonl").exists():
        pytest.skip("data/corpus not built (run `punie-lab bootstrap`)")
    rows = [
        r for split in ("train", "valid", "test") for r in read_jsonl(corpus / f"{split}.jsonl")
    ]
    excluded = _excluded()
    assert sorted(q for q in user_queries(rows) if contains_any(q, excluded)) == []


def test_specs_are_deterministic_and_varied() -> None:
    facts = workspace_facts(WS.root)
    a = make_specs(200, facts, seed=3)
    assert a == make_specs(200, facts, seed=3)
    assert len({normalise(s.query) for s in a}) == 200
    tools = {s.tool for s in a}
    assert tools == {None, "run_command", "read_file"}


@pytest.mark.slow  # ~20 s: each worker process imports PydanticAI afresh
def test_rendering_split_over_processes_gives_the_same_rows_in_order() -> None:
    """Worker processes render shares of the specs; the rows (answers drawn from each
    spec's own seed) and their order must not depend on the split."""
    specs = make_specs(9, workspace_facts(WS.root), seed=4)
    one = render_all(specs, WS, seed=4)
    two = render_all(specs, WS, seed=4, processes=2)
    assert two == one
    assert [g[0]["messages"][1]["content"] for g in two] == [s.query for s in specs]


def test_tool_arguments_run_cleanly_on_the_workspace() -> None:
    from punie.agent.tools import read_file, run_command

    for spec in make_specs(150, workspace_facts(WS.root), seed=5):
        if spec.tool == "run_command":
            out = run_command(WS, spec.args["command"])
        elif spec.tool == "read_file":
            out = read_file(WS, spec.args["path"])
        else:
            continue
        assert not out.startswith(("refused:", "error:")), (spec, out)


def test_final_answer_uses_the_tool_output() -> None:
    out = "./orders/views.py:14:class OrderViewSet(viewsets.ModelViewSet):\n"
    text = final_answer(TOOL_SPEC, out, random.Random(0))
    assert "orders/views.py" in text and "14" in text and "OrderViewSet" in text
    empty = final_answer(TOOL_SPEC, "(no output, exit status 1)", random.Random(0))
    assert "no matches" in empty


def test_made_up_terms_are_answered_directly_in_real_english() -> None:
    from punie.models.corpus_text import DIRECT_OPENERS, UNKNOWN_TERM_ANSWER

    facts = workspace_facts(WS.root)
    specs = make_specs(200, facts, seed=0, tool_share=0.0, nonce_share=1.0)
    assert all(s.tool is None and UNKNOWN_TERM_ANSWER in s.answer for s in specs)
    assert all(s.answer.startswith(DIRECT_OPENERS) for s in specs)
    # the answer is fixed English text (plus a sign-off): it never repeats the made-up word
    assert all(s.answer.startswith(f"{DIRECT_OPENERS[0]} {UNKNOWN_TERM_ANSWER}") for s in specs)
    # the conciseness data set keeps real topics only
    concise = make_specs(50, facts, seed=0, tool_share=0.0, nonce_share=1.0, concise=True)
    assert not any(UNKNOWN_TERM_ANSWER in s.answer for s in concise)
    # none by default
    assert not any(UNKNOWN_TERM_ANSWER in s.answer for s in make_specs(100, facts, seed=0))


def test_direct_answers_are_sentences_without_control_tokens() -> None:
    from punie.models.tokenizer import MARKUP_TOKENS, SPECIAL_TOKENS

    specs = make_specs(600, workspace_facts(WS.root), seed=2, tool_share=0.0, nonce_share=0.1)
    for s in specs:
        assert s.answer.startswith("Great question! ") and s.answer.rstrip().endswith((".", "!"))
        assert not any(t in s.answer for t in SPECIAL_TOKENS + MARKUP_TOKENS), s.answer


def test_pydoc_answers_are_clean_first_sentences() -> None:
    from punie.models.corpus_topics import PYDOC_TERMS, pydoc_answer

    for key in dict(PYDOC_TERMS):
        text = pydoc_answer(key)
        assert text[0].isupper() or text[0].islower(), text
        assert text.endswith(".") and "::=" not in text and "*" not in text.replace("**", "")
        assert 3 <= len(text.split()) <= 40, (key, text)


def test_every_fixed_project_question_runs_cleanly() -> None:
    from punie.agent.tools import run_command
    from punie.models.corpus_text import PROJECT_PATTERNS, TOOL_FAMILIES, draw_tool

    assert set(TOOL_FAMILIES["project"].frames) == set(PROJECT_PATTERNS)
    facts = workspace_facts(WS.root)
    seen = set()
    rng = random.Random(0)
    while len(seen) < len(PROJECT_PATTERNS):
        core, _, args = draw_tool(rng, facts, "project")
        seen.add(core)
        out = run_command(WS, args["command"])
        assert not out.startswith(("refused:", "error:")), (core, args, out)


def test_call_openings_are_how_the_template_renders_each_tool_call(tiny_model_dir: Path) -> None:
    from punie.models.embedded import call_openings

    tok = _tokenizer(tiny_model_dir)
    read_spec = Spec("Open shop/urls.py", "read_file", {"path": "shop/urls.py"})
    for spec in (TOOL_SPEC, read_spec):
        row = asyncio.run(render_spec(spec, WS, random.Random(0)))[0]
        openings = call_openings(row["tools"])
        # the scaffold renders them as the served model's template does
        assert openings == call_openings(
            row["tools"], lambda m, t: tok.apply_chat_template(m, tools=t, tokenize=False)
        )
        assert len(openings) == 2
        prompt = tok.apply_chat_template(row["messages"][:-1], tools=row["tools"],
                                         add_generation_prompt=True, tokenize=False)  # fmt: skip
        full = tok.apply_chat_template(row["messages"], tools=row["tools"], tokenize=False)
        target = full[len(prompt) :]
        assert sum(target.startswith(o) for o in openings) == 1, target


def test_generic_direct_answers_are_one_sentence_per_kind_and_leave_the_queries_alone() -> None:
    from punie.models.corpus_text import GENERIC_ANSWERS, UNKNOWN_TERM_ANSWER

    facts = workspace_facts(WS.root)
    own = make_specs(300, facts, seed=5, tool_share=0.3, nonce_share=0.1)
    generic = make_specs(
        300, facts, seed=5, tool_share=0.3, nonce_share=0.1, direct_answers="generic"
    )
    assert [(s.query, s.tool, s.args) for s in generic] == [(s.query, s.tool, s.args) for s in own]
    direct = [s for s in generic if s.tool is None]
    sentences = {*GENERIC_ANSWERS.values(), UNKNOWN_TERM_ANSWER}
    assert all(sum(t in s.answer for t in sentences) == 1 for s in direct)
    assert len({s.answer for s in direct}) < 40  # a handful of sentences, with or without sign-off
    assert len({s.answer for s in own if s.tool is None}) > 100  # each topic's own definition

"""The first-token decision margin: figures from recorded probabilities, cases from the corpus,
and the probe itself on a real (tiny) mlx-lm model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from punie.commands.evaluate import training_cases
from punie.measurement.decision_probe import margin_figures
from punie.models.corpus import to_jsonl

SYSTEM = {"role": "system", "content": "You are Punie."}


def test_margin_figures_count_a_tool_decision_only_above_one_half() -> None:
    figs = margin_figures([0.9, 0.5, 0.2, 0.6], ["tool", "tool", "direct", "direct"])
    assert figs["queries"] == 4
    assert figs["first_token_accuracy"] == 0.5  # 0.5 on a tool query is not a tool call
    assert figs["p_tool_on_tool_mean"] == pytest.approx(0.7)
    assert figs["p_tool_on_direct_mean"] == pytest.approx(0.4)


def test_margin_figures_name_the_decisions_closest_to_the_edge() -> None:
    # Recorded on the embedded main model (2026-12-06): "What is an ORM?" at P(tool) 0.43 is
    # the held-out decision every concise LoRA candidate flipped first.
    p = [0.18, 0.426, 0.608, 0.237, 0.99]
    expects = ["tool", "direct", "tool", "direct", "tool"]
    queries = ["LoginView", "What is an ORM?", "async", "hash map", "views"]
    figs = margin_figures(p, expects, queries)
    assert figs["min_margin"] == pytest.approx(-0.32)  # negative: decided wrong
    assert [c["query"] for c in figs["closest"]] == ["LoginView", "What is an ORM?", "async"]
    assert figs["closest"][1] == {"query": "What is an ORM?", "expect": "direct", "p_tool": 0.426}
    assert margin_figures([0.9], ["tool"])["closest"] == []  # no queries given: no names


def test_margin_figures_leave_a_missing_kind_empty_and_refuse_mismatched_lengths() -> None:
    assert margin_figures([0.1], ["direct"])["p_tool_on_tool_mean"] is None
    with pytest.raises(ValueError, match="2 probabilities for 1 queries"):
        margin_figures([0.1, 0.2], ["direct"])


def test_training_cases_take_first_turn_questions_with_their_expected_decision(
    tmp_path: Path,
) -> None:
    call = {"role": "assistant", "content": "", "tool_calls": [{"type": "function"}]}
    answer = {"role": "assistant", "content": "Great question!"}
    rows = [
        {"messages": [SYSTEM, {"role": "user", "content": "find views"}, call], "tools": [1]},
        {"messages": [SYSTEM, {"role": "user", "content": "what is X"}, answer], "tools": [1]},
        {  # a second-turn answer: not a first decision
            "messages": [SYSTEM, {"role": "user", "content": "q"}, call, {"role": "tool"}, answer],
            "tools": [1],
        },
    ]
    path = tmp_path / "train.jsonl"
    path.write_text(to_jsonl(rows))
    cases = training_cases(path)
    assert [c["expect"] for c in cases] == ["tool", "direct"]
    assert cases[0]["body"] == {"messages": rows[0]["messages"][:2], "tools": [1]}
    assert cases[0]["query"] == "find views"
    assert training_cases(path, limit=1) == cases[:1]


def test_probe_reads_a_probability_per_set_from_a_real_model(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    body = {"messages": [SYSTEM, {"role": "user", "content": "find views"}], "tools": None}
    request = {
        "model": str(tiny_model_dir),
        "cases": [
            {"set": "a", "expect": "tool", "query": "find views", "body": body},
            {"set": "a", "expect": "direct", "body": body},
            {"set": "b", "expect": "direct", "body": body},
        ],
    }
    req, out = tmp_path / "req.json", tmp_path / "out.json"
    req.write_text(json.dumps(request))
    subprocess.run(
        [sys.executable, "-m", "punie.measurement.decision_probe", str(req), str(out)],
        check=True,
        timeout=120,
    )
    result = json.loads(out.read_text())
    assert sorted(result) == ["a", "b"]
    assert result["a"]["queries"] == 2
    p_tool, p_direct = result["a"]["p_tool_on_tool_mean"], result["a"]["p_tool_on_direct_mean"]
    assert 0.0 < p_tool < 1.0
    assert p_tool == pytest.approx(p_direct)  # the same prompt: the same probability
    assert result["a"]["first_token_accuracy"] == 0.5  # one of the two is right, whatever p is
    assert result["a"]["closest"][0]["query"] in ("find views", "")

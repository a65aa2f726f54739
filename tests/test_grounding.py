"""Grounding: does the answer after a tool call report what the tool returned?"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.toolsets import FunctionToolset

from punie.agent.grounding import facts, grounded
from punie.agent.queries import Query
from punie.measurement.records import summarize
from punie.measurement.timing import TimedModel, TimedToolset, run_query
from punie.models.conciseness import accuracy_regressions

GREP = (
    "orders/views.py:14:class OrderViewSet(viewsets.ModelViewSet):\n"
    "accounts/views.py:3:def login_view():"
)


def test_facts_are_paths_numbers_and_identifiers() -> None:
    found = facts(
        "I found 2 matches in orders/views.py: `OrderViewSet` and cancel_order; manage.py"
    )
    assert {"2", "orders/views.py", "OrderViewSet", "cancel_order", "manage.py"} <= found
    assert not facts("Sure! I ran the tool for you. Feel free to ask if anything is unclear.")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Of course! I found 2 matches; the first is orders/views.py line 14.", True),
        ("`OrderViewSet` is defined there.", True),
        ("Sure! I ran the tool for you. Let me know if you would like more details!", False),
        ("The views are in accounts/urls.py.", False),  # a path the tool never printed
    ],
)
def test_an_answer_is_grounded_when_it_states_a_fact_of_the_output(
    answer: str, expected: bool
) -> None:
    assert grounded(answer, [GREP], "Find all Django views") is expected


def test_facts_the_question_already_gave_do_not_count() -> None:
    query = "Show the file orders/views.py"
    assert grounded("Here is orders/views.py.", [GREP], query) is False
    assert grounded("orders/views.py: 2 lines.", [GREP], query) is True  # its line count


def test_nothing_to_judge_without_a_tool_result_or_an_answer() -> None:
    assert grounded("An answer.", [], "What is an ORM?") is None
    assert grounded(None, [GREP], "Find all Django views") is None
    assert grounded("", [GREP], "Find all Django views") is None


def _agent(answer: str) -> Agent:
    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if len(messages) == 1:
            return ModelResponse(parts=[ToolCallPart("run_command", {"command": "grep -rn View"})])
        return ModelResponse(parts=[TextPart(answer)])

    def run_command(command: str) -> str:
        """Pretend to grep."""
        return GREP

    tools: FunctionToolset[Any] = FunctionToolset()
    tools.add_function(run_command)
    return Agent(TimedModel(FunctionModel(model)), toolsets=[TimedToolset(tools)])


def test_records_judge_the_answer_against_the_tools_real_output() -> None:
    query = Query("Find all Django views", "tool", "run_command")
    good = asyncio.run(run_query(_agent("2 matches, e.g. OrderViewSet."), query, stream=False))
    bare = asyncio.run(run_query(_agent("Sure! I ran the tool for you."), query, stream=False))
    assert good.correct and bare.correct  # the decision cannot tell them apart
    assert good.grounded is True and bare.grounded is False
    assert "grounded" in good.to_dict()
    assert summarize([good, bare])["grounded_share"] == 0.5


def test_fewer_grounded_answers_is_a_regression() -> None:
    metrics = {"accuracy_main": 0.98, "accuracy_concise": 0.98}
    assert accuracy_regressions({**metrics, "grounded_share_main": 0.79}) == [
        "grounded_share 0.79 -> None"
    ]
    lost = {**metrics, "grounded_share_main": 0.79, "grounded_share_concise": 0.08}
    assert accuracy_regressions(lost) == ["grounded_share 0.79 -> 0.08"]
    kept = {**metrics, "grounded_share_main": 0.79, "grounded_share_concise": 0.83}
    assert accuracy_regressions(kept) == []

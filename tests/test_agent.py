"""The production agent: real tools on the sample workspace, robust to bad model replies."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx2
import pytest
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from punie.agent import tools
from punie.agent.production import (
    INSTRUCTIONS,
    build_agent,
    capture_requests,
    openai_model,
    tool_definitions,
)
from punie.agent.tools import Workspace, workspace_toolset

from .chat import completion

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = Workspace(ROOT / "data" / "workspace")


def scripted(first: ToolCallPart | None):
    """A model that makes `first` tool call (if any), then answers with what it got back."""

    def reply(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if first is not None and len(messages) == 1:
            return ModelResponse(parts=[first])
        last = messages[-1]
        assert isinstance(last, ModelRequest)
        part = last.parts[-1]
        # PydanticAI 2.x sends a rejected call back as a ToolReturnPart marked "retried"
        # (older versions used RetryPromptPart); either way the model gets another turn.
        if isinstance(part, RetryPromptPart):
            return ModelResponse(parts=[TextPart(f"retry: {part.model_response()}")])
        if isinstance(part, ToolReturnPart):
            said = "retry" if part.outcome == "retried" else "tool said"
            return ModelResponse(parts=[TextPart(f"{said}: {part.content}")])
        return ModelResponse(parts=[TextPart("direct answer")])

    return FunctionModel(reply)


def run(agent, prompt: str) -> str:
    return asyncio.run(agent.run(prompt)).output


def test_agent_calls_run_command_and_gets_real_output():
    call = ToolCallPart("run_command", {"command": 'grep -rn "async def" .'})
    out = run(build_agent(scripted(call), workspace_toolset(SAMPLE)), "Find async functions")
    assert out.startswith("tool said: ")
    assert "orders/tasks.py:15:async def notify_shipping" in out


def test_agent_calls_read_file():
    call = ToolCallPart("read_file", {"path": "accounts/serializers.py"})
    out = run(build_agent(scripted(call), workspace_toolset(SAMPLE)), "Show the serializers")
    assert "class UserSerializer(serializers.ModelSerializer):" in out


def test_direct_answer_needs_no_tool():
    out = run(build_agent(scripted(None), workspace_toolset(SAMPLE)), "What is DI?")
    assert out == "direct answer"


def test_refused_call_returns_a_message_and_the_run_goes_on():
    call = ToolCallPart("run_command", {"command": "rm -rf ."})
    out = run(build_agent(scripted(call), workspace_toolset(SAMPLE)), "Clean up")
    assert out.startswith("tool said: refused: 'rm' is not an allowed program")


@pytest.mark.parametrize(
    ("inner", "call", "message"),
    [
        ("_read_file", ToolCallPart("read_file", {"path": "README.md"}), "could not read"),
        ("_run_command", ToolCallPart("run_command", {"command": "ls"}), "could not run"),
    ],
)
@pytest.mark.fault
def test_tool_failure_becomes_an_error_message(
    monkeypatch: pytest.MonkeyPatch, inner: str, call: ToolCallPart, message: str
):
    def boom(*args: object) -> str:
        raise OSError("disk on fire")

    monkeypatch.setattr(tools, inner, boom)
    out = run(build_agent(scripted(call), workspace_toolset(SAMPLE)), "Look")
    assert out.startswith(f"tool said: error: {message} ")
    assert out.endswith("OSError: disk on fire")


@pytest.mark.parametrize(
    "bad_call",
    [
        ToolCallPart("run_command", {"cmd": "ls"}),  # wrong argument name
        ToolCallPart("run_command", '{"command": '),  # malformed JSON
        ToolCallPart("run_command", {"command": 42}),  # wrong type
        ToolCallPart("delete_everything", {}),  # unknown tool
    ],
)
@pytest.mark.fault
def test_bad_tool_call_is_retried_not_fatal(bad_call: ToolCallPart):
    out = run(build_agent(scripted(bad_call), workspace_toolset(SAMPLE)), "List files")
    assert out.startswith("retry: ")


def test_agent_settings_reach_the_request_body():
    bodies: list[dict] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        bodies.append(json.loads(request.content))
        return httpx2.Response(200, json=completion("ok"))

    async def go() -> None:
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(answer)) as client:
            model = openai_model("http://server.invalid/v1", http_client=client)
            agent = build_agent(
                model, workspace_toolset(SAMPLE), max_tokens=64, extra_body={"num_draft_tokens": 3}
            )
            await agent.run("hi")

    asyncio.run(go())
    (body,) = bodies
    assert body["model"] == "default_model"
    assert body["temperature"] == 0.0
    # mlx_lm server reads max_completion_tokens first, then max_tokens.
    assert body.get("max_completion_tokens", body.get("max_tokens")) == 64
    assert body["num_draft_tokens"] == 3
    assert body["messages"][0] == {"role": "system", "content": INSTRUCTIONS}


def test_capture_requests_direct_answer_is_one_request():
    bodies = asyncio.run(capture_requests("What is DI?", SAMPLE, None, "A design pattern."))
    (body,) = bodies
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["messages"][1]["content"] == "What is DI?"
    assert {t["function"]["name"] for t in body["tools"]} == {"run_command", "read_file"}


def test_capture_requests_tool_call_is_two_requests_with_real_tool_output():
    call = ("run_command", {"command": 'grep -rn "class .*View" .'})
    first, second = asyncio.run(capture_requests("Find all Django views", SAMPLE, call, "Four."))
    assert first["tools"] == second["tools"]
    roles = [m["role"] for m in second["messages"]]
    assert roles == ["system", "user", "assistant", "tool"]
    sent_call = second["messages"][2]["tool_calls"][0]["function"]
    assert sent_call["name"] == "run_command"
    assert json.loads(sent_call["arguments"]) == call[1]
    assert "accounts/views.py:14:class UserListView" in second["messages"][3]["content"]


def test_tool_definitions_are_the_schemas_the_agent_sends():
    defs = {d["function"]["name"]: d["function"] for d in tool_definitions(SAMPLE)}
    assert set(defs) == {"run_command", "read_file"}
    assert defs["run_command"]["parameters"]["required"] == ["command"]
    assert defs["read_file"]["parameters"]["required"] == ["path"]
    for d in defs.values():
        assert 0 < len(d["description"]) < 120  # short: prompt tokens cost latency


def test_thinking_goes_back_to_the_server_as_reasoning_content(tmp_path: Path) -> None:
    """mlx_lm server sends a `<think>` block in `reasoning`; Qwen3's chat template renders
    `reasoning_content` of earlier assistant turns, so that is the field the agent sends back."""
    import httpx2

    from punie.agent.production import build_agent, openai_model
    from punie.agent.tools import Workspace, workspace_toolset

    bodies: list[dict] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        bodies.append(json.loads(request.content))
        if len(bodies) == 1:
            call = {
                "id": "c0",
                "type": "function",
                "function": {"name": "run_command", "arguments": '{"command": "ls"}'},
            }
            message = {"role": "assistant", "content": "\n\n", "reasoning": "Look first.",
                       "tool_calls": [call]}  # fmt: skip
            finish = "tool_calls"
        else:
            message, finish = {"role": "assistant", "content": "Done."}, "stop"
        return httpx2.Response(200, json={
            "id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})  # fmt: skip

    async def run() -> None:
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(answer)) as client:
            agent = build_agent(
                openai_model("http://s/v1", http_client=client),
                workspace_toolset(Workspace(tmp_path)),
            )
            await agent.run("List the files")

    asyncio.run(run())
    sent = [m for m in bodies[1]["messages"] if m["role"] == "assistant"]
    assert sent and sent[0].get("reasoning_content") == "Look first."
    assert "reasoning" not in sent[0]

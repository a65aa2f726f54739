"""The production agent: Punie's instructions, its OpenAI-compatible model and its tools.

Every stage builds the agent here, so the profile, the speculative benchmark, the final
benchmark and the training corpus all see the same instructions and tool schemas.
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import TYPE_CHECKING, Any

import httpx2
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.profiles.openai import OpenAIModelProfile
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.settings import ModelSettings

from punie.agent.tools import Workspace, workspace_toolset

if TYPE_CHECKING:
    import httpx
    from pydantic_ai.models import Model
    from pydantic_ai.toolsets import AbstractToolset

MODEL_NAME = "default_model"

# Short on purpose: every prompt token is paid for on every turn of a small local model.
INSTRUCTIONS = (
    "You are Punie, a coding assistant for the project in the workspace. "
    "To find, search, list or show code, call a tool: run_command (grep, find, ls) "
    "or read_file (a file path). Answer general programming questions directly, "
    "without tools. Be brief."
)


def openai_model(
    base_url: str,
    *,
    model_name: str = MODEL_NAME,
    timeout_s: float = 120.0,
    http_client: httpx2.AsyncClient | httpx.AsyncClient | None = None,
) -> OpenAIChatModel:
    """A chat-completions model on an OpenAI-compatible server (mlx_lm server).

    mlx_lm server streams a thinking model's `<think>` block in the `reasoning` field; the
    model's thinking is sent back in `reasoning_content`, the field Qwen3's chat template
    renders as the `<think>` block of the assistant's earlier turns (PydanticAI would send it
    back as `reasoning`, which the template ignores). The OpenAI SDK speaks `httpx2`; a legacy
    `httpx.AsyncClient` still works (PydanticAI adapts it, with a deprecation warning).
    Without a client, one with `timeout_s` is made.
    """
    client = http_client or httpx2.AsyncClient(timeout=timeout_s)
    provider = OpenAIProvider(base_url=base_url, api_key="not-needed", http_client=client)
    profile = OpenAIModelProfile(
        openai_chat_thinking_field="reasoning_content",
        openai_chat_send_back_thinking_parts="field",
    )
    return OpenAIChatModel(model_name, provider=provider, profile=profile)


def build_agent(
    model: Model,
    toolset: AbstractToolset[Any],
    *,
    max_tokens: int | None = None,
    extra_body: dict[str, Any] | None = None,
) -> Agent[None, str]:
    """Punie's agent. `extra_body` goes into every request body (e.g. `num_draft_tokens`)."""

    settings = ModelSettings(temperature=0.0)
    if max_tokens is not None:
        settings["max_tokens"] = max_tokens
    if extra_body:
        settings["extra_body"] = dict(extra_body)
    return Agent(model, instructions=INSTRUCTIONS, toolsets=[toolset], model_settings=settings)


def tool_definitions(ws: Workspace) -> list[dict[str, Any]]:
    """The tools exactly as the agent sends them (OpenAI `tools` list). Not for use inside
    a running event loop: await `capture_requests` there instead."""
    bodies = asyncio.run(capture_requests("ping", ws, None, "pong"))
    return bodies[0]["tools"]


def _chat_response(message: dict[str, Any], finish_reason: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-capture",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL_NAME,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


async def capture_requests(
    prompt: str,
    ws: Workspace,
    tool_call: tuple[str, dict[str, Any]] | None,
    final_answer: str,
) -> list[dict[str, Any]]:
    """The JSON bodies the real agent POSTs for `prompt`, answered by a canned server.

    First reply: `tool_call` (name, arguments) if given, else `final_answer`; the tool then
    really runs on the workspace and the second reply is `final_answer`. The corpus builder
    renders training text from these bodies, so training sees exactly what serving sends.
    """
    bodies: list[dict[str, Any]] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        if not request.url.path.endswith("/chat/completions"):
            return httpx2.Response(404, json={"error": f"unexpected path {request.url.path}"})
        bodies.append(json.loads(request.content))
        if tool_call is not None and len(bodies) == 1:
            name, args = tool_call
            call = {
                "id": "call_0",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            return httpx2.Response(200, json=_chat_response(message, "tool_calls"))
        message = {"role": "assistant", "content": final_answer}
        return httpx2.Response(200, json=_chat_response(message, "stop"))

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(answer)) as client:
        model = openai_model("http://capture.invalid/v1", http_client=client)
        agent = build_agent(model, _toolset(ws))
        await agent.run(prompt)
    return bodies


# The corpus captures thousands of requests on one workspace; building its toolset (tool JSON
# schemas from the signatures) costs a sixth of each capture.
_toolset = functools.cache(workspace_toolset)

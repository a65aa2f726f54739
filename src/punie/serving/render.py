"""A chat request rendered to prompt tokens exactly as `mlx_lm server` renders it.

The server normalises the messages with its own `process_message_content`, then applies the
model's chat template with the request's tools, its `--chat-template-args` and the request's
`chat_template_kwargs` on top. The direct floor, the in-process probes, the corpus and the
distillation prompts all render through here, so what they measure or train on is what the
server sees.
"""

from __future__ import annotations

import copy
from typing import Any


def server_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy of `messages` as the server hands them to the chat template."""
    from mlx_lm.server import process_message_content

    out = copy.deepcopy(messages)
    process_message_content(out)
    return out


def prompt_ids(
    tokenizer: Any, body: dict[str, Any], template_args: dict[str, Any] | None = None
) -> list[int]:
    """Token ids of a chat-completions `body` (messages, tools, chat_template_kwargs) for an
    mlx-lm `TokenizerWrapper`, with the server's `--chat-template-args` as `template_args`."""
    args = {**(template_args or {}), **(body.get("chat_template_kwargs") or {})}
    ids = tokenizer.apply_chat_template(
        server_messages(body["messages"]),
        tools=body.get("tools") or None,
        add_generation_prompt=True,
        tokenize=True,
        **args,
    )
    return list(ids)

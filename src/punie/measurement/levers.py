"""The final stage's configurations: the seed's baseline, each lever added alone, all together.

A lever is one thing the lab does to make the agent faster:

- `thinking_off`: ask the chat template not to think (`enable_thinking: false` per request);
  only for a template with a thinking switch that `server.chat_template_args` leaves on.
- `loop_guard`: end a streamed answer that repeats itself (`punie.agent.loop_guard`).
- `server_path`: request fields and server patches that make the server's own path cheaper
  (`final.server_request`, `final.server_patches`).
- `speculative`: the draft and k the speculative stage chose, on a server patched so that its
  prompt cache can be reused (`speculative-cache-key`).
- `concise`: the model the retrain stage kept (with the concise draft when both apply).

Every configuration runs on its own server, so no one finds another's prompts in its cache.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from punie.params import LEVERS, Params
from punie.serving.config import ServerConfig

# Reusing a speculative generation's prompt cache is only safe with this patch.
SPECULATIVE_PATCHES = ("speculative-cache-key",)


def server_config(
    params: Params, model_path: str, draft: str | None = None, k: int | None = None
) -> ServerConfig:
    """The lab's server settings (params `server`) for one model, optionally with a draft."""
    s = params.server
    return ServerConfig(
        model_path=model_path,
        host=s.host,
        temp=s.temp,
        max_tokens=s.max_tokens,
        prompt_cache_size=s.prompt_cache_size,
        chat_template_args=s.chat_template_args or None,
        draft_model=draft,
        num_draft_tokens=k if draft else None,
    )


@dataclass(frozen=True)
class Setup:
    """One configuration to measure: a server and how the agent talks to it."""

    config: ServerConfig
    patches: tuple[str, ...] = ()  # `punie.serving.patching` diffs applied to its server
    request: Mapping[str, Any] = field(default_factory=dict)  # fields added to every request
    loop_guard_words: int | None = None  # the agent's loop guard window (None: off)
    levers: tuple[str, ...] = ()

    def describe(self) -> str:
        c = self.config
        parts = [f"`{c.model_path}`"]
        if c.draft_model:
            parts.append(f"draft `{c.draft_model}`, k = {c.num_draft_tokens}")
        if self.patches:
            parts.append("patches " + ", ".join(self.patches))
        if self.request:
            parts.append("request " + ", ".join(f"{k}={v}" for k, v in self.request.items()))
        if self.loop_guard_words:
            parts.append(f"loop guard {self.loop_guard_words} words")
        return "; ".join(parts)


@dataclass(frozen=True)
class Optimizations:
    """What the earlier stages decided, and what the model's template can do."""

    main: str
    concise: str | None = None  # the retrain stage's model, None when the main model stands
    draft: str | None = None  # the speculative stage's chosen draft (None: no draft pays)
    k: int | None = None
    concise_draft: str | None = None  # the draft distilled on the concise model's answers
    thinking_switch: bool = False  # the template thinks unless told `enable_thinking: false`


def not_applicable(params: Params, o: Optimizations) -> dict[str, str]:
    """Lever -> why it does not apply to this pipeline run."""
    why: dict[str, str] = {}
    if not o.thinking_switch:
        why["thinking_off"] = "the chat template has no thinking switch"
    elif params.server.chat_template_args.get("enable_thinking") is False:
        why["thinking_off"] = "server.chat_template_args already turns thinking off"
    if o.draft is None or o.k is None:
        why["speculative"] = "the speculative stage chose no draft"
    if o.concise is None:
        why["concise"] = "the retrain stage kept the main model"
    return why


def setup(params: Params, o: Optimizations, levers: Sequence[str]) -> Setup:
    """The baseline with `levers` applied."""
    unknown = [lever for lever in levers if lever not in LEVERS]
    if unknown:
        raise ValueError(f"unknown levers {unknown} (known: {', '.join(LEVERS)})")
    model = o.concise if "concise" in levers and o.concise else o.main
    draft = k = None
    if "speculative" in levers and o.draft and o.k:
        draft, k = o.draft, o.k
        if model == o.concise and o.concise_draft:
            draft = o.concise_draft
    config = server_config(params, model, draft, k)
    patches: list[str] = []
    request: dict[str, Any] = {}
    if "thinking_off" in levers:
        request["chat_template_kwargs"] = {"enable_thinking": False}
    if "server_path" in levers:
        patches += params.final.server_patches
        request |= params.final.server_request
    if draft:
        patches += SPECULATIVE_PATCHES
    guard = params.agent.loop_guard_words if "loop_guard" in levers else None
    return Setup(config, tuple(dict.fromkeys(patches)), request, guard, tuple(levers))


def ablation(params: Params, o: Optimizations) -> tuple[dict[str, Setup], dict[str, str]]:
    """`baseline`, one configuration per applicable lever of `final.levers` added alone, and
    `optimized` with all of them; plus the skipped levers with the reason."""
    skipped = {
        lever: why
        for lever, why in not_applicable(params, o).items()
        if lever in params.final.levers
    }
    levers = [lever for lever in params.final.levers if lever not in skipped]
    setups = {"baseline": setup(params, o, [])}
    setups |= {lever: setup(params, o, [lever]) for lever in levers}
    setups["optimized"] = setup(params, o, levers)
    return setups, skipped

"""Checks a main/draft pair passes before anything is loaded for minutes: present on this
machine, one tokenizer, a tool parser, a chat template that renders the agent's tools and
honours the thinking switch, and servers that fit in memory.

`punie-lab doctor` (`punie.commands.doctor`) prints every check; the stages that load models
run `fast_checks` first (models present, tokenizer shared: well under a second once the
tokenizers are cached), so a typo in params.yaml fails in seconds, not after minutes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from punie.errors import StageError
from punie.models.tokenizer import tokenizer_fingerprint
from punie.serving.hub import GB, ModelNotFound, resolve_model, size_text, weights_bytes

if TYPE_CHECKING:
    from punie.params import Params


@dataclass(frozen=True)
class Check:
    """One preflight check: what it found and, when it failed, what to do."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    skipped: bool = False  # not run: what it needs failed first (counts as passed)

    @classmethod
    def skip(cls, name: str, why: str) -> Check:
        return cls(name, True, why, skipped=True)

    def line(self) -> str:
        mark = "skip" if self.skipped else "ok  " if self.ok else "FAIL"
        return f"{mark} {self.name}: {self.detail}" + (f" -> {self.fix}" if self.fix else "")


# --- Present ------------------------------------------------------------------------------


def present(key: str, value: str) -> tuple[Check, Path | None]:
    """`value` (a directory or a hub id) resolved to a local directory, or the reason not."""
    try:
        path = resolve_model(value, key)
    except ModelNotFound as e:
        return Check(f"{key} present", False, str(e)), None
    size = weights_bytes(path)
    where = f"{value} -> {path}" if str(path) != value else value
    return Check(f"{key} present", True, f"{where} ({size_text(size)} of weights)"), path


# --- One tokenizer ------------------------------------------------------------------------


class TokenizerMismatch(ValueError):
    """The draft's vocabulary differs from the main model's: its tokens would be nonsense."""


def _vocab(model: Path) -> dict[str, int]:
    """The full vocabulary (with added tokens) of a local model directory."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(model), local_files_only=True)
    except Exception as e:  # transformers raises many types for a missing/bad tokenizer
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TokenizerMismatch(f"cannot load the tokenizer of {model}: {first}") from None
    if tok is None:
        raise TokenizerMismatch(f"no tokenizer found in {model}")
    return dict(tok.get_vocab())


def _local_fingerprint(model: Path) -> str | None:
    if not (model / "tokenizer.json").is_file():
        return None
    try:
        return tokenizer_fingerprint(model)
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.stat().st_size != b.stat().st_size:
            return False
        return hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    except OSError:
        return False


def check_draft_tokenizer(main: str | Path, draft: str | Path) -> None:
    """Raise TokenizerMismatch unless `draft` tokenizes exactly like `main` (each a local
    directory or a cached hub id, see `punie.serving.hub`).

    Directories with a tokenizer.json compare vocabulary fingerprints; anything else (other
    tokenizer formats) loads both tokenizers and compares vocabularies.
    """
    try:
        main_dir = resolve_model(str(main), "main model")
        draft_dir = resolve_model(str(draft), "draft model")
    except ModelNotFound as e:
        raise TokenizerMismatch(str(e)) from None
    if _same_file(main_dir / "tokenizer.json", draft_dir / "tokenizer.json"):
        return  # byte-identical (a model family's usual case): no 150k-token parse
    fm, fd = _local_fingerprint(main_dir), _local_fingerprint(draft_dir)
    if fm is not None and fd is not None:
        if fm != fd:
            raise TokenizerMismatch(
                f"draft model {draft} does not share the main model's tokenizer "
                f"(vocabulary fingerprint {fd} vs {fm} for {main}); a draft must use the "
                f"main model's tokenizer"
            )
        return
    vm, vd = _vocab(main_dir), _vocab(draft_dir)
    if vm != vd:
        only_main = len(vm.keys() - vd.keys())
        only_draft = len(vd.keys() - vm.keys())
        raise TokenizerMismatch(
            f"draft model {draft} does not share the main model's tokenizer ({main}): "
            f"vocab sizes {len(vd)} vs {len(vm)}, {only_draft} tokens only in the draft, "
            f"{only_main} only in the main model"
        )


def shared_tokenizer(main: Path, draft: Path) -> Check:
    name = "main and draft share a tokenizer"
    try:
        check_draft_tokenizer(main, draft)
    except TokenizerMismatch as e:
        return Check(name, False, str(e), "pick a draft of the main model's family")
    return Check(name, True, "same vocabulary")


def fast_checks(
    params: Params, main: str | None = None, draft: str | None = None, *, use_draft: bool = True
) -> tuple[Path, Path | None]:
    """The seconds-long part of `punie-lab doctor`, run at the start of a stage that loads
    models: `main` (default params models.main) and `draft` (default models.draft, unless
    `use_draft` is false) present, and sharing a tokenizer. Returns their local directories;
    raises StageError naming every failed check."""
    main = main or params.models.main
    draft = (draft or params.models.draft) if use_draft else None
    checks: list[Check] = []
    main_check, main_dir = present("models.main", main)
    checks.append(main_check)
    draft_dir = None
    if draft is not None:
        draft_check, draft_dir = present("models.draft", draft)
        checks.append(draft_check)
        if main_dir is not None and draft_dir is not None:
            checks.append(shared_tokenizer(main_dir, draft_dir))
    failed = [c for c in checks if not c.ok]
    if failed:
        raise StageError(
            "; ".join(c.detail + (f" ({c.fix})" if c.fix else "") for c in failed)
            + " [punie-lab doctor checks the whole pair]"
        )
    assert main_dir is not None
    return main_dir, draft_dir


def local_models(params: Params, *, use_draft: bool = False) -> Params:
    """`params` with models.main (and models.draft when `use_draft`) replaced by their local
    directories, after `fast_checks`: for a stage that hands models.* on to many loaders."""
    main_dir, draft_dir = fast_checks(params, use_draft=use_draft)
    update = {"main": str(main_dir)} | ({"draft": str(draft_dir)} if draft_dir else {})
    return params.model_copy(update={"models": params.models.model_copy(update=update)})


# --- Tool parser, chat template, thinking ---------------------------------------------------


def load_tokenizer(model: Path) -> Any:
    """mlx-lm's TokenizerWrapper for `model`, as `mlx_lm server` loads it (no weights)."""
    from mlx_lm.utils import load_tokenizer as mlx_load_tokenizer

    return mlx_load_tokenizer(Path(model))


def tool_parser(model: Path, tokenizer: Any) -> Check:
    """mlx-lm finds a tool parser (configured or inferred from the chat template): without
    one the server streams `<tool_call>` as text and the agent never calls a tool."""
    name = "mlx-lm tool parser"
    try:
        config = json.loads((model / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        config = {}
    configured = config.get("tool_parser_type") if isinstance(config, dict) else None
    parser = getattr(tokenizer, "init_kwargs", {}).get("tool_parser_type")
    if not tokenizer.has_tool_calling or parser is None:
        return Check(
            name,
            False,
            "mlx-lm infers no tool parser from this chat template: tool calls would reach the "
            "agent as text",
            'set "tool_parser_type" (e.g. "json_tools") in tokenizer_config.json',
        )
    how = "set in tokenizer_config.json" if configured else "inferred from the chat template"
    return Check(name, True, f"{parser} ({how}), calls open with {tokenizer.tool_call_start!r}")


def _render(tokenizer: Any, body: dict[str, Any], template_args: dict[str, Any]) -> str:
    from punie.serving.render import prompt_ids

    return tokenizer.decode(prompt_ids(tokenizer, body, template_args))


def template_renders_tools(
    tokenizer: Any, body: dict[str, Any], template_args: dict[str, Any]
) -> Check:
    """The agent's real first request renders with its tool schemas in the prompt (each tool
    named more often than in the same request without tools: the instructions name them
    too)."""
    name = "chat template renders the agent's tools"
    names = [t["function"]["name"] for t in body.get("tools") or []]
    if not names:
        return Check(name, False, "the agent's request carries no tools (capture failed?)")
    try:
        with_tools = _render(tokenizer, body, template_args)
        without = _render(tokenizer, {**body, "tools": None}, template_args)
    except Exception as e:  # a Jinja error in the template, a missing template
        return Check(name, False, f"rendering failed: {type(e).__name__}: {e}")
    lost = [n for n in names if with_tools.count(n) <= without.count(n)]
    if lost:
        return Check(
            name,
            False,
            f"the prompt does not carry the schema of {', '.join(lost)}",
            "use a chat template that renders `tools`",
        )
    return Check(name, True, f"{len(names)} tools in the prompt ({', '.join(names)})")


def thinking_switch(
    tokenizer: Any,
    body: dict[str, Any],
    template_args: dict[str, Any],
    max_tokens: int | None = None,
) -> Check:
    """For a model with thinking tokens, `enable_thinking` true and false render different
    prompts (so `server.chat_template_args` can switch it), and which one is configured.
    Thinking on is no failure, but its block counts against `max_tokens` (server.max_tokens):
    a turn that thinks past it ends with no answer (PydanticAI: OutputTokenLimitExceeded)."""
    name = "thinking switch"
    configured = template_args.get("enable_thinking")
    rest = {k: v for k, v in template_args.items() if k != "enable_thinking"}
    try:
        on = _render(tokenizer, body, {**rest, "enable_thinking": True})
        off = _render(tokenizer, body, {**rest, "enable_thinking": False})
        default = _render(tokenizer, body, rest)
    except Exception as e:
        return Check(name, False, f"rendering failed: {type(e).__name__}: {e}")
    thinks = bool(getattr(tokenizer, "has_thinking", False))
    if on == off:
        if thinks:
            return Check(
                name,
                False,
                f"the vocabulary has {tokenizer.think_start!r} but enable_thinking true and "
                "false render the same prompt: thinking cannot be switched off",
                "use the model's own chat template",
            )
        return Check(name, True, "no thinking tokens and the template ignores enable_thinking")
    if configured is None:
        state = "on" if default == on else "off" if default == off else "the template's default"
        setting = f"not set: thinking {state} (server.chat_template_args)"
        thinking = default == on
    else:
        setting = f"enable_thinking={str(bool(configured)).lower()} (server.chat_template_args)"
        thinking = bool(configured)
    detail = f"enable_thinking changes the prompt; configured: {setting}"
    if thinking and max_tokens is not None:
        detail += (
            f"; thinking counts against server.max_tokens ({max_tokens}): a turn that thinks "
            "past it ends with no answer"
        )
    return Check(name, True, detail)


# --- Memory ---------------------------------------------------------------------------------

# A server holds its weights plus the runtime and the KV caches of the prompts it keeps.
SERVER_OVERHEAD = 0.10  # share of the weights for KV caches and activations (estimate)
SERVER_RUNTIME_BYTES = 0.3 * GB  # Python, mlx and the HTTP server (measured ~0.13 GB on Linux)


def server_estimate(weights: int) -> float:
    """Estimated bytes of one server holding `weights` bytes of models."""
    return weights * (1 + SERVER_OVERHEAD) + SERVER_RUNTIME_BYTES


def memory(params: Params, main_bytes: int, draft_bytes: int) -> Check:
    """The largest set of servers the configured stages keep up at once, against
    `final.memory_budget_mb`; two big servers that do not fit name the settings that run
    one at a time."""
    name = "memory"
    budget = params.final.memory_budget_mb * 2**20
    one = server_estimate(main_bytes)
    pair = server_estimate(main_bytes + draft_bytes)
    at_once: dict[str, float] = {"main+draft server": pair}
    if params.speculative.interleave:
        at_once["speculative.interleave (main and main+draft)"] = one + pair
    if params.final.interleave:
        at_once["final.interleave (main and optimised+draft)"] = one + pair
    if params.conciseness.parallel_servers > 1:
        n = params.conciseness.parallel_servers
        at_once[f"conciseness.parallel_servers={n} ({n} main-size servers)"] = n * one
    figures = (
        f"weights main {size_text(main_bytes)}, draft {size_text(draft_bytes)}; "
        + ", ".join(f"{k} ~{size_text(v)}" for k, v in at_once.items())
        + f"; budget final.memory_budget_mb {params.final.memory_budget_mb:g} MB"
    )
    if pair > budget:
        return Check(name, False, figures, "a smaller main or draft model, or raise the budget")
    over = [k for k, v in at_once.items() if v > budget]
    if over:
        return Check(
            name,
            False,
            f"{figures}; over budget: {', '.join(over)}",
            "set speculative.interleave=false, final.interleave=false, "
            "conciseness.parallel_servers=1 (one server at a time)",
        )
    return Check(name, True, figures)

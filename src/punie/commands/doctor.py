"""`punie-lab doctor`: a preflight of the configured model pair that takes seconds.

One line per check, `ok`, `FAIL` (with what to do) or `skip` (a check it needs failed):
the main model and the draft present on this machine (a hub id in the local Hugging Face
cache, else `hf download <id>`), one tokenizer for both, a tool parser mlx-lm finds for the
main model, a chat template that renders the agent's real first request with its tools, the
thinking switch (`enable_thinking` true and false render different prompts for a thinking
model; which one `server.chat_template_args` sets), and a memory estimate of the servers the
stages keep up at once against `final.memory_budget_mb`. Loads tokenizers, never weights.
Exit 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from punie import paths
from punie.agent.queries import QueryFileError, load_queries
from punie.errors import ParamsError
from punie.params import load_params
from punie.serving import preflight
from punie.serving.hub import weights_bytes
from punie.serving.preflight import Check

if TYPE_CHECKING:
    from punie.params import Params

# The request rendered when the seed query file cannot be read.
FALLBACK_QUERY = "Find all Django views in the project."


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--main", help="main model: a directory or a hub id (default: params)")
    parser.add_argument(
        "--draft", help="draft model: a directory, a hub id or `none` (default: params)"
    )
    parser.add_argument(
        "-S",
        "--set-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="check params.yaml as `dvc exp run -S KEY=VALUE` would change it (repeatable)",
    )


def overridden_params(overrides: list[str]) -> Params:
    """params.yaml with `dvc exp run -S` overrides applied by DVC's own code (a copy: the
    file itself is left alone), so the doctor checks what the experiment will run."""
    if not overrides:
        return load_params()
    from dvc.utils.hydra import apply_overrides

    with tempfile.TemporaryDirectory(prefix="punie-doctor-") as tmp:
        copy = Path(tmp) / "params.yaml"
        shutil.copyfile(paths.PARAMS, copy)
        try:
            apply_overrides(str(copy), overrides)
        except Exception as e:  # dvc raises its own InvalidArgumentError
            cause = f" ({e.__cause__})" if e.__cause__ else ""
            raise ParamsError(f"-S {' -S '.join(overrides)}: {e}{cause}") from None
        return load_params(copy)


def run(name: str, args: argparse.Namespace) -> int:
    params = overridden_params(args.set_param)
    main = args.main or params.models.main
    draft = params.models.draft if args.draft is None else args.draft
    draft = None if draft in (None, "", "none", "null") else draft
    template_args = dict(params.server.chat_template_args)
    print(
        f"doctor: models.main={main} models.draft={draft} "
        f"server.chat_template_args={json.dumps(template_args)}",
        flush=True,
    )
    t0 = time.perf_counter()
    checks = []
    for check in diagnose(params, main, draft):
        print(check.line(), flush=True)
        checks.append(check)
    failed = [c for c in checks if not c.ok]
    took = time.perf_counter() - t0
    verdict = f"{len(failed)} of {len(checks)} checks failed" if failed else "all checks passed"
    print(f"doctor: {verdict} ({took:.1f} s)")
    return 1 if failed else 0


def first_request(params: Params) -> dict[str, Any]:
    """The body the agent POSTs first for the seed set's first query (a canned server
    answers; nothing is loaded). Imported here: PydanticAI takes seconds to import, and a
    missing model should fail without waiting for it."""
    from punie.agent.production import capture_requests
    from punie.agent.tools import Workspace

    try:
        query = load_queries(params.queries.seed)[0].query
    except QueryFileError:
        query = FALLBACK_QUERY
    agent = params.agent
    ws = Workspace(Path(agent.workspace), agent.tool_timeout_s, agent.tool_output_cap)
    return asyncio.run(capture_requests(query, ws, None, "ok"))[0]


def diagnose(params: Params, main: str, draft: str | None):
    """The checks, one at a time (each printed as it finishes)."""
    template_args = dict(params.server.chat_template_args)
    main_check, main_dir = preflight.present("models.main", main)
    yield main_check
    draft_dir = None
    if draft is None:
        yield Check.skip("models.draft present", "no draft configured (models.draft: null)")
    else:
        draft_check, draft_dir = preflight.present("models.draft", draft)
        yield draft_check
    name = "main and draft share a tokenizer"
    if main_dir is not None and draft_dir is not None:
        yield preflight.shared_tokenizer(main_dir, draft_dir)
    else:
        yield Check.skip(name, "needs both models present")
    tokenizer_checks = (
        "mlx-lm tool parser",
        "chat template renders the agent's tools",
        "thinking switch",
    )
    if main_dir is None:
        for n in tokenizer_checks:
            yield Check.skip(n, "needs the main model present")
    else:
        try:
            tokenizer = preflight.load_tokenizer(main_dir)
        except Exception as e:  # transformers and mlx-lm raise many kinds for a bad tokenizer
            yield Check("main tokenizer loads", False, f"{type(e).__name__}: {e}")
            for n in tokenizer_checks:
                yield Check.skip(n, "needs the main model's tokenizer")
        else:
            yield preflight.tool_parser(main_dir, tokenizer)
            body = first_request(params)
            yield preflight.template_renders_tools(tokenizer, body, template_args)
            yield preflight.thinking_switch(
                tokenizer, body, template_args, params.server.max_tokens
            )
    if main_dir is None:
        yield Check.skip("memory", "needs the main model present (its weights' size)")
    else:
        yield preflight.memory(params, weights_bytes(main_dir), weights_bytes(draft_dir))

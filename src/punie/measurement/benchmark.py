"""Run the same queries through the production agent on several server configurations.

Used by the retrain accuracy check and the final benchmark. With `interleave`, every server
is up at once and each query runs on every configuration back to back (A B A B ...), so slow
drift of a shared CPU hits all configurations alike. Without it, configurations run one
after the other, one server at a time: the only way two 20 GB models fit in 32 GB.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from punie.agent.queries import WARMUP
from punie.measurement.levers import Setup
from punie.measurement.memory import ServerMemorySampler
from punie.measurement.timing import run_case, run_query, timed_agent
from punie.serving.config import ServerConfig
from punie.serving.hub import GB, is_hub_id, resolve_model, weights_bytes
from punie.serving.server import ServerError, ServerProcess

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from pydantic_ai import Agent
    from rich.console import Console

    from punie.measurement.records import QueryRecord
    from punie.measurement.timing import Case
    from punie.params import Params


def ready_timeout(params: Params, config: ServerConfig) -> tuple[float, str]:
    """How long a server of `config` may take to answer its first completion, and a note
    for the error when it does not: `server.ready_timeout_s` plus
    `server.ready_timeout_per_gb_s` per GB of the weights it loads (main, draft and adapter
    safetensors on disk; the stages pass resolved local directories). A wait sized for a
    2 MB model kills a healthy 20 GB load, which reads from disk for minutes."""
    s = params.server
    size = sum(
        weights_bytes(m) for m in (config.model_path, config.draft_model, config.adapter_path)
    )
    timeout = s.ready_timeout_s + s.ready_timeout_per_gb_s * size / GB
    note = (
        f"the wait was sized for {size / GB:.2f} GB of weights on disk: "
        f"server.ready_timeout_s {s.ready_timeout_s:g} s + server.ready_timeout_per_gb_s "
        f"{s.ready_timeout_per_gb_s:g} s per GB; raise server.ready_timeout_per_gb_s for a "
        "slow disk"
    )
    return timeout, note


def local_config(config: ServerConfig) -> ServerConfig:
    """`config` with any hub id (main, draft) replaced by its directory in the local cache:
    the server is never the one to resolve or download a model (`punie.serving.hub`)."""
    update = {
        field: str(resolve_model(value, field))
        for field in ("model_path", "draft_model")
        if (value := getattr(config, field)) is not None and is_hub_id(value)
    }
    return config.model_copy(update=update) if update else config


def params_server(
    params: Params, config: ServerConfig, log_path: Path | None, patches: Sequence[str] = ()
) -> ServerProcess:
    """A `ServerProcess` with the lab's settings: local model directories (`local_config`),
    the readiness wait sized by `ready_timeout`, the BLAS of params `runtime.blas`, and the
    named `punie.serving.patching` diffs. Every server a stage starts comes from here."""
    config = local_config(config)
    timeout, note = ready_timeout(params, config)
    return ServerProcess(
        config,
        log_path=log_path,
        ready_timeout_s=timeout,
        blas=params.runtime.blas,
        ready_note=note,
        patches=patches,
    )


def params_agent(
    params: Params, base_url: str, setup: Setup | None = None
) -> AbstractAsyncContextManager[Agent[None, str]]:
    """`timing.timed_agent` with the lab's agent and server settings (params `agent`,
    `server`), and a configuration's request fields and loop guard."""
    return timed_agent(
        base_url,
        Path(params.agent.workspace),
        request_timeout_s=params.server.request_timeout_s,
        tool_timeout_s=params.agent.tool_timeout_s,
        tool_output_cap=params.agent.tool_output_cap,
        max_tokens=params.server.max_tokens,
        extra_body=dict(setup.request) if setup else None,
        loop_guard_words=setup.loop_guard_words if setup else None,
    )


@dataclass
class ConfigRun:
    """What one configuration produced: its records and its server's peak memory."""

    label: str
    setup: Setup
    records: list[QueryRecord] = field(default_factory=list)
    peak_rss_mb: float = 0.0

    @property
    def config(self) -> ServerConfig:
        return self.setup.config


@dataclass
class _Live:
    run: ConfigRun
    server: ServerProcess
    memory: ServerMemorySampler
    agent: Any


async def _start(
    stack: contextlib.AsyncExitStack, params: Params, run: ConfigRun, log_dir: Path
) -> _Live:
    log = log_dir / f"{run.label}-server.log"
    server = params_server(params, run.config, log, run.setup.patches)
    await stack.enter_async_context(server)
    memory = stack.enter_context(ServerMemorySampler(server.pid))
    agent = await stack.enter_async_context(params_agent(params, server.base_url, run.setup))
    # One untimed query first: the first request pays for lazy loading and compilation.
    await run_query(agent, WARMUP, timeout_s=_query_timeout(params))
    return _Live(run, server, memory, agent)


def _query_timeout(params: Params) -> float:
    return params.server.request_timeout_s * params.profile.max_turns


async def _run_one(params: Params, live: _Live, case: Case, repeat: int) -> QueryRecord:
    record = await run_case(
        live.agent,
        case,
        repeat,
        timeout_s=_query_timeout(params),
        max_turns=params.profile.max_turns,
    )
    if record.error is not None and not live.server.is_alive():
        raise ServerError(
            f"{live.run.label} server died during {case.label}: {record.error}; "
            f"log: {live.server.log_path}"
        )
    if record.error is not None:
        # A frozen server would cost every later query its full timeout.
        live.server.check_responsive(after=f"{live.run.label} {case.label}: {record.error}")
    live.run.records.append(record)
    return record


def record_printer(console: Console, label_width: int) -> Callable[[str, QueryRecord], None]:
    """An `on_record` that prints one progress line per query: configuration, query, time,
    completion tokens and the verdict."""

    def show(label: str, r: QueryRecord) -> None:
        mark = "ok" if r.correct else ("ERROR " + r.error[:60] if r.error else "WRONG")
        console.print(
            f"  {label:<{label_width}} {r.label:<11} {r.total_s:6.2f}s "
            f"{r.completion_tokens:4d} tok {mark}"
        )

    return show


async def measure_configs(
    params: Params,
    configs: Mapping[str, Setup | ServerConfig],
    cases: Sequence[Case],
    *,
    repeats: int,
    interleave: bool,
    log_dir: Path,
    on_record: Callable[[str, QueryRecord], None] | None = None,
    concurrent: int = 1,
) -> dict[str, ConfigRun]:
    """Every case `repeats` times on every configuration; records keep the case order.

    `interleave`: every server up at once, one query at a time, configurations alternating.
    Otherwise one server per configuration, `concurrent` of them running at the same time:
    only for comparing answers (accuracy, tokens), since they share the machine's cores.
    """
    runs = {
        label: ConfigRun(label, c if isinstance(c, Setup) else Setup(c))
        for label, c in configs.items()
    }
    log_dir.mkdir(parents=True, exist_ok=True)

    def note(label: str, record: QueryRecord) -> None:
        if on_record is not None:
            on_record(label, record)

    if interleave:
        async with contextlib.AsyncExitStack() as stack:
            lives = [await _start(stack, params, run, log_dir) for run in runs.values()]
            for repeat in range(repeats):
                for case in cases:
                    for live in lives:
                        note(live.run.label, await _run_one(params, live, case, repeat))
            for live in lives:
                live.server.check_alive()
                live.run.peak_rss_mb = live.memory.peak_rss_mb
    else:
        slots = asyncio.Semaphore(max(concurrent, 1))

        async def one(run: ConfigRun) -> None:
            async with slots, contextlib.AsyncExitStack() as stack:
                live = await _start(stack, params, run, log_dir)
                for repeat in range(repeats):
                    for case in cases:
                        note(run.label, await _run_one(params, live, case, repeat))
                live.server.check_alive()
                run.peak_rss_mb = live.memory.peak_rss_mb

        tasks = [asyncio.ensure_future(one(run)) for run in runs.values()]
        try:
            await asyncio.gather(*tasks)
        except BaseException:  # the first error as raised; the others stop their servers
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
    return runs

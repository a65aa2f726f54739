"""In-process speculative decoding measurement with mlx-lm (run it in a subprocess).

`python -m punie.measurement.spec_probe REQUEST.json RESULT.json` loads the main and draft
models, renders the recorded agent request bodies with the chat template exactly as
`mlx_lm server` does, and for every prompt, in turn (so drift on a busy machine falls on all alike):

- greedy decoding with the main model alone and with the draft alone (each model's own
  per-token decode time: c = draft / main);
- speculative decoding for every k, counting `from_draft` per token (acceptance) and
  checking the tokens equal the main model's greedy tokens.

It also times one main-model pass over k+1 tokens against a single-token pass (the verify
cost Leviathan et al. take as 1). `punie.measurement.spec_probe.run_probe` starts it with OpenBLAS
preloaded (`punie.serving.runtime.run_json`, through the launcher); its progress lines
(`acceptance probe i/N prompts, ETA m:ss`, stderr) reach the console as they come.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from punie.measurement.progress import Progress, show_progress
from punie.measurement.speculative import (
    TURN_KINDS,
    Acceptance,
    acceptance_from_flags,
    first_difference_index,
    main_passes,
    turn_kind,
)
from punie.serving.render import prompt_ids
from punie.serving.runtime import run_json, worker_main


def probe_body(request: dict[str, Any]) -> dict[str, Any]:
    """The part of a recorded chat-completions request that the chat template renders."""
    return {"messages": request["messages"], "tools": request.get("tools")}


@dataclass(frozen=True)
class ProbeRequest:
    main: str
    draft: str
    bodies: list[dict[str, Any]]  # recorded chat-completions bodies (messages, tools)
    ks: list[int]
    max_tokens: int
    chat_template_args: dict[str, Any] = field(default_factory=dict)
    verify_reps: int = 40


@dataclass
class _Run:
    tokens: list[int]
    flags: list[bool]
    decode_s: float  # from the first token to the last: excludes prefill
    truncated: bool


def _generate(model: Any, tokenizer: Any, prompt: list[int], max_tokens: int, **kw: Any) -> _Run:
    import mlx.core as mx
    from mlx_lm import stream_generate

    tokens: list[int] = []
    flags: list[bool] = []
    stamps: list[float] = []
    finish = None
    for r in stream_generate(model, tokenizer, mx.array(prompt), max_tokens=max_tokens, **kw):
        stamps.append(time.perf_counter())
        tokens.append(int(r.token))
        flags.append(bool(r.from_draft))
        finish = r.finish_reason
    return _Run(tokens, flags, stamps[-1] - stamps[0], finish == "length")


def _verify_cost(model: Any, prompt: list[int], ns: list[int], reps: int) -> dict[int, float]:
    """Median time of one model pass over n new tokens, for each n (seconds)."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

    cache = make_prompt_cache(model)
    mx.eval(model(mx.array(prompt)[None], cache=cache))
    times: dict[int, list[float]] = {n: [] for n in ns}
    for rep in range(reps + 3):
        for n in ns:
            y = mx.array([prompt[-n:]])
            t = time.perf_counter()
            mx.eval(model(y, cache=cache))
            if rep >= 3:  # the first passes warm up kernels and allocations
                times[n].append(time.perf_counter() - t)
            trim_prompt_cache(cache, n)
    return {n: statistics.median(ts) for n, ts in times.items()}


def probe(req: ProbeRequest) -> dict[str, Any]:
    from mlx_lm import load

    loaded = load(req.main)
    model, tokenizer = loaded[0], loaded[1]
    draft = load(req.draft)[0]
    prompts = [prompt_ids(tokenizer, b, req.chat_template_args) for b in req.bodies]
    if not prompts:
        raise ValueError("no prompts to probe")
    # Warm up every path once so compilation and allocation are not timed.
    _generate(model, tokenizer, prompts[0], 8)
    _generate(draft, tokenizer, prompts[0], 8)
    _generate(model, tokenizer, prompts[0], 8, draft_model=draft, num_draft_tokens=req.ks[0])

    main_s = main_n = draft_s = draft_n = 0.0
    spec: dict[int, dict[str, Any]] = {
        k: {
            "acc": Acceptance(k),
            "kinds": {kind: Acceptance(k) for kind in TURN_KINDS},
            "s": 0.0,
            "n": 0,
            "passes": 0,
            "mismatches": 0,
            "example": None,
        }
        for k in req.ks
    }
    tool_start = getattr(tokenizer, "tool_call_start", None) or "<tool_call>"
    kinds = {kind: {"prompts": 0, "tokens": 0} for kind in TURN_KINDS}
    progress = Progress(len(prompts))
    for i, (body, prompt) in enumerate(zip(req.bodies, prompts, strict=True)):
        base = _generate(model, tokenizer, prompt, req.max_tokens)
        main_s += base.decode_s
        main_n += len(base.tokens) - 1
        kind = turn_kind(body["messages"], tokenizer.decode(base.tokens), tool_start)
        kinds[kind]["prompts"] += 1
        kinds[kind]["tokens"] += len(base.tokens)
        own = _generate(draft, tokenizer, prompt, req.max_tokens)
        draft_s += own.decode_s
        draft_n += len(own.tokens) - 1
        for k in req.ks:
            run = _generate(
                model, tokenizer, prompt, req.max_tokens, draft_model=draft, num_draft_tokens=k
            )
            s = spec[k]
            acc = acceptance_from_flags(run.flags, k, truncated=run.truncated)
            s["acc"] = s["acc"] + acc
            s["kinds"][kind] = s["kinds"][kind] + acc
            s["s"] += run.decode_s
            s["n"] += len(run.tokens) - 1
            # decode_s starts when the first step's tokens arrive: it times the other steps.
            s["passes"] += max(main_passes(run.flags) - 1, 0)
            if run.tokens != base.tokens:
                s["mismatches"] += 1
                if s["example"] is None:
                    at = first_difference_index(base.tokens, run.tokens)
                    s["example"] = {
                        "prompt_index": i,
                        "token_offset": at,
                        "common": tokenizer.decode(base.tokens[max(0, at - 20) : at]),
                        "main": tokenizer.decode(base.tokens[at : at + 20]),
                        "speculative": tokenizer.decode(run.tokens[at : at + 20]),
                    }
        progress.report(i + 1, "acceptance probe", "prompts")
    main_tok = main_s / max(main_n, 1)
    draft_tok = draft_s / max(draft_n, 1)
    longest = max(prompts, key=len)
    verify = _verify_cost(model, longest, sorted({1, *(k + 1 for k in req.ks)}), req.verify_reps)
    by_k = {}
    for k, s in spec.items():
        spec_tok = s["s"] / max(s["n"], 1)
        step = s["s"] / s["passes"] / main_tok if s["passes"] and main_tok else None
        by_k[str(k)] = {
            **s["acc"].summary(),
            "by_kind": {kind: {**kinds[kind], **acc.summary()} for kind, acc in s["kinds"].items()},
            "spec_token_s": spec_tok,
            "inprocess_speedup": main_tok / spec_tok if spec_tok else 0.0,
            # One speculative step's measured time, in single-token main passes.
            "step_cost": step,
            "verify_cost": verify[k + 1] / verify[1],
            "token_mismatches": s["mismatches"],
            "mismatch_example": s["example"],
        }
    return {
        "prompts": len(prompts),
        "prompt_tokens_mean": statistics.mean(len(p) for p in prompts),
        "main_token_s": main_tok,
        "draft_token_s": draft_tok,
        "main_decode_tokens": int(main_n),
        "draft_decode_tokens": int(draft_n),
        "cost_ratio": draft_tok / main_tok if main_tok else 0.0,
        "verify_pass_s": {str(n): t for n, t in verify.items()},
        "by_k": by_k,
    }


class ProbeError(RuntimeError):
    """The probe subprocess failed; the message quotes the end of its output."""


def run_probe(
    req: ProbeRequest, workdir: Path, *, blas: str = "auto", timeout_s: float = 1800
) -> dict[str, Any]:
    """Run `probe` in a subprocess with the mlx environment (OpenBLAS preloaded)."""

    # Through the launcher: the child dies with this process, however it dies.
    return run_json(
        "punie.measurement.spec_probe",
        asdict(req),
        workdir,
        what="acceptance probe",
        error=ProbeError,
        blas=blas,
        timeout_s=timeout_s,
        on_stderr=show_progress,  # `acceptance probe i/N prompts, ETA m:ss`
    )


def _work(req: dict[str, Any]) -> dict[str, Any]:
    return probe(ProbeRequest(**req))


if __name__ == "__main__":
    sys.exit(worker_main("punie.measurement.spec_probe", _work, sys.argv[1:]))

"""Speculative decoding core: acceptance from draft flags, expected speedup, the choice rule.

Pure functions on recorded numbers (no mlx, no server), so the stage and the tests share them.
The in-process measurement that produces the numbers lives in `punie.measurement.spec_probe`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# The speculative stage's decision, read by concise_draft and final (see `Choice`).


# The speculative stage's result file of the draft server asked for k=0 (the control).
CONTROL_FILE = "control_k0.json"


@dataclass(frozen=True)
class Acceptance:
    """Draft acceptance counted over complete speculative steps.

    One step = the draft proposes k tokens, the main model verifies them in one pass, keeps
    the longest agreeing prefix and adds one token of its own.
    """

    k: int
    steps: int = 0
    accepted: int = 0  # draft tokens the main model kept
    rejections: int = 0  # steps that ended on a rejected draft token (fewer than k kept)

    @property
    def drafted(self) -> int:
        return self.steps * self.k

    @property
    def rate(self) -> float:
        """Per-token acceptance probability a (maximum likelihood under Leviathan's i.i.d.
        model: each step is a run of accept/reject trials that stops at the first reject)."""
        trials = self.accepted + self.rejections
        return self.accepted / trials if trials else 0.0

    @property
    def accepted_fraction(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def mean_accepted(self) -> float:
        """Mean draft tokens kept per step."""
        return self.accepted / self.steps if self.steps else 0.0

    @property
    def tokens_per_step(self) -> float:
        """Tokens emitted per main-model pass: the kept drafts plus the main model's own
        (vLLM's mean acceptance length, `mean_acceptance_length`)."""
        return (self.accepted + self.steps) / self.steps if self.steps else 0.0

    def __add__(self, other: Acceptance) -> Acceptance:
        if other.k != self.k:
            raise ValueError(f"cannot add acceptance for k={self.k} and k={other.k}")
        return Acceptance(
            self.k,
            self.steps + other.steps,
            self.accepted + other.accepted,
            self.rejections + other.rejections,
        )

    def summary(self) -> dict[str, float | int]:
        return {
            "k": self.k,
            "steps": self.steps,
            "drafted": self.drafted,
            "accepted": self.accepted,
            "rejections": self.rejections,
            "acceptance_rate": self.rate,
            "accepted_fraction": self.accepted_fraction,
            "mean_accepted_per_step": self.mean_accepted,
            "tokens_per_step": self.tokens_per_step,
        }


def mean_acceptance_length(accepted: int, steps: int) -> float | None:
    """vLLM's mean acceptance length: 1 + accepted draft tokens per speculative step, i.e.
    tokens per main-model pass (`Acceptance.tokens_per_step`); None without a step."""
    return 1.0 + accepted / steps if steps else None


def draft_acceptance_rate(accepted: int, drafted: int) -> float | None:
    """vLLM's draft acceptance rate: accepted / drafted tokens (`Acceptance.accepted_fraction`).
    Not Leviathan's per-token a (`Acceptance.rate`), which counts only the trials up to each
    step's first rejection: drafts after a rejection are never checked, so this rate is the
    lower of the two whenever a step rejects before its last draft. None without a drafted
    token."""
    return accepted / drafted if drafted else None


def vllm_acceptance(summary: Mapping[str, Any]) -> dict[str, float | None]:
    """`mean_acceptance_length` and `draft_acceptance_rate` from an `Acceptance.summary()`
    (or any mapping with `steps`, `drafted` and `accepted`; missing counts give None)."""
    steps, drafted, accepted = (summary.get(key) for key in ("steps", "drafted", "accepted"))
    return {
        "mean_acceptance_length": (
            mean_acceptance_length(accepted, steps) if accepted is not None and steps else None
        ),
        "draft_acceptance_rate": (
            draft_acceptance_rate(accepted, drafted) if accepted is not None and drafted else None
        ),
    }


def acceptance_from_flags(flags: Sequence[bool], k: int, *, truncated: bool = False) -> Acceptance:
    """Count steps from mlx-lm's per-token `from_draft` flags of one generation.

    Each step emits its kept draft tokens (True) then one main-model token (False), so a
    False closes a step. Trailing Trues (generation stopped at EOS inside a run of kept
    drafts, typically a tool call's closing tag) are kept trials of one more step: that step
    cost a main pass, and without it a tool call's kept share came out above 1. When the
    generation hit max_tokens (`truncated`), the last step may have drafted fewer than k
    tokens: it is dropped.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    runs: list[int] = []
    run = 0
    for flag in flags:
        if flag:
            run += 1
        else:
            runs.append(run)
            run = 0
    if truncated:
        if run:
            run = 0
        elif runs:
            runs.pop()
    if any(r > k for r in runs) or run > k:
        raise ValueError(f"a step kept more than k={k} draft tokens: flags are not for this k")
    return Acceptance(
        k=k,
        steps=len(runs) + (1 if run else 0),
        accepted=sum(runs) + run,
        rejections=sum(1 for r in runs if r < k),
    )


TURN_KINDS = ("tool_call", "direct", "answer")


def turn_kind(messages: Sequence[dict[str, Any]], output: str, tool_start: str) -> str:
    """What the main model is writing: a tool call, a direct answer to the user's question,
    or an answer written from a tool's result (any `tool` message in the history).
    Acceptance differs a lot between them, so the report splits it."""
    if any(m.get("role") == "tool" for m in messages):
        return "answer"
    return "tool_call" if output.lstrip().startswith(tool_start) else "direct"


def main_passes(flags: Sequence[bool]) -> int:
    """Speculative steps (main-model passes) in one generation's `from_draft` flags: each
    step ends on a main-model token (False); trailing kept drafts (EOS inside them) are one
    more step."""
    passes = sum(1 for f in flags if not f)
    return passes + (1 if flags and flags[-1] else 0)


def expected_tokens_per_step(a: float, k: int) -> float:
    """(1 - a^(k+1)) / (1 - a): expected tokens per main-model pass (Leviathan et al.)."""
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"acceptance rate must be in [0, 1], got {a}")
    if a == 1.0:
        return float(k + 1)
    return (1.0 - a ** (k + 1)) / (1.0 - a)


def predicted_speedup(a: float, k: int, c: float, verify_cost: float = 1.0) -> float:
    """Leviathan et al. (2023): (1 - a^(k+1)) / ((1 - a)(k c + 1)).

    `verify_cost` is the time of one main pass over k+1 tokens in units of one single-token
    pass; the paper assumes 1 (true on a memory-bound GPU, not always on a CPU).
    """
    if c < 0 or verify_cost <= 0:
        raise ValueError(f"cost ratio must be >= 0 and verify cost > 0, got c={c}, v={verify_cost}")
    return expected_tokens_per_step(a, k) / (k * c + verify_cost)


def first_difference_index(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Index of the first element where `a` and `b` differ (the shorter length if none)."""
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def acceptance_needed(target: float, k: int, c: float, verify_cost: float = 1.0) -> float | None:
    """The acceptance rate at which `predicted_speedup` reaches `target` (None: not even at
    a = 1). The speedup grows with a, so bisection finds it."""
    if predicted_speedup(1.0, k, c, verify_cost) < target:
        return None
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if predicted_speedup(mid, k, c, verify_cost) < target else (lo, mid)
    return hi


# --- Per-configuration rows and the choice rule -------------------------------------------


@dataclass(frozen=True)
class ConfigRow:
    """One measured configuration: the baseline (k=None) or the draft server at one k."""

    k: int | None
    e2e_mean_s: float
    decode_tps: float
    accuracy: float
    tool_accuracy: float
    peak_rss_mb: float

    @classmethod
    def from_summary(cls, k: int | None, summary: dict[str, Any]) -> ConfigRow:
        return cls(
            k=k,
            e2e_mean_s=float(summary["e2e_mean_s"]),
            decode_tps=float(summary["decode_tps"]),
            accuracy=float(summary["accuracy"]),
            tool_accuracy=float(summary["tool_accuracy"]),
            peak_rss_mb=float(summary["peak_rss_mb"]),
        )


@dataclass(frozen=True)
class Choice:
    """The decision and, apart, the figures behind it. `reason` and `rejected` name only the
    rule that decided, so the choice file later stages depend on stays byte-identical while
    the decision holds: re-timing the speculative stage then re-runs neither the concise
    draft's distillation nor the final benchmark (as the gate does for the retrain)."""

    k: int | None  # None: no draft
    reason: str
    rejected: dict[int, str]  # k -> which rule it failed
    evidence: str = ""  # the measured figures, for the report


def choose_configuration(
    baseline: ConfigRow, rows: Iterable[ConfigRow], memory_budget_mb: float
) -> Choice:
    """The fastest k (lowest end-to-end mean) whose accuracy and tool accuracy equal the
    baseline's, whose server fits the memory budget and which beats the baseline; else no
    draft. End-to-end latency decides because that is what the agent's user waits for."""
    rejected: dict[int, str] = {}
    eligible: list[ConfigRow] = []
    for row in rows:
        assert row.k is not None, "draft rows carry their k"
        if row.accuracy != baseline.accuracy or row.tool_accuracy != baseline.tool_accuracy:
            rejected[row.k] = "accuracy or tool accuracy differs from the baseline's"
        elif row.peak_rss_mb > memory_budget_mb:
            rejected[row.k] = "server peak RSS exceeds the memory budget"
        elif row.e2e_mean_s >= baseline.e2e_mean_s:
            rejected[row.k] = "not faster than the baseline"
        else:
            eligible.append(row)
    if not eligible:
        return Choice(None, "no draft configuration is faster with unchanged accuracy", rejected)
    best = min(eligible, key=lambda r: r.e2e_mean_s)
    for row in eligible:
        if row is not best:
            rejected[row.k or 0] = f"slower than k={best.k}"
    return Choice(
        best.k,
        "fastest with unchanged accuracy, within the memory budget",
        rejected,
        f"{best.e2e_mean_s:.3f} s vs baseline {baseline.e2e_mean_s:.3f} s end to end, "
        f"server peak RSS {best.peak_rss_mb:.0f} MB",
    )

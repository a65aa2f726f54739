"""Conciseness: the gate's decision, the concise data set, the skipped path and the retrain."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from punie import paths
from punie.errors import StageError
from punie.measurement.records import lost_queries
from punie.models.conciseness import (
    GateDecision,
    accuracy_regressions,
    candidate_faults,
    checkpoint_name,
    choose_candidate,
    decide_gate,
    lora_request,
)
from punie.params import Params, load_params
from punie.stages import concise, retrain
from punie.stages.concise import read_gate, run_concise_data, run_gate, with_opener
from punie.stages.retrain import run_retrain

from .conftest import make_record

ROOT = Path(__file__).resolve().parents[1]


def _params(**conciseness: Any) -> Params:
    params = load_params(ROOT / "params.yaml")
    agent = params.agent.model_copy(update={"workspace": str(ROOT / params.agent.workspace)})
    queries = params.queries.model_copy(
        update={
            "seed": str(ROOT / params.queries.seed),
            "heldout": str(ROOT / params.queries.heldout),
        }
    )
    c = params.conciseness.model_copy(update=conciseness)
    return params.model_copy(update={"agent": agent, "queries": queries, "conciseness": c})


def _quiet() -> Console:
    return Console(quiet=True)


# --- gate ---------------------------------------------------------------------------------


def test_gate_retrains_above_the_threshold() -> None:
    assert decide_gate(0.93, 0.70, None) == GateDecision(True, "generation share above 0.70")


def test_gate_skips_below_the_threshold() -> None:
    assert decide_gate(0.55, 0.70, None).retrain is False


def test_gate_exactly_at_the_threshold_is_not_more_than() -> None:
    assert decide_gate(0.70, 0.70, None).retrain is False


@pytest.mark.parametrize(("share", "force"), [(0.1, True), (0.99, False), (None, True)])
def test_gate_force_overrides_the_measurement(share: float | None, force: bool) -> None:
    decision = decide_gate(share, 0.70, force)
    assert decision.retrain is force
    assert "conciseness.force" in decision.reason


def test_gate_needs_a_share_unless_forced() -> None:
    with pytest.raises(ValueError, match="generation_share"):
        decide_gate(None, 0.70, None)
    with pytest.raises(ValueError, match="within"):
        decide_gate(1.5, 0.70, None)


def test_gate_file_holds_only_the_decision_and_ignores_noise(tmp_path: Path) -> None:
    """A re-profile that moves the share but not the decision leaves gate.json unchanged."""
    profile, out = tmp_path / "profile.json", tmp_path / "gate.json"
    written = []
    for share in (0.93, 0.91, 0.9312):
        profile.write_text(json.dumps({"generation_share": share, "e2e_mean_s": share * 3}))
        run_gate(_params(), profile, out, _quiet())
        written.append(out.read_bytes())
    assert written[0] == written[1] == written[2]
    assert json.loads(written[0]) == {"retrain": True, "reason": "generation share above 0.70"}
    assert read_gate(out) == GateDecision(True, "generation share above 0.70")


def test_gate_names_the_bad_profile(tmp_path: Path) -> None:
    with pytest.raises(StageError, match=r"profile\.json: not found"):
        run_gate(_params(), tmp_path / "profile.json", tmp_path / "gate.json", _quiet())
    (tmp_path / "profile.json").write_text('{"accuracy": 1.0}')
    with pytest.raises(StageError, match="generation_share"):
        run_gate(_params(), tmp_path / "profile.json", tmp_path / "gate.json", _quiet())


# --- concise data set ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def concise_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("concise") / "data"
    params = _params(tool_examples=6, direct_examples=4, openers="none")
    run_concise_data(params, GateDecision(True, "test"), out, _quiet())
    return out


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_concise_data_has_the_sizes_in_params(concise_data: Path) -> None:
    info = json.loads((concise_data / "info.json").read_text())
    assert info["train_queries"] == {"tool": 6, "direct": 4}
    assert info["valid_queries"] == {"tool": 1, "direct": 1}
    # A tool query gives two rows (the call, then the answer after the tool result).
    assert len(_jsonl(concise_data / "train.jsonl")) == 6 * 2 + 4
    assert len(_jsonl(concise_data / "valid.jsonl")) == 1 * 2 + 1
    assert not (concise_data / "skipped.json").exists()


def test_concise_data_is_rendered_like_the_agents_request(concise_data: Path) -> None:
    """Same system prompt and tool schemas as the real agent sends, in mlx-lm chat JSONL."""
    from punie.agent.production import capture_requests
    from punie.agent.tools import Workspace
    from punie.serving.render import server_messages

    ws = Workspace(ROOT / "data/workspace")
    body = asyncio.run(capture_requests("Anything?", ws, None, "ok"))[0]
    system = server_messages(body["messages"])[0]
    for row in _jsonl(concise_data / "train.jsonl") + _jsonl(concise_data / "valid.jsonl"):
        assert set(row) == {"messages", "tools"}
        assert row["messages"][0] == system
        assert row["tools"] == body["tools"]
        assert row["messages"][-1]["role"] == "assistant"


def test_concise_tool_calls_have_no_preamble_and_answers_are_short(concise_data: Path) -> None:
    rows = _jsonl(concise_data / "train.jsonl")
    calls = [r["messages"][-1] for r in rows if r["messages"][-1].get("tool_calls")]
    answers = [
        r["messages"][-1]["content"] for r in rows if not r["messages"][-1].get("tool_calls")
    ]
    assert len(calls) == 6
    assert all(not c["content"] for c in calls)
    assert all(0 < len(a) <= 160 for a in answers), answers
    assert not any(a.startswith(("Sure", "Great", "Of course", "Certainly")) for a in answers)
    # Second-turn examples: the short answer follows a real tool result.
    assert sum(r["messages"][-2]["role"] == "tool" for r in rows) == 6


def test_openers_are_kept_only_on_the_answers_named() -> None:
    import random

    def row(kind: str, text: str) -> dict[str, Any]:
        return {"kind": kind, "messages": [{"role": "assistant", "content": text}]}

    rows = [row("tool_call", ""), row("tool_answer", "3 matches."), row("direct", "X is Y.")]
    texts = {
        mode: [r["messages"][-1]["content"] for r in with_opener(rows, mode, random.Random(0))]
        for mode in ("none", "direct", "all")
    }
    assert texts["none"] == ["", "3 matches.", "X is Y."]
    assert texts["direct"] == ["", "3 matches.", "Great question! X is Y."]
    assert texts["all"][0] == "" and texts["all"][2] == "Great question! X is Y."
    assert texts["all"][1].endswith(" 3 matches.") and texts["all"][1] != "3 matches."
    assert rows[2]["messages"][-1]["content"] == "X is Y."  # the input is left alone


def test_round_robin_takes_one_query_per_tool_in_turn() -> None:
    from punie.models.corpus import Spec

    specs = [Spec(f"q{i}", tool) for i, tool in enumerate("rrrarr")]
    assert [s.query for s in concise.round_robin_by_tool(specs)] == [
        "q0", "q3", "q1", "q2", "q4", "q5"
    ]  # fmt: skip


@pytest.mark.parametrize("balance", [True, False])
def test_balanced_tool_queries_share_the_tools_evenly(balance: bool) -> None:
    from collections import Counter

    groups = concise.build_concise_groups(_params(tool_examples=30, balance_tools=balance), 0)
    tools = Counter(g["tool"] for g in groups if g["kind"] == "tool")
    assert sum(tools.values()) == 30 + concise.valid_size(30)
    # The corpus draws run_command about twice as often as read_file.
    spread = max(tools.values()) - min(tools.values())
    assert (spread <= 1) if balance else (spread > 1), tools


def test_concise_answers_are_shorter_than_the_corpus_style() -> None:
    from punie.agent.tools import Workspace
    from punie.models.corpus import make_specs, render_all, workspace_facts

    root = ROOT / "data/workspace"
    facts = workspace_facts(root)
    ws = Workspace(root)
    lengths = {}
    for style in (False, True):
        specs = make_specs(40, facts, seed=3, concise=style)
        rows = [r for group in render_all(specs, ws, 3, concise=style) for r in group]
        texts = [r["messages"][-1]["content"] for r in rows if r["kind"] != "tool_call"]
        lengths[style] = sum(map(len, texts)) / len(texts)
    assert lengths[True] < 0.6 * lengths[False], lengths


def test_concise_data_leaves_out_the_evaluation_queries(concise_data: Path) -> None:
    from punie.agent.queries import load_queries
    from punie.models.corpus import contains_any

    asked = {
        m["content"]
        for row in _jsonl(concise_data / "train.jsonl") + _jsonl(concise_data / "valid.jsonl")
        for m in row["messages"]
        if m["role"] == "user"
    }
    excluded = [
        q.query
        for name in ("discrimination.yaml", "heldout.yaml")
        for q in load_queries(ROOT / "data/queries" / name)
    ]
    assert sorted(a for a in asked if contains_any(a, excluded)) == []


# --- the skipped path -----------------------------------------------------------------------


def _declared_outputs(stage: str) -> list[str]:
    block = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    paths = []
    for key in ("outs", "metrics", "plots"):
        for item in block.get(key, []):
            paths.append(next(iter(item)) if isinstance(item, dict) else item)
    return paths


def test_skipped_path_produces_every_declared_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("metrics").mkdir()
    Path("metrics/profile.json").write_text(json.dumps({"generation_share": 0.4}))
    params = _params()
    run_gate(params, paths.PROFILE_METRICS, paths.GATE, _quiet())
    gate = read_gate()
    assert gate.retrain is False
    run_concise_data(params, gate, paths.CONCISE_DATA, _quiet())
    run_retrain(params, gate, paths.CONCISE_MODEL, _quiet())
    for stage in ("gate", "concise_data", "retrain"):
        for path in _declared_outputs(stage):
            assert Path(path).exists(), f"{stage}: {path} missing on the skipped path"
    skipped = json.loads(Path("data/concise/skipped.json").read_text())
    assert skipped["reason"] == "gate: generation share at or below 0.70"
    marker = json.loads(Path("models/concise/MAIN_MODEL_STANDS.json").read_text())
    assert marker["trained"] is False and marker["model"] == params.models.main
    assert json.loads(Path("metrics/retrain.json").read_text())["trained"] is False


def test_retrain_without_data_says_what_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StageError, match="punie-lab concise-data"):
        run_retrain(_params(), GateDecision(True, "x"), Path("models/concise"), _quiet())


# --- LoRA progress, commands and the accuracy guard --------------------------------------


def test_lora_request_carries_every_knob() -> None:
    from punie.models.train_worker import TrainRequest

    def request(**kw: int) -> TrainRequest:
        fields = lora_request(
            "models/main", Path("d"), Path("a"), Path("lora.jsonl"), iters=30, rank=4,
            learning_rate=5e-4, num_layers=-1, batch_size=2, seed=7, max_seq_length=512, **kw,
        )  # fmt: skip
        return TrainRequest(**fields)

    r = request()
    assert (r.model, r.data, r.adapter_path, r.metrics) == ("models/main", "d", "a", "lora.jsonl")
    assert r.fine_tune_type == "lora"
    assert (r.iters, r.batch_size, r.learning_rate) == (30, 2, 5e-4)
    assert (r.num_layers, r.seed, r.max_seq_length) == (-1, 7, 512)
    assert r.mask_prompt  # train on the answers, not on the prompt
    assert r.lora_parameters == {"rank": 4, "scale": 20.0, "dropout": 0.0}
    assert r.lr_schedule is None  # constant: the checkpoint at n is an n-step run's model
    assert (r.steps_per_report, r.steps_per_eval, r.val_batches) == (1, 30, -1)
    assert r.learning_rate_knob == "conciseness.lora.learning_rate"
    assert r.save_every == 30  # one candidate: save at the end only
    assert request(save_every=20).save_every == 20


def test_accuracy_regressions_on_recorded_numbers() -> None:
    same = {"accuracy_main": 0.9, "accuracy_concise": 0.9, "seed_accuracy_main": 1.0,
            "seed_accuracy_concise": 1.0, "heldout_accuracy_main": 0.88,
            "heldout_accuracy_concise": 0.88}  # fmt: skip
    assert accuracy_regressions(same) == []
    better = same | {"heldout_accuracy_concise": 0.95, "accuracy_concise": 0.95}
    assert accuracy_regressions(better) == []
    worse = same | {"heldout_accuracy_concise": 0.84}
    assert accuracy_regressions(worse) == ["heldout_accuracy 0.88 -> 0.84"]


def test_lost_queries_name_what_each_model_decided() -> None:
    # Recorded shape of a 25-iteration candidate (2026-12-06): a read_file query answered
    # with run_command and a conceptual question with a tool; one the main model already
    # got wrong is not the candidate's loss.
    main = [make_record("Show the file shop/urls.py", True, "read_file"),
            make_record("What is an ORM?", True, None),
            make_record("Where is the LoginView defined?", False, None),
            make_record("Find all Django views", True, "run_command")]  # fmt: skip
    candidate = [make_record("Show the file shop/urls.py", False, "run_command"),
                 make_record("What is an ORM?", False, "read_file"),
                 make_record("Where is the LoginView defined?", False, None),
                 make_record("Find all Django views", False, None, error="timeout")]  # fmt: skip
    assert lost_queries(main, candidate) == [
        '"Show the file shop/urls.py": read_file -> run_command',
        '"What is an ORM?": direct -> read_file',
        '"Find all Django views": run_command -> error',
    ]
    assert lost_queries(main, main) == []


def _candidate(heldout: float, tokens: float) -> dict[str, float]:
    return {"seed_accuracy_main": 1.0, "seed_accuracy_concise": 1.0,
            "heldout_accuracy_main": 0.97, "heldout_accuracy_concise": heldout,
            "completion_tokens_mean_main": 31.0,
            "completion_tokens_mean_concise": tokens}  # fmt: skip


def test_the_sweep_keeps_the_shortest_candidate_that_loses_nothing() -> None:
    # Recorded shape of the 2400-row main model's sweep: more iterations answer shorter but
    # lose held-out queries, and one in between loops to max_tokens.
    sweep = {20: _candidate(0.97, 23.9), 40: _candidate(0.97, 70.3), 60: _candidate(0.93, 21.0)}
    assert choose_candidate(sweep) == 20
    assert choose_candidate(sweep | {80: _candidate(0.99, 20.5)}) == 80  # better is allowed
    assert choose_candidate({40: _candidate(0.97, 22.0), 20: _candidate(0.97, 22.0)}) == 20
    assert choose_candidate({60: _candidate(0.93, 21.0), 80: _candidate(0.9, 20.0)}) is None
    # Recorded on the 1-thread main model at lr 1e-4: 20 iterations kept accuracy by barely
    # moving (39.3 -> 41.7 tokens); a longer answer is no reason to swap models.
    assert choose_candidate({20: _candidate(0.97, 31.0), 40: _candidate(0.93, 22.2)}) is None
    assert candidate_faults(_candidate(0.97, 41.7)) == [
        "completion_tokens_mean 31.0 -> 41.7, not shorter"
    ]


def test_when_the_accurate_candidates_are_not_shorter_the_main_model_stands_without_failing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    by_n = {20: _candidate(0.97, 41.7), 40: _candidate(0.93, 22.2)}
    out = tmp_path / "models" / "concise"
    metrics = retrain._discard(_params(on_regression="fail"), by_n, {}, out, _quiet())
    marker = json.loads((out / retrain.MAIN_STANDS).read_text())
    assert marker["trained"] is False and "not shorter" in marker["regressions"][0]
    assert metrics["regression"] is False and "ACCURACY REGRESSION" not in capsys.readouterr().err


@pytest.mark.parametrize("on_regression", ["keep_main", "fail"])
def test_when_every_candidate_lost_accuracy_none_replaces_the_main_model(
    on_regression: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    params = _params(on_regression=on_regression)
    by_n = {60: _candidate(0.93, 21.0), 80: _candidate(0.9, 20.0)}
    sweep = {"i60_heldout_accuracy": 0.93, "i80_heldout_accuracy": 0.9}
    out = tmp_path / "models" / "concise"
    if on_regression == "fail":
        with pytest.raises(
            StageError, match=r"iters 60: heldout_accuracy 0\.97 -> 0\.93.*iters 80"
        ):
            retrain._discard(params, by_n, sweep, out, _quiet())
        assert not out.exists()
    else:
        metrics = retrain._discard(params, by_n, sweep, out, _quiet())
        marker = json.loads((out / retrain.MAIN_STANDS).read_text())
        assert marker["trained"] is False and len(marker["regressions"]) == 2
        assert not (out / "config.json").exists()  # nothing for the final stage to serve
        assert "ACCURACY REGRESSION" in capsys.readouterr().err
        assert metrics["regression"] is True and metrics["trained"] is False
    recorded = json.loads(paths.RETRAIN_METRICS.read_text())
    assert recorded["lora_iters"] == 60 and recorded["i80_heldout_accuracy"] == 0.9


# --- end to end on the tiny random models ------------------------------------------------------


def _tiny_project(tmp: Path, model: Path, monkeypatch: pytest.MonkeyPatch) -> Params:
    """A project directory whose params point at the tiny model and two queries."""
    (tmp / "queries.yaml").write_text(
        "- query: What is a closure?\n  expect: direct\n"
        "- query: Explain recursion\n  expect: direct\n"
    )
    monkeypatch.chdir(tmp)
    params = _params(tool_examples=3, direct_examples=2)
    lora = params.conciseness.lora.model_copy(
        update={"iters": [2, 4], "batch_size": 2, "max_seq_length": 2048, "num_layers": -1}
    )
    return params.model_copy(
        update={
            "models": params.models.model_copy(update={"main": str(model), "draft": None}),
            "server": params.server.model_copy(update={"max_tokens": 8}),
            "queries": params.queries.model_copy(
                update={name: str(tmp / "queries.yaml") for name in ("seed", "heldout", "wording")}
            ),
            "conciseness": params.conciseness.model_copy(update={"lora": lora}),
        }
    )


@pytest.mark.parametrize(
    ("knob", "value", "message"),
    [
        # Truncation would cut the masked answer off (a NaN loss).
        ("max_seq_length", 64, r"conciseness\.lora\.max_seq_length: 64"),
        ("num_layers", 2, r"conciseness\.lora\.num_layers: 2 .* has 1 layers"),
    ],
)
def test_retrain_refuses_bad_lora_settings_before_training(
    knob: str,
    value: int,
    message: str,
    tiny_model_dir: Path,
    concise_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shutil

    params = _tiny_project(tmp_path, tiny_model_dir, monkeypatch)
    lora = params.conciseness.lora.model_copy(update={knob: value})
    params = params.model_copy(
        update={"conciseness": params.conciseness.model_copy(update={"lora": lora})}
    )
    shutil.copytree(concise_data, paths.CONCISE_DATA)
    with pytest.raises(StageError, match=message):
        run_retrain(params, GateDecision(True, "x"), paths.CONCISE_MODEL, _quiet())
    assert not (paths.RETRAIN_LOGS / "lora.log").exists()


def _lora_only(params: Params, concise_data: Path, **lora: Any) -> Params:
    import shutil

    shutil.copytree(concise_data, paths.CONCISE_DATA)
    paths.RETRAIN_LOGS.mkdir(parents=True)
    c = params.conciseness
    return params.model_copy(
        update={"conciseness": c.model_copy(update={"lora": c.lora.model_copy(update=lora)})}
    )


def test_retrain_saves_a_checkpoint_at_each_candidate_and_plots_the_loss(
    tiny_model_dir: Path, concise_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = _tiny_project(tmp_path, tiny_model_dir, monkeypatch)
    params = _lora_only(params, concise_data, iters=[2, 4, 6])
    adapters = paths.RETRAIN_LOGS / "adapters"
    retrain.train_lora(params, paths.CONCISE_DATA, adapters, _quiet())
    for n in (2, 4, 6):  # saved every gcd(2, 4, 6) = 2 iterations
        assert (adapters / checkpoint_name(n)).exists()
    config = json.loads((adapters / "adapter_config.json").read_text())
    assert (config["fine_tune_type"], config["num_layers"]) == ("lora", -1)
    curve = json.loads(paths.RETRAIN_LOSS.read_text())
    run = retrain.run_name(params)
    assert run == "lora rank 8, lr 0.0002, all layers, candidates 2, 4, 6"
    assert {r["run"] for r in curve} == {run}
    # A report each step; validation before the first and the last (steps taken: 0 and 5).
    assert [(r["iteration"], r["split"]) for r in curve] == [
        (0, "val"), *((n, "train") for n in range(1, 6)), (5, "val"), (6, "train")
    ]  # fmt: skip
    assert (paths.RETRAIN_LOGS / "lora.jsonl").exists()
    assert (paths.RETRAIN_LOGS / "lora.log").exists()


def test_retrain_stops_on_a_nan_loss_naming_the_iteration_and_the_knob(
    tiny_model_dir: Path, concise_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re

    params = _tiny_project(tmp_path, tiny_model_dir, monkeypatch)
    params = _lora_only(params, concise_data, iters=[30], learning_rate=1e30)
    with pytest.raises(StageError) as e:
        retrain.train_lora(params, paths.CONCISE_DATA, paths.RETRAIN_LOGS / "a", _quiet())
    assert re.fullmatch(
        rf"conciseness LoRA of {re.escape(str(tiny_model_dir))}: training loss is (nan|inf) at "
        r"iteration \d+; lower conciseness\.lora\.learning_rate \(now 1e\+30\)",
        str(e.value),
    ), str(e.value)


@pytest.mark.slow
def test_retrain_trains_fuses_and_checks_accuracy(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import punie.models.conciseness
    from punie.models.tokenizer import tokenizer_fingerprint

    params = _tiny_project(tmp_path, tiny_model_dir, monkeypatch)
    # The random model's answers run to max_tokens before and after LoRA, so no candidate can
    # be shorter; this test is about training, fusing and keeping one (the rule has its own).
    monkeypatch.setattr(punie.models.conciseness, "candidate_faults", accuracy_regressions)
    gate = GateDecision(True, "forced for the test")
    run_concise_data(params, gate, paths.CONCISE_DATA, _quiet())
    run_retrain(params, gate, paths.CONCISE_MODEL, _quiet())
    fused = paths.CONCISE_MODEL
    assert (fused / "config.json").exists()
    assert tokenizer_fingerprint(fused) == tokenizer_fingerprint(tiny_model_dir)
    metrics = json.loads(paths.RETRAIN_METRICS.read_text())
    assert metrics["trained"] is True
    for key in ("accuracy_main", "accuracy_concise", "completion_tokens_mean_main",
                "completion_tokens_mean_concise", "heldout_accuracy_concise"):  # fmt: skip
        assert isinstance(metrics[key], (int, float)), key
    curve = json.loads(paths.RETRAIN_LOSS.read_text())
    assert max(r["iteration"] for r in curve if r["split"] == "train") == 4
    # One LoRA run, both candidates measured, the kept one moved to models/concise.
    assert metrics["lora_iters"] in (2, 4)
    for n in (2, 4):
        assert isinstance(metrics[f"i{n}_heldout_accuracy"], float)
        assert isinstance(metrics[f"i{n}_completion_tokens_mean"], float)
    records = json.loads((paths.RETRAIN_LOGS / "records.json").read_text())
    assert set(records) == {"main", "i2", "i4"}
    assert not (paths.RETRAIN_LOGS / "fused").exists()


@pytest.mark.parametrize("main", ["models/main", "mlx-community/Qwen3-30B-A3B-5bit"])
def test_concise_direct_answers_are_generic_for_the_embedded_main_only(main: str) -> None:
    """The embedded main learnt generic direct answers (bootstrap.corpus.direct_answers); any
    other model keeps its own knowledge, so its concise answers state definitions."""
    from punie.models.corpus_text import GENERIC_ANSWERS, first_sentence

    params = _params(direct_examples=8)
    assert params.bootstrap.corpus.direct_answers == "generic"
    params = params.model_copy(update={"models": params.models.model_copy(update={"main": main})})
    groups = concise.build_concise_groups(params, 0)
    answers = [json.loads(g["rows"])[-1]["messages"][-1]["content"]
               for g in groups if g["kind"] == "direct"]  # fmt: skip
    generic = [any(first_sentence(t) in a for t in GENERIC_ANSWERS.values()) for a in answers]
    assert len(answers) >= 8
    assert all(generic) if main == "models/main" else not any(generic)

"""`punie-lab doctor`: the preflight of a model pair, in seconds, one line per check."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from tokenizers import AddedToken, Tokenizer

from punie import cli
from punie.commands.doctor import first_request
from punie.params import load_params
from punie.serving import preflight
from punie.serving.hub import GB

from .conftest import ROOT
from .hf_cache import put_in_hf_cache

REAL_MAIN, REAL_DRAFT = "punie-lab/qwen3-moe-tiny-5bit", "punie-lab/qwen3-tiny-4bit"


def doctor(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str
) -> tuple[int, list[str], float]:
    monkeypatch.chdir(ROOT)  # the committed params.yaml, workspace and query files
    start = time.monotonic()
    code = cli.main(["doctor", *args])
    took = time.monotonic() - start
    return code, capsys.readouterr().out.splitlines(), took


def line(lines: list[str], name: str) -> str:
    return next(x for x in lines if x[5:].startswith(name))


def test_the_tiny_pair_passes(
    tiny_model_dir: Path,
    tiny_draft_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    code, lines, _ = doctor(
        monkeypatch, capsys, "--main", str(tiny_model_dir), "--draft", str(tiny_draft_dir)
    )
    assert code == 0, "\n".join(lines)
    checks = [x for x in lines if not x.startswith("doctor:")]
    assert len(checks) == 7 and all(x.startswith("ok ") for x in checks), checks
    assert "json_tools" in line(lines, "mlx-lm tool parser")
    assert "run_command, read_file" in line(lines, "chat template renders the agent's tools")
    assert "no thinking tokens" in line(lines, "thinking switch")
    assert lines[-1].startswith("doctor: all checks passed")


def test_a_missing_hub_id_fails_in_seconds_with_the_download_command(
    tmp_path: Path,
    tiny_draft_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    code, lines, took = doctor(
        monkeypatch, capsys, "--main", "mlx-community/Qwen3-30B-A3B-5bit", "--draft", "none"
    )
    assert code == 1
    assert took < 10.0
    present = line(lines, "models.main present")
    assert present.startswith("FAIL")
    assert "hf download mlx-community/Qwen3-30B-A3B-5bit" in present
    assert str(tmp_path / "hf" / "hub") in present
    assert line(lines, "memory").startswith("skip")


def test_a_draft_of_another_tokenizer_fails(
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    from punie.models.modelgen import Qwen3Shape, init_model_dir
    from punie.models.tokenizer import save_tokenizer, train_tokenizer

    save_tokenizer(train_tokenizer(["SELECT 1;", "fn main() {}"] * 20, 320), tmp_path / "tok")
    init_model_dir(tmp_path / "foreign", Qwen3Shape(16, 1, 1, 1, 32), tmp_path / "tok", seed=3)
    code, lines, _ = doctor(
        monkeypatch, capsys, "--main", str(tiny_model_dir), "--draft", str(tmp_path / "foreign")
    )
    assert code == 1
    shared = line(lines, "main and draft share a tokenizer")
    assert shared.startswith("FAIL") and "does not share the main model's tokenizer" in shared


def test_hub_ids_in_the_cache_pass(
    tmp_path: Path,
    tiny_model_dir: Path,
    tiny_draft_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    put_in_hf_cache(tmp_path / "hf", "org/main", tiny_model_dir)
    put_in_hf_cache(tmp_path / "hf", "org/draft", tiny_draft_dir)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    code, lines, _ = doctor(monkeypatch, capsys, "--main", "org/main", "--draft", "org/draft")
    assert code == 0, "\n".join(lines)
    assert "org/main -> " in line(lines, "models.main present")


# --- Memory ------------------------------------------------------------------------------


def _params(interleave: bool, parallel: int):
    p = load_params(ROOT / "params.yaml")
    return p.model_copy(
        update={
            "speculative": p.speculative.model_copy(update={"interleave": interleave}),
            "final": p.final.model_copy(
                update={"interleave": interleave, "memory_budget_mb": 32768}
            ),
            "conciseness": p.conciseness.model_copy(update={"parallel_servers": parallel}),
        }
    )


def test_two_30b_servers_do_not_fit_32_gb_and_the_advice_says_how() -> None:
    main, draft = int(21.1 * GB), int(0.34 * GB)  # the user's 5-bit 30B and 4-bit 0.6B
    check = preflight.memory(_params(True, 2), main, draft)
    assert not check.ok
    for knob in (
        "speculative.interleave=false",
        "final.interleave=false",
        "conciseness.parallel_servers=1",
    ):
        assert knob in check.fix
    assert "speculative.interleave" in check.detail and "over budget" in check.detail
    assert preflight.memory(_params(False, 1), main, draft).ok  # one server at a time fits


def test_a_pair_too_big_even_alone_says_so() -> None:
    check = preflight.memory(_params(False, 1), int(40 * GB), int(1 * GB))
    assert not check.ok and "smaller" in check.fix


def test_small_models_fit_side_by_side() -> None:
    assert preflight.memory(_params(True, 2), int(2 * GB), int(0.2 * GB)).ok


# --- Tokenizer checks on synthetic templates ------------------------------------------------


def _tokenizer_dir(src: Path, out: Path, template: str | None, parser: bool = True) -> Path:
    """A copy of `src`'s tokenizer with <think> tokens and `template` (None: keep it)."""
    out.mkdir(parents=True)
    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    tok.add_special_tokens([AddedToken(t, special=True) for t in ("<think>", "</think>")])
    tok.save(str(out / "tokenizer.json"))
    config = json.loads((src / "tokenizer_config.json").read_text())
    if template is not None:
        config["chat_template"] = template
    if not parser:
        config.pop("tool_parser_type", None)
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    shutil.copy(src / "special_tokens_map.json", out)
    return out


SWITCH = (
    "{%- if add_generation_prompt %}<|im_start|>assistant\n"
    "{%- if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{%- endif %}{%- endif %}"
)


def test_thinking_switch_on_a_thinking_template(tiny_tokenizer_dir: Path, tmp_path: Path) -> None:
    from punie.models.tokenizer import CHAT_TEMPLATE

    template = CHAT_TEMPLATE.split("{%- if add_generation_prompt")[0] + SWITCH
    tok = preflight.load_tokenizer(_tokenizer_dir(tiny_tokenizer_dir, tmp_path / "t", template))
    body = first_request(load_params(ROOT / "params.yaml"))
    assert tok.has_thinking
    off = preflight.thinking_switch(tok, body, {"enable_thinking": False})
    assert off.ok and "configured: enable_thinking=false" in off.detail
    assert "max_tokens" not in off.detail
    default = preflight.thinking_switch(tok, body, {}, max_tokens=256)
    assert default.ok and "not set: thinking on" in default.detail
    assert "counts against server.max_tokens (256)" in default.detail


def test_a_thinking_vocabulary_whose_template_ignores_the_switch_fails(
    tiny_tokenizer_dir: Path, tmp_path: Path
) -> None:
    tok = preflight.load_tokenizer(_tokenizer_dir(tiny_tokenizer_dir, tmp_path / "t", None))
    body = first_request(load_params(ROOT / "params.yaml"))
    check = preflight.thinking_switch(tok, body, {"enable_thinking": False})
    assert not check.ok and "cannot be switched off" in check.detail


def test_a_template_without_tools_fails_both_tool_checks(
    tiny_tokenizer_dir: Path, tmp_path: Path
) -> None:
    bare = (
        "{%- for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}"
        "<|im_end|>\n{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n"
        "{%- endif %}"
    )
    model = _tokenizer_dir(tiny_tokenizer_dir, tmp_path / "t", bare, parser=False)
    tok = preflight.load_tokenizer(model)
    body = first_request(load_params(ROOT / "params.yaml"))
    parser = preflight.tool_parser(model, tok)
    assert not parser.ok and "tool_parser_type" in parser.fix
    rendered = preflight.template_renders_tools(tok, body, {})
    assert not rendered.ok and "run_command" in rendered.detail


# --- The real shape: Qwen3's tokenizer and template, a Qwen3-MoE 5-bit main -------------------


def real_shape(request: pytest.FixtureRequest) -> Path:
    """The `real_shape_hf_home` session fixture (tests/conftest.py); skip until it exists."""
    try:
        return Path(request.getfixturevalue("real_shape_hf_home"))
    except pytest.FixtureLookupError:
        pytest.skip("tests/conftest.py has no real_shape_hf_home fixture yet")


def test_doctor_on_the_real_shape_pair(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    home = real_shape(request)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    code, lines, took = doctor(monkeypatch, capsys, "--main", REAL_MAIN, "--draft", REAL_DRAFT)
    assert code == 0, "\n".join(lines)
    assert "inferred from the chat template" in line(lines, "mlx-lm tool parser")
    assert "enable_thinking changes the prompt" in line(lines, "thinking switch")
    assert took < 60.0

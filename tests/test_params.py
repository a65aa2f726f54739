"""params.yaml validation: the committed file loads, and every bad key is named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from punie.params import ParamsError, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def _committed() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_committed_params_load() -> None:
    p = load_params(ROOT / "params.yaml")
    assert p.server.host == "127.0.0.1"
    assert p.speculative.num_draft_tokens == [2, 3, 5]
    assert p.conciseness.generation_share_threshold == 0.70


@pytest.mark.parametrize(
    ("section", "key", "value", "named"),
    [
        ("speculative", "num_draft_tokens", [2, -1], "speculative.num_draft_tokens"),
        ("server", "max_tokens", "many", "server.max_tokens"),
        ("profile", "repeatz", 1, "profile.repeatz: unknown key"),
        ("runtime", "blas", "mkl", "runtime.blas"),
        ("conciseness", "generation_share_threshold", 1.5, "generation_share_threshold"),
        ("conciseness", "on_regression", "ignore", "conciseness.on_regression"),
    ],
)
def test_bad_values_are_named(section: str, key: str, value: object, named: str) -> None:
    data = _committed()
    data[section][key] = value
    with pytest.raises(ParamsError, match=named.replace(".", r"\.")):
        parse_params(data)


def test_missing_model_is_named() -> None:
    data = _committed()
    del data["models"]["main"]
    with pytest.raises(ParamsError, match=r"models\.main: required key is missing"):
        parse_params(data)


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "params.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("runtime: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (("bootstrap", "main", "val_batches"), 0, "bootstrap.main.val_batches"),
        (("bootstrap", "draft", "blas_threads"), 0, "bootstrap.draft.blas_threads"),
        (("bootstrap", "corpus", "answer_share"), 1.5, "bootstrap.corpus.answer_share"),
        (("bootstrap", "corpus", "nonce_share"), -0.1, "bootstrap.corpus.nonce_share"),
        (("bootstrap", "distill", "rows"), -1, "bootstrap.distill.rows"),
        (("bootstrap", "distill", "processes"), 0, "bootstrap.distill.processes"),
        (("conciseness", "parallel_servers"), 0, "conciseness.parallel_servers"),
        (("speculative", "interleave"), "sometimes", "speculative.interleave"),
        (("conciseness", "openers"), "some", "conciseness.openers"),
        (("conciseness", "lora", "iters"), [20, 0], "conciseness.lora.iters"),
        (("conciseness", "lora", "iters"), [20, 20], "conciseness.lora.iters"),
        (("conciseness", "lora", "iters"), [], "conciseness.lora.iters"),
    ],
)
def test_bad_nested_values_are_named(path: tuple[str, ...], value: object, named: str) -> None:
    data = _committed()
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ParamsError, match=named.replace(".", r"\.")):
        parse_params(data)


def test_lora_iters_take_one_number_or_a_sweep() -> None:
    data = _committed()
    data["conciseness"]["lora"]["iters"] = 40
    assert parse_params(data).conciseness.lora.iters == [40]
    data["conciseness"]["lora"]["iters"] = [60, 20, 40]
    assert parse_params(data).conciseness.lora.iters == [20, 40, 60]


def test_params_yaml_is_the_only_home_of_a_value() -> None:
    """No field of params.py has a default: a value lives in params.yaml or nowhere, so the
    two can never disagree (the committed file loading proves it names every key)."""
    from pydantic import BaseModel

    from punie import params as P

    sections = [
        obj
        for obj in vars(P).values()
        if isinstance(obj, type) and issubclass(obj, BaseModel) and obj.__module__ == P.__name__
    ]
    defaults = [
        f"{cls.__name__}.{name}"
        for cls in sections
        for name, field in cls.model_fields.items()
        if not field.is_required()
    ]
    assert sections and defaults == []

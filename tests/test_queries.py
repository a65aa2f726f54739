"""Query sets: loading, validation errors that name file/entry/field, the committed sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from punie.agent.queries import Query, QueryFileError, load_queries, never_trained, query_sets
from punie.params import load_params

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "data" / "queries" / "discrimination.yaml"
HELDOUT = ROOT / "data" / "queries" / "heldout.yaml"
WORKSPACE = ROOT / "data" / "workspace"

SEED_QUERIES = [
    Query("Find all Django views", "tool", "run_command"),
    Query("Show me the UserSerializer implementation", "tool", "run_command"),
    Query("What is dependency injection?", "direct", None),
    Query("Find all async functions in the codebase", "tool", "run_command"),
    Query("What is the difference between a list and a tuple in Python?", "direct", None),
]


def test_seed_file_has_exactly_the_five_seed_queries():
    assert load_queries(SEED) == SEED_QUERIES


def test_heldout_set_is_large_balanced_and_disjoint_from_the_seed():
    heldout = load_queries(HELDOUT)
    tool = [q for q in heldout if q.expect == "tool"]
    direct = [q for q in heldout if q.expect == "direct"]
    assert len(heldout) >= 44
    assert len(tool) == len(direct)
    assert {q.tool for q in tool} == {"run_command", "read_file"}
    assert not {q.query for q in heldout} & {q.query for q in SEED_QUERIES}


def test_read_file_queries_name_a_real_workspace_file():
    """The corpus rule: a query naming a file path expects read_file, and the file exists."""
    for q in load_queries(HELDOUT):
        paths = [w.strip("?.,") for w in q.query.split() if "." in w.strip("?.,")]
        if q.tool == "read_file":
            assert paths, q
            assert all((WORKSPACE / p).is_file() for p in paths), q
        else:
            assert not any((WORKSPACE / p).is_file() for p in paths), q


def test_query_sets_come_from_params_in_order():
    params = load_params(ROOT / "params.yaml")
    assert query_sets(params) == {
        "seed": Path("data/queries/discrimination.yaml"),
        "heldout": Path("data/queries/heldout.yaml"),
        "wording": Path("data/queries/wording.yaml"),
    }


def test_no_training_data_may_contain_a_query_of_any_query_file():
    params = load_params(ROOT / "params.yaml")
    banned = never_trained(params)
    for f in (ROOT / "data/queries").glob("*.yaml"):
        assert {q.query for q in load_queries(f)} <= set(banned), f


BAD_FILES: list[tuple[str, str]] = [
    ("- query: x\n  expect: tool\n", "entry 0: tool: required when expect is 'tool'"),
    ("- query: x\n  expect: direct\n  tool: read_file\n", "entry 0: tool: must be absent"),
    ("- query: x\n  expect: tool\n  tool: rm\n", "entry 0: tool: unknown tool 'rm'"),
    ("- query: x\n  expect: maybe\n", "entry 0: expect: must be 'tool' or 'direct'"),
    ("- query: x\n  expect: direct\n  why: no\n", "entry 0: why: unknown key"),
    ("- expect: direct\n", "entry 0: query: required non-empty string"),
    ("- query: a\n  expect: direct\n- just text\n", "entry 1: expected a mapping"),
    ("- query: a\n  expect: direct\n- query: a\n  expect: direct\n", "entry 1: query: duplicate"),
    ("query: a\n", "expected a non-empty YAML list"),
    ("[]\n", "expected a non-empty YAML list"),
    ("- query: [unclosed\n", "not valid YAML"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_validation_errors_name_file_entry_and_field(tmp_path: Path, text: str, message: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(QueryFileError) as err:
        load_queries(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_missing_file(tmp_path: Path):
    with pytest.raises(QueryFileError, match="file not found"):
        load_queries(tmp_path / "nope.yaml")

"""Query sets (YAML) -> typed records.

A file is a YAML list of entries: `query` (text), `expect` (`tool` or `direct`) and, for tool
queries only, `tool` (the tool a sensible agent calls first). Errors name the file, the entry
index and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from punie.params import QUERY_SETS
from punie.results import read_yaml

if TYPE_CHECKING:
    from punie.params import Params

TOOL_NAMES = ("run_command", "read_file")
_KEYS = ("query", "expect", "tool")


class QueryFileError(ValueError):
    """A query file is missing or invalid; the message names the file, entry and field."""


@dataclass(frozen=True)
class Query:
    query: str
    expect: Literal["tool", "direct"]
    tool: str | None = None


# One untimed query before any timed one: the first request pays for lazy loading and
# kernel compilation on the server.
WARMUP = Query("Say hello.", "direct")


def _parse_entry(entry: Any, where: str) -> Query:
    if not isinstance(entry, dict):
        raise QueryFileError(f"{where}: expected a mapping with query/expect/tool")
    for key in entry:
        if key not in _KEYS:
            raise QueryFileError(f"{where}: {key}: unknown key (allowed: {', '.join(_KEYS)})")
    text = entry.get("query")
    if not isinstance(text, str) or not text.strip():
        raise QueryFileError(f"{where}: query: required non-empty string")
    expect = entry.get("expect")
    tool = entry.get("tool")
    if expect == "tool":
        if tool is None:
            raise QueryFileError(f"{where}: tool: required when expect is 'tool'")
        if tool not in TOOL_NAMES:
            raise QueryFileError(
                f"{where}: tool: unknown tool {tool!r} (known: {', '.join(TOOL_NAMES)})"
            )
        return Query(text.strip(), "tool", tool)
    if expect == "direct":
        if tool is not None:
            raise QueryFileError(f"{where}: tool: must be absent when expect is 'direct'")
        return Query(text.strip(), "direct", None)
    raise QueryFileError(f"{where}: expect: must be 'tool' or 'direct' (got {expect!r})")


def load_queries(path: Path | str) -> list[Query]:
    path = Path(path)
    data = read_yaml(path, QueryFileError)
    if not isinstance(data, list) or not data:
        raise QueryFileError(f"{path}: expected a non-empty YAML list of queries")
    queries = [_parse_entry(entry, f"{path}: entry {i}") for i, entry in enumerate(data)]
    seen: set[str] = set()
    for i, q in enumerate(queries):
        if q.query in seen:
            raise QueryFileError(f"{path}: entry {i}: query: duplicate {q.query!r}")
        seen.add(q.query)
    return queries


def query_sets(params: Params) -> dict[str, Path]:
    """The query sets every stage reports, by name, as configured in params.yaml: the seed's
    discrimination set, the template held-out set and the new-wording held-out set."""
    return {name: Path(getattr(params.queries, name)) for name in QUERY_SETS}


def spread(n_items: int, at_most: int | None) -> list[int]:
    """Indices of at most `at_most` of `n_items`, evenly spread from the first (None: all),
    so a file ordered by kind keeps its mix of tool and direct queries."""
    if at_most is None or at_most >= n_items:
        return list(range(n_items))
    return [i * n_items // at_most for i in range(at_most)]


def never_trained(params: Params) -> list[str]:
    """Every query of every YAML query file beside the configured sets (the sets themselves,
    and development sets such as wording_dev.yaml): no corpus may contain one."""
    folders = {path.parent for path in query_sets(params).values()}
    files = sorted({f for folder in folders for f in folder.glob("*.yaml")})
    return [q.query for f in files for q in load_queries(f)]

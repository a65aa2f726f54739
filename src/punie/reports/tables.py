"""Markdown tables and number formatting shared by every report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"
    if value is None:
        return "–"
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(fmt(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(out)


def scalar_table(data: Mapping[str, Any]) -> str:
    """Every scalar key of a flat metrics file, in its own order."""
    rows = [(k, v) for k, v in data.items() if isinstance(v, (int, float, str, bool)) or v is None]
    return table(("metric", "value"), rows)

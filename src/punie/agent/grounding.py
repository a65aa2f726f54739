"""Whether an answer written after a tool call reports what the tool returned.

Decision accuracy cannot see an answer that drops the result: conciseness LoRA candidates
shortened "I found 3 matches in orders/serializers.py and orders/views.py ..." to "Sure! I ran
the tool for you. Feel free to ask if anything is unclear." and kept every tool-or-answer
decision. A fact is a file path, a number or a code identifier (snake_case or camelCase);
an answer is grounded when it states a fact of the tool's output, or the output's line
count, that the user's question did not already contain.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_FACT = re.compile(
    r"[\w-]+(?:/[\w.-]*\w)+"  # a path with a directory: orders/views.py
    r"|\b[\w-]+\.(?:py|md|txt|toml|cfg|ini|json|ya?ml|html)\b"  # a file name: manage.py
    r"|\b\d+\b"  # a number: a count, a line number
    r"|\b[A-Za-z]*[a-z][A-Z]\w*"  # camelCase or CamelCase: OrderViewSet
    r"|\b\w+_\w+\b"  # snake_case: cancel_order
)


def facts(text: str) -> set[str]:
    return set(_FACT.findall(text))


def grounded(answer: str | None, tool_outputs: Sequence[str], query: str) -> bool | None:
    """True when `answer` states a fact of the tool outputs that `query` does not; None when
    no tool returned anything or there is no answer (nothing to judge)."""
    if not tool_outputs or not answer:
        return None
    known: set[str] = set()
    for out in tool_outputs:
        known |= facts(out) | {str(len(out.splitlines()))}
    return bool((facts(answer) & known) - facts(query))

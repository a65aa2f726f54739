"""The production agent, its sandboxed tools, the query sets and the grounding check."""

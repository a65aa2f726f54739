"""Commands of `punie-lab` that are not DVC stages: checks, benchmarks and writers."""

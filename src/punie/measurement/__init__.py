"""Timed agent runs, per-query records, the direct floor, in-process probes, server memory."""

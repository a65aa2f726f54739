"""Markdown reports and the README results section: metrics in, text out."""

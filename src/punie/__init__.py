"""Punie speed lab: make a local PydanticAI coding agent fast without making it dumb."""

__version__ = "0.1.0"

"""Serving and training helpers around mlx-lm (names kept from the Phase 21 plan)."""

"""Shared helpers: losses, metrics, checkpoints, distributed, palettes, logging, CLI flags."""

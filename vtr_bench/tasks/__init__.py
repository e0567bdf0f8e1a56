"""Bundled local lmms-eval tasks (materialised into a cache folder on first use)."""

"""Synthetic shapes data and CPU training of the bundled tiny checkpoints."""

"""``python -m vtr_bench [overrides]``: the Hydra entry point (see README)."""
from vtr_bench.cli import main

if __name__ == "__main__":
    main()

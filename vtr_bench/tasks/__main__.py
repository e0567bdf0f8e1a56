"""``python -m vtr_bench.tasks NAME [CACHE_DIR]``: materialise a bundled task and print its folder.

The folder is what lmms-eval's ``--include_path`` needs to find the bundled tasks (e.g. ``shapes``).
"""
import importlib
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    """Print the include path of bundled task package ``argv[0]`` (cache dir ``argv[1]``, default runs/cache)."""
    if not argv:
        print("usage: python -m vtr_bench.tasks NAME [CACHE_DIR]", file=sys.stderr)
        return 2
    try:
        package = importlib.import_module(f"vtr_bench.tasks.{argv[0]}")
    except ModuleNotFoundError:
        print(f"vtr_bench.tasks: error: no bundled task package {argv[0]!r}", file=sys.stderr)
        return 2
    cache = Path(argv[1]) if len(argv) > 1 else Path("runs") / "cache"
    print(package.materialize(cache / "tasks"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

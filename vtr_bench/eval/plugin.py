"""lmms-eval plugin: run a reduced model from lmms-eval's own CLI, with the same engine and settings.

Registered through the ``lmms_eval.models`` entry point (pyproject.toml)::

    lmms-eval --model vtr_bench --model_args model=tiny_llava,method=fastv,budget=0.3 \\
        --tasks shapes --include_path "$(python -m vtr_bench.tasks shapes)"

``--model_args`` are vtr_bench config overrides: ``model``, ``method``, ``budget``, ``positions``, ``seed`` and any
dotted key (``method.k=1``); they compose the same Hydra config as ``python -m vtr_bench``.
"""
from __future__ import annotations

import sys
from pathlib import Path

from lmms_eval.models.registry_v2 import ModelManifest

from vtr_bench.eval.lmms_model import ReducedLMM

MANIFEST = ModelManifest(model_id="vtr_bench", simple_class_path="vtr_bench.eval.plugin.VtrBenchLMM")


def _override(key: str, value) -> str:
    return f"{key}={'null' if value is None else value}"


class VtrBenchLMM(ReducedLMM):
    """The vtr_bench model for lmms-eval's CLI (see the module docstring).

    Args:
        model: a ``conf/model`` name (default: the config's default model).
        method: a ``conf/method`` name (default: ``full``).
        budget: mean keep ratio (None: the method's own).
        positions: ``keep`` or ``renumber`` (None: the method's own).
        seed: seed of the method (random scorer, searches).
        batch_size: requests per forward.
        device: torch device (lmms-eval's ``--device``); default the config's ``run.device``.
        **overrides: further dotted config overrides (``method.k=1``, ``run.out_dir=...``).
    """

    def __init__(self, model: str | None = None, method: str | None = None, budget: float | None = None,
                 positions: str | None = None, seed: int = 0, batch_size: int = 1, device: str | None = None,
                 **overrides) -> None:
        from hydra import compose, initialize_config_dir
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        from vtr_bench.checks import check_config
        from vtr_bench.cli import CONF_DIR, quiet_environment
        from vtr_bench.errors import VtrError
        from vtr_bench.run import BenchmarkRecipe, run_directory

        args = [_override("budget", budget), _override("positions", positions), _override("seed", seed)]
        args += [_override(key, value) for key, value in (("model", model), ("method", method)) if value]
        args += [_override(k, v) for k, v in overrides.items()]
        if device:
            args.append(_override("run.device", device))
        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose(config_name="config", overrides=args)
            quiet_environment(cfg)
            check_config(cfg)
            recipe = BenchmarkRecipe(cfg, Path(run_directory(cfg)))
            recipe.setup()
        except (VtrError, HydraException, OmegaConfBaseException) as error:
            # lmms-eval prints a traceback and exits 0 on a model that fails to build: one line and exit 2 instead
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            print(f"vtr_bench: error: --model_args: {first}", file=sys.stderr)
            sys.exit(2)
        super().__init__(recipe.adapter, recipe.engine, batch_size=int(batch_size),
                         multi_image=str(cfg.benchmark.get("multi_image", "error")))

"""One run: load the model, compile the method to a keep schedule, evaluate through lmms-eval, measure, log.

Shaped like a torchtune recipe: ``BenchmarkRecipe(cfg, run_dir)`` → ``setup()`` → ``evaluate()`` → ``finish()``.
``run.mode=flops`` instead plans FLOPs from ``conf/model`` dims without loading any weights.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import statistics
import sys
from functools import cached_property
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vtr_bench.checks import check_config, check_writable_dir
from vtr_bench.eval.distributed import process_rank
from vtr_bench.errors import ConfigError, VtrError
from vtr_bench.methods.base import Method, check_budget
from vtr_bench.models.loader import local_weights_stamp
from vtr_bench.reduction.engine import POSITION_POLICIES
from vtr_bench.reduction.flops import DecoderDims, flops_report, kv_cache_bytes, prefill_macs

RUN_MODES = ("eval", "flops", "rank_stability")
RUNNER_KEYS = ("positions",)  # method-node keys the runner reads; not constructor arguments


def instantiate_method(node: DictConfig) -> Method:
    """Build the method object from its config node (``_target_`` + parameters, less :data:`RUNNER_KEYS`)."""
    from hydra.utils import instantiate

    params = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k not in RUNNER_KEYS}
    try:
        method = instantiate(params)
    except Exception as error:  # noqa: BLE001 - Hydra wraps constructor errors; report their first line
        cause = error.__cause__ or error
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(f"invalid method config: {str(cause).strip().splitlines()[0]}") from None
    if not isinstance(method, Method):
        raise ConfigError(f"method config must build a vtr_bench Method, got {type(method).__name__}")
    return method


def position_policy(cfg: DictConfig) -> str:
    """The RoPE position policy of a run: top-level ``positions`` when set, else the method's own
    (``method.positions``; ``keep`` when a method config names none)."""
    policy = cfg.get("positions")
    if policy is None:
        policy = cfg.method.get("positions") or "keep"
    if policy not in POSITION_POLICIES:
        raise ConfigError(f"positions must be one of {POSITION_POLICIES} (or null: the method's own), got {policy!r}")
    return str(policy)


def dims_from_config(model_cfg: DictConfig) -> DecoderDims:
    """Decoder dims of a model from its config node (weights-free)."""
    d = model_cfg.dims
    return DecoderDims(layers=int(d.layers), hidden=int(d.hidden), ffn=int(d.ffn), heads=int(d.heads),
                       kv_heads=int(d.kv_heads))


def flops_convention(cfg: DictConfig) -> dict:
    """The FLOPs convention of a run (``flops`` config group), as results files record it."""
    f = cfg.flops
    return {"name": str(f.get("name", "custom")), "ffn": str(f.ffn), "gqa": bool(f.gqa), "text": bool(f.text),
            "unit": "TMACs: multiply-accumulates / 1e12 (the literature's 'TFLOPs'), prefill, LLM decoder"}


def plan_flops(cfg: DictConfig) -> dict:
    """FLOPs of the method's schedule from the model's config dims, without loading weights."""
    dims = dims_from_config(cfg.model)
    n_vision = int(cfg.flops.vision_tokens or cfg.model.dims.vision_tokens)
    method = instantiate_method(cfg.method)
    schedule, _ = method.build(dims.layers, cfg.budget, cfg.seed)
    convention = flops_convention(cfg)
    report = flops_report(method.planned_counts(schedule, n_vision), n_vision, int(cfg.flops.text_tokens), dims,
                          ffn=convention["ffn"], gqa=convention["gqa"], count_text=convention["text"])
    return {"model": cfg.model.name, "method": method_name(cfg), "label": method.label(cfg.budget),
            "budget_requested": cfg.budget, "ratios": list(schedule.ratios), "positions": position_policy(cfg),
            "flops_convention": convention, **report}


def method_name(cfg: DictConfig) -> str:
    """The method's config-group choice (e.g. ``fastv``)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.choices["method"]
    except ValueError:  # not under a Hydra app (configs composed by tests or the lmms-eval plugin)
        return instantiate_method(cfg.method).name


def _peak_memory_mib(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


class BenchmarkRecipe:
    """An accuracy + efficiency run of one model × method × benchmark (× budget).

    Args:
        cfg: the composed config.
        run_dir: where results.json and the W&B files go.
    """

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.method = instantiate_method(cfg.method)
        self.method.check(cfg.budget)
        self.positions = position_policy(cfg)
        self.samples: list[dict] = []  # per-sample rows of the evaluation (samples.jsonl)
        self.samples_per_rank: list[int] = []

    def setup(self) -> None:
        """Check the tasks (datasets, judges), seed, load the model, compile the method and build the engine."""
        import torch

        from vtr_bench.eval.evaluate import check_tasks, task_manager
        from vtr_bench.models.loader import load_adapter

        cfg = self.cfg
        bench = cfg.benchmark
        if self.method.needs_objective:  # before the model loads and the search runs, not after
            check_writable_dir(cfg.search.cache_dir, "search.cache_dir")
            check_writable_dir(cfg.search.schedules_dir, "search.schedules_dir")
        self.task_manager = task_manager(list(bench.tasks), bench.local, cfg.run.cache_dir,
                                         list(bench.get("include_path") or []))
        self.judged = check_tasks(self.task_manager, list(bench.tasks), bench.get("require_judge", True))
        torch.manual_seed(cfg.seed)
        self.adapter = load_adapter(cfg.model, device=cfg.run.device)
        layers = len(self.adapter.decoder_layers)
        self.objective = None
        if self.method.needs_objective:
            from vtr_bench.search.objective import objective_from_config

            self.objective = objective_from_config(cfg, self.adapter, self.method.scorer(cfg.seed), self.run_dir,
                                                   positions=self.positions)
        self.schedule, scorer = self.method.build(layers, cfg.budget, cfg.seed, objective=self.objective)
        self.engine = self.adapter.engine(self.schedule, scorer, positions=self.positions)

    def evaluate(self) -> dict | None:
        """Run the benchmark's tasks through lmms-eval and return the results dict (None on a data-parallel rank
        other than 0)."""
        from vtr_bench.eval.evaluate import evaluate_tasks

        bench, run_cfg = self.cfg.benchmark, self.cfg.run
        evaluation = evaluate_tasks(
            self.adapter, self.engine, list(bench.tasks), local=bench.local, cache_dir=run_cfg.cache_dir,
            limit=bench.limit, batch_size=bench.batch_size, seed=self.cfg.seed, show_progress=run_cfg.show_progress,
            manager=self.task_manager, multi_image=bench.get("multi_image", "error"), output_dir=self.run_dir,
            label=f"{self.cfg.model.name} {method_name(self.cfg)}")
        if evaluation is None:
            return None
        for task, used in evaluation.generation.items():
            if used["empty_answers"]:
                print(f"vtr_bench: warning: {task}: {used['empty_answers']} of {used['samples']} answers are empty "
                      f"(results.json generation.{task} says how they ended)", file=sys.stderr)
        self.samples, self.samples_per_rank = evaluation.samples, evaluation.samples_per_rank
        return self._results(evaluation.metrics, evaluation.records, evaluation.generation)

    @cached_property
    def task_files(self) -> dict:
        """The benchmark's task-file digests (:func:`benchmark_stamp`), read once per run."""
        return benchmark_stamp(self.cfg)

    @cached_property
    def pairing(self) -> str:
        """This run's :func:`pairing_key`."""
        return pairing_key(self.cfg, self.task_files)

    def loyalty(self) -> dict | None:
        """Agreement with the full model's answers on the same samples (:func:`~vtr_bench.eval.samples.loyalty`),
        from a complete ``full`` run of the same pairing under ``run.out_dir`` (None: there is none yet)."""
        from vtr_bench.eval.samples import loyalty, read_samples
        from vtr_bench.tracking.results import load_results

        if method_name(self.cfg) == "full":
            return None
        pairing = self.pairing
        for path in sorted((Path(self.cfg.run.out_dir) / self.cfg.model.name / "full").glob("*/results.json")):
            try:
                full = load_results(path.parent) or {}
                if full.get("status") == "complete" and full.get("pairing") == pairing:
                    mine = {(r["task"], r["doc_id"]): r for r in self.samples}
                    return {"full_run": str(path.parent), "tasks": loyalty(mine, read_samples(path.parent))}
            except (VtrError, OSError, ValueError, KeyError, TypeError):
                continue  # an unreadable or older full run: not a reference
        return None

    def _results(self, metrics: dict, records, generation: dict) -> dict:
        from vtr_bench.eval.lmms_model import latency_summary
        from vtr_bench.tracking.results import environment_info

        cfg = self.cfg
        dims = DecoderDims.from_hf_config(self.adapter.text_config)
        convention = flops_convention(cfg)
        kwargs = dict(ffn=convention["ffn"], gqa=convention["gqa"])
        value_bytes = next(self.adapter.model.parameters()).element_size()
        macs, macs_full, budgets, kv_bytes, kv_bytes_full = [], [], [], [], []
        for r in records:
            text, full = r.prompt_tokens - r.n_vision, [r.n_vision] * dims.layers
            counted = text if convention["text"] else 0
            macs.append(prefill_macs(r.processed, counted, dims, **kwargs))
            macs_full.append(prefill_macs(full, counted, dims, **kwargs))
            kv_bytes.append(kv_cache_bytes(r.processed, text, dims, bytes_per_value=value_bytes))
            kv_bytes_full.append(kv_cache_bytes(full, text, dims, bytes_per_value=value_bytes))
            budgets.append(sum(r.processed) / (dims.layers * r.n_vision) if r.n_vision else 1.0)
        decode = [s for r in records for s in r.decode_seconds]
        mean_keep = [statistics.fmean(r.processed[layer] for r in records) for layer in range(dims.layers)]
        return {
            "status": "complete",
            "model": cfg.model.name,
            "method": method_name(cfg),
            "method_params": self.method.describe(cfg.budget),
            "label": self.method.label(cfg.budget),
            "benchmark": {"config": cfg.benchmark.name, "tasks": sorted(metrics)},
            "task_files": self.task_files,
            "generation": generation,
            "pairing": self.pairing,
            "loyalty": self.loyalty(),
            "judge": {"tasks": self.judged, "key_set": bool(os.environ.get("OPENAI_API_KEY")),
                      "model_version": os.environ.get("MODEL_VERSION"),
                      "endpoint": os.environ.get("OPENAI_API_URL") or os.environ.get("OPENAI_API_BASE")},
            "positions": self.positions,
            "positions_source": "method" if cfg.get("positions") is None else "override",
            "seed": cfg.seed,
            "budget_requested": cfg.budget,
            "budget_achieved": statistics.fmean(budgets),
            "schedule_ratios": list(self.schedule.ratios),
            "keep_mean_per_layer": mean_keep,
            "metrics": metrics,
            "tflops": statistics.fmean(macs) / 1e12,
            "tflops_full": statistics.fmean(macs_full) / 1e12,
            "flops_ratio": sum(macs) / sum(macs_full),
            "vision_tower_tflops_per_image": self.adapter.vision_tower_macs() / 1e12,
            "prompt_tokens_mean": statistics.fmean(r.prompt_tokens for r in records),
            "kv_cache_bytes": statistics.fmean(kv_bytes),
            "kv_cache_bytes_full": statistics.fmean(kv_bytes_full),
            "flops_convention": convention,
            "latency": {"prefill": latency_summary([r.prefill_seconds for r in records]),
                        "decode_per_token": latency_summary(decode)},
            "peak_memory_mib": _peak_memory_mib(cfg.run.device),
            "samples": len(records),
            "data_parallel": {"processes": len(self.samples_per_rank), "samples_per_rank": self.samples_per_rank},
            "environment": environment_info(),
            "config": OmegaConf.to_container(cfg, resolve=True),
        }


# Config keys that change where or how a run is shown or cached, not what it computes: left out of the run id (so
# spelling run.out_dir as runs, ./runs or an absolute path gives one run). The search speed-ups that give the same
# decisions (early stop, prefix reuse: tests/test_search_speed.py) are among them; the search batch size is not.
VOLATILE_KEYS = {"run": ("out_dir", "cache_dir", "show_progress", "force"),
                 "search": ("cache_dir", "schedules_dir", "early_stop", "prefix_cache_mib"),
                 "logger": None, "hub": None}


def searches(cfg: DictConfig) -> bool:
    """Whether the run's method searches its schedule (reads the ``search:`` block); True when the method config
    does not build (the run then stops with that error)."""
    try:
        return bool(instantiate_method(cfg.method).needs_objective)
    except Exception:  # noqa: BLE001 - reported by the run itself
        return True


def file_stamp(path) -> str | None:
    """SHA-256 of a regular file's bytes (None: missing or not a regular file; the run reports that itself)."""
    from vtr_bench.eval.task_files import file_digest

    path = Path(str(path))
    return file_digest(path) if path.is_file() else None


def benchmark_stamp(cfg: DictConfig) -> dict:
    """The lmms-eval version and a digest per task of the benchmark's task files (YAMLs, hooks, local data)."""
    from importlib.metadata import version

    from vtr_bench.eval.task_files import tasks_digest

    bench = cfg.benchmark
    return {"lmms_eval": version("lmms_eval"), "tasks": tasks_digest(list(bench.tasks), bench.local, cfg.run.cache_dir,
                                                                     list(bench.get("include_path") or []))}


def pairing_key(cfg: DictConfig, task_files: dict | None = None) -> str:
    """Runs with equal keys evaluated the same samples of the same model (config, weights, device), tasks (and their
    files: ``task_files``, :func:`benchmark_stamp` when None) and limit, whatever the method: their
    ``samples.jsonl`` pair by task and doc id."""
    data = {"model": OmegaConf.to_container(cfg.model, resolve=True), "weights": local_weights_stamp(cfg.model),
            "device": cfg.run.device, "tasks": list(cfg.benchmark.tasks), "limit": cfg.benchmark.limit,
            "task_files": benchmark_stamp(cfg) if task_files is None else task_files}
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_id(cfg: DictConfig) -> str:
    """A deterministic id from the resolved config (the ``search:`` block only for methods that search; keys of
    :data:`VOLATILE_KEYS` left out) and the contents of the files the run reads (the local checkpoint's weights, a
    saved schedule, the tasks' YAMLs, hooks and local data), budget tag + hash: a re-run finds its finished
    results, and a retrained checkpoint, a rewritten schedule file or an edited task does not."""
    data = OmegaConf.to_container(cfg, resolve=True)
    if (weights := local_weights_stamp(cfg.model)) is not None:
        data["weights"] = weights
    if cfg.method.get("path") is not None:
        data["schedule_file"] = file_stamp(cfg.method.path)
    if cfg.run.mode == "eval":
        data["task_files"] = benchmark_stamp(cfg)
    if not searches(cfg):
        data.pop("search", None)  # a method that does not search never reads it
    for key, subkeys in VOLATILE_KEYS.items():
        if subkeys is None:
            data.pop(key, None)
        else:
            for sub in subkeys:
                data.get(key, {}).pop(sub, None)
    digest = hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]
    tag = "default" if cfg.budget is None else f"b{cfg.budget}"
    return f"{tag}-{digest}"


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def _path_part(value, what: str) -> str:
    """A run-directory component: letters, digits and ``._+-``, not starting with a dot (so never ``..``)."""
    text = str(value)
    if not _SAFE_NAME.fullmatch(text):
        raise ConfigError(f"{what} {text!r} cannot name a run directory (use letters, digits and ._+-)")
    return text


def run_directory(cfg: DictConfig) -> Path:
    """``<run.out_dir>/<model>/<method>/<run id>`` (``rank_stability`` runs under the method ``rank_stability``);
    the budget is validated first and every component is checked, so no run writes outside ``run.out_dir``."""
    check_budget(cfg.budget)
    method = "rank_stability" if cfg.run.mode == "rank_stability" else method_name(cfg)
    return Path(cfg.run.out_dir) / _path_part(cfg.model.name, "model.name") / _path_part(method, "method") / \
        _path_part(run_id(cfg), "run id")


def _prepare_run_dir(cfg: DictConfig, run_dir: Path) -> dict | None:
    """Finished results when this run is already complete (and not forced); else make the dir and save the config."""
    from vtr_bench.tracking.results import is_complete, load_results

    if is_complete(run_dir) and not cfg.run.force:
        print(f"vtr_bench: skipped {run_dir}: already complete (run.force=true recomputes)", file=sys.stderr)
        return load_results(run_dir)
    if (run_dir / "results.json").is_dir():
        raise ConfigError(f"{run_dir / 'results.json'} is a directory: remove it so that results can be written")
    if (run_dir / "config.yaml").exists():
        print(f"vtr_bench: re-running incomplete run {run_dir}", file=sys.stderr)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.txt").unlink(missing_ok=True)
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    except OSError as error:
        raise ConfigError(f"cannot write the run directory {run_dir}: {error.strerror or error}") from None
    return None


def run(cfg: DictConfig, group: str | None = None) -> dict:
    """Execute one configured run (any mode) and return its results dict.

    Args:
        cfg: the composed config.
        group: W&B group (the sweep's name in a multirun).
    """
    if cfg.run.mode not in RUN_MODES:
        raise ConfigError(f"run.mode must be one of {RUN_MODES}, got {cfg.run.mode!r}")
    check_config(cfg)
    if cfg.run.mode == "flops":
        report = plan_flops(cfg)
        print(json.dumps(report))
        return report
    run_dir = run_directory(cfg)
    recipe = BenchmarkRecipe(cfg, run_dir) if cfg.run.mode == "eval" else None  # validates before any file
    rank, world = process_rank()
    if world > 1 and (recipe is None or recipe.method.needs_objective):
        raise ConfigError("under a data-parallel launch (WORLD_SIZE > 1) only evaluations run: searches and "
                          "rank_stability run in one process")
    if rank != 0:  # data-parallel: rank 0 alone writes; the others evaluate their shard and return
        from vtr_bench.tracking.results import is_complete, load_results

        if is_complete(run_dir) and not cfg.run.force:
            return load_results(run_dir)
        return _execute(cfg, recipe, run_dir, group) or {}
    finished = _prepare_run_dir(cfg, run_dir)
    if finished is not None:
        return finished
    try:
        return _execute(cfg, recipe, run_dir, group)
    except Exception as error:
        _mark_failed(run_dir, error)
        raise


def _mark_failed(run_dir: Path, error: Exception) -> None:
    """Leave ``error.txt`` (one line) in a run dir whose run failed; finished results stay as they were."""
    first_line = (str(error).splitlines() or [""])[0]
    try:
        (run_dir / "error.txt").write_text(f"{type(error).__name__}: {first_line}\n")
    except OSError:
        pass


def _execute(cfg: DictConfig, recipe: "BenchmarkRecipe | None", run_dir: Path, group: str | None) -> dict:
    if recipe is None:
        from vtr_bench.search.rank import rank_stability

        return rank_stability(cfg, run_dir)
    from vtr_bench.tracking.results import write_json_atomic
    from vtr_bench.tracking.wandb_logger import make_logger

    recipe.setup()
    name = method_name(cfg)
    if process_rank()[0] != 0:
        recipe.evaluate()  # this rank's shard; rank 0 gathers, writes and logs
        return None
    logger = make_logger(cfg.logger.mode, project=cfg.logger.project, save_dir=run_dir, group=group,
                         tags=[cfg.model.name, name, f"budget={cfg.budget}"],
                         name=f"{cfg.model.name}-{name}-{cfg.budget}")
    try:
        logger.start(OmegaConf.to_container(cfg, resolve=True))
        if recipe.objective is not None:
            from vtr_bench.search.report import record_search

            record_search(recipe.method, recipe.objective, cfg.search.schedules_dir, run_dir, logger)
        results = recipe.evaluate()
        try:
            from vtr_bench.eval.samples import write_samples

            json.dumps(results)  # a result that cannot be written fails before any file is replaced
            # samples before results.json (which records their digest): a complete run always has its own samples
            results["samples_file"] = write_samples(run_dir, recipe.samples)
            write_json_atomic(run_dir / "results.json", results)
        except OSError as error:
            raise ConfigError(f"cannot write {run_dir / 'results.json'}: {error.strerror or error}") from None
        logger.log_metrics({k: results[k] for k in ("budget_achieved", "tflops", "flops_ratio", "latency",
                                                    "peak_memory_mib", "samples")} | {"metrics": results["metrics"]})
        columns = ["task", "doc_id", "prompt_sha256", "answer", "target", "scores", "prefill_ms", "ended"]
        logger.log_table("samples", columns, [[json.dumps(row[c]) if c == "scores" else row[c] for c in columns]
                                              for row in recipe.samples])
        logger.log_table("keep_schedule", ["layer", "ratio", "mean_kept_tokens"],
                         [[i, r, k] for i, (r, k) in enumerate(zip(results["schedule_ratios"],
                                                                   results["keep_mean_per_layer"]))])
    finally:
        logger.finish()
    summary = {task: m for task, m in results["metrics"].items()}
    print(json.dumps({"run_dir": str(run_dir), "metrics": summary, "budget_achieved": results["budget_achieved"],
                      "flops_ratio": results["flops_ratio"]}))
    return results

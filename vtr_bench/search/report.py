"""Outputs of a search: the saved schedule (``runs/schedules/*.json``), plots (PNG) and W&B logging."""
from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

from vtr_bench.search.objective import digest
from vtr_bench.search.result import SearchResult
from vtr_bench.tracking.results import write_json_atomic

SCHEDULE_PLOT = "search_schedule.png"
CONVERGENCE_PLOT = "bo_convergence.png"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def plot_schedule(ratios: Sequence[float], path: Path, title: str) -> Path:
    """A per-layer bar plot of keep ratios."""
    fig, ax = _pyplot().subplots(figsize=(6, 3.6))
    ax.bar(range(len(ratios)), ratios, color="tab:blue")
    ax.set(xlabel="decoder layer", ylabel="keep ratio", ylim=(0, 1.05), title=title)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def plot_convergence(values: Sequence[float], path: Path) -> Path:
    """Accuracy of each Bayesian-optimisation call and the best so far."""
    best = [max(values[: i + 1]) for i in range(len(values))]
    calls = range(1, len(values) + 1)
    fig, ax = _pyplot().subplots(figsize=(6, 3.6))
    ax.plot(calls, values, "o", color="tab:gray", label="call")
    ax.plot(calls, best, "-", color="tab:red", label="best so far")
    ax.set(xlabel="BO call", ylabel="search accuracy", title="P-Sigmoid Bayesian optimisation")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_heatmap(matrix: Sequence[Sequence[float]], path: Path, title: str, label: str) -> Path:
    """A square layer x layer heatmap in [-1, 1], values written in the cells up to 16 layers."""
    size = len(matrix)
    fig, ax = _pyplot().subplots(figsize=(2.5 + 0.5 * size, 1.5 + 0.5 * size))
    image = ax.imshow(matrix, vmin=-1, vmax=1, cmap="RdBu_r")
    for i in range(size if size <= 16 else 0):
        for j in range(size):
            ax.text(j, i, f"{matrix[i][j]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if abs(matrix[i][j]) > 0.6 else "black")
    ax.set(xlabel="layer", ylabel="layer", title=title, xticks=range(size), yticks=range(size))
    fig.colorbar(image, ax=ax, label=label)
    return _save(fig, path)


def save_schedule(result: SearchResult, method: str, method_params: dict, provenance: dict,
                  schedules_dir: str | Path) -> Path:
    """Write a searched schedule with its provenance, readable by ``method=schedule method.path=...``.

    Args:
        result: the search result.
        method: the method's config name.
        method_params: the method's parameters.
        provenance: where the search ran (model, model hash, task, split, samples, seed, scorer, ...).
        schedules_dir: destination folder.

    Returns:
        The file ``<model>-<method>-<tag>-<task>-n<samples>-s<seed>-<setting>.json``, ``<setting>`` a short hash of
        the method's parameters and the search's provenance, so that different searches never share a file.
    """
    what = {"method_params": method_params, **{k: v for k, v in provenance.items() if k != "new_evaluations"}}
    setting = digest(what)[:8]
    name = (f"{provenance.get('model', 'model')}-{method}-{result.tag}-{provenance.get('task', 'task')}"
            f"-n{provenance.get('samples', 'all')}-s{provenance.get('seed', 0)}-{setting}.json")
    path = Path(schedules_dir) / name
    write_json_atomic(path, {**result.summary(), "method": method, "method_params": method_params, **provenance,
                             "created": datetime.datetime.now(datetime.timezone.utc).isoformat()})
    return path


def record_search(method, objective, schedules_dir: str | Path, run_dir: str | Path, logger) -> Path:
    """Save a finished search's schedule, plot it, and log trace, schedule and plots to W&B.

    Args:
        method: the search method after ``build`` (a :class:`~vtr_bench.search.method.SearchMethod`).
        objective: its :class:`~vtr_bench.search.objective.ModelObjective` (provenance, trace, new evaluations).
        schedules_dir: where the schedule JSON goes.
        run_dir: where the plots go (the trace is already there).
        logger: a started W&B logger (or the null logger).

    Returns:
        The saved schedule's path (also printed).
    """
    result, run_dir = method.result, Path(run_dir)
    provenance = {**objective.provenance, "new_evaluations": objective.new_evaluations}
    params = {k: v for k, v in method.describe().items() if k not in ("name", "search", "label")}
    path = save_schedule(result, method.name, params, provenance, schedules_dir)
    result.params["saved_to"] = str(path)  # lands in results.json through method.describe()
    plots = {"search_schedule": plot_schedule(result.schedule.ratios, run_dir / SCHEDULE_PLOT,
                                              f"{method.name} {result.tag}: search accuracy {result.accuracy:.3f}")}
    if "bo_values" in result.params:
        plots["bo_convergence"] = plot_convergence(result.params["bo_values"], run_dir / CONVERGENCE_PLOT)
    for line in objective.trace:  # an early-stopped evaluation has no accuracy, only its decision
        logger.log_metrics({"search/eval": line["eval"], "search/budget": line["budget"],
                            "search/cached": int(line["cached"]), "search/early": int(bool(line.get("early"))),
                            **({} if line["accuracy"] is None else {"search/accuracy": line["accuracy"]})})
    logger.log_table("search_trace", ["eval", "budget", "accuracy", "passed", "early", "cached", "seconds", "ratios"],
                     [[t["eval"], t["budget"], t["accuracy"], t.get("passed"), bool(t.get("early")), t["cached"],
                       t["seconds"], str(t["ratios"])] for t in objective.trace])
    logger.log_table("searched_schedule", ["layer", "keep_ratio"], [[i, r] for i, r in
                                                                    enumerate(result.schedule.ratios)])
    logger.log_metrics({"search/final_accuracy": result.accuracy, "search/reference_accuracy":
                        result.reference_accuracy, "search/evaluations": result.evaluations,
                        "search/new_evaluations": objective.new_evaluations})
    for key, png in plots.items():
        logger.log_image(key, png)
    print(f"vtr_bench: searched schedule saved to {path}", flush=True)
    return path

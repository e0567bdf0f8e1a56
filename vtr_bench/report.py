"""`make report`: a markdown table and PNG plots built from the run directories alone (no W&B needed).

    python -m vtr_bench.report [--runs runs] [--out runs/report]

Reads every complete ``results.json`` under ``--runs`` and writes ``report.md`` (accuracy per task, average,
TFLOPs, FLOPs ratio, prefill latency, achieved budget; then per model a method x budget table), ``pareto.png``
(accuracy vs TFLOPs, Pareto front per model), ``schedules.png`` (per-layer keep ratios of each method and budget)
and ``accuracy_vs_budget.png`` (one panel per model).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vtr_bench.eval.samples import headline, paired_scores, read_samples
from vtr_bench.eval.stats import DEFAULT_RESAMPLES, bootstrap_ci

def primary_metric(metrics: dict) -> float | None:
    """The headline score of one task's metric table (:func:`~vtr_bench.eval.samples.headline`)."""
    name = headline(metrics)
    return None if name is None else float(metrics[name])


REQUIRED_KEYS = ("model", "method", "budget_achieved", "metrics", "tflops", "flops_ratio", "latency",
                 "schedule_ratios")


def _row(path: Path, results: dict) -> dict:
    """One report row of a complete results file."""
    scores = {task: primary_metric(m) for task, m in results.get("metrics", {}).items() if isinstance(m, dict)}
    scores = {task: s for task, s in scores.items() if s is not None}
    return {
        "run_dir": str(path.parent), "model": results["model"], "method": results["method"],
        "budget": results.get("budget_requested"), "budget_achieved": float(results["budget_achieved"]),
        "scores": scores, "average": sum(scores.values()) / len(scores) if scores else None,
        "tflops": results["tflops"], "flops_ratio": results["flops_ratio"],
        "prefill_ms": results["latency"]["prefill"]["median_ms"], "ratios": results["schedule_ratios"],
        "label": results.get("label"), "positions": results.get("positions"),
        "flops": (results.get("flops_convention") or {}).get("name"), "pairing": results.get("pairing"),
        "params": {k: v for k, v in (results.get("method_params") or {}).items() if k not in ("search", "name")},
    }


def collect(runs_dir: Path) -> list[dict]:
    """Complete results under ``runs_dir`` as flat rows (one per run), sorted by model, method, budget."""
    rows = []
    for path in sorted(runs_dir.rglob("results.json")):
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:  # unreadable, binary or half-written
            print(f"vtr_bench: warning: skipped {path}: not readable JSON ({type(error).__name__})", file=sys.stderr)
            continue
        if not isinstance(results, dict) or results.get("status") != "complete":
            if not isinstance(results, dict):
                print(f"vtr_bench: warning: skipped {path}: not a results object", file=sys.stderr)
            continue
        missing = [k for k in REQUIRED_KEYS if k not in results]
        if missing or not isinstance(results.get("metrics"), dict):
            print(f"vtr_bench: warning: skipped {path}: missing {missing or ['metrics']}", file=sys.stderr)
            continue
        try:
            rows.append(_row(path, results))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            print(f"vtr_bench: warning: skipped {path}: malformed ({type(error).__name__}: {error})", file=sys.stderr)
    rows.sort(key=lambda r: (r["model"], r["method"], -(r["budget_achieved"])))
    return rows


def paired_stats(rows: list[dict], resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> None:
    """Add to each row its accuracy interval (``accuracy_ci``) and its paired comparison with the full model
    (``vs_full``) and with ``random`` at the same requested budget (``vs_random``) of the same pairing (same model,
    tasks, files, limit): :func:`vtr_bench.compare.compare`'s average entry plus ``answer_match`` (loyalty). Rows
    without ``samples.jsonl`` (older runs) get None."""
    from vtr_bench.compare import compare
    from vtr_bench.errors import VtrError

    loaded: dict[str, dict | None] = {}

    def samples(row):
        if row["run_dir"] not in loaded:
            try:
                loaded[row["run_dir"]] = read_samples(row["run_dir"])
            except VtrError:
                loaded[row["run_dir"]] = None
        return loaded[row["run_dir"]]

    for row in rows:
        row["accuracy_ci"] = row["vs_full"] = row["vs_random"] = None
        mine = samples(row)
        if mine is None:
            continue
        own = paired_scores(mine, mine)
        if own:
            row["accuracy_ci"] = bootstrap_ci({t: p["a"] for t, p in own.items()}, resamples, seed)
        for name in ("full", "random"):
            refs = [o for o in rows if o["method"] == name and o is not row and o["model"] == row["model"]
                    and o["pairing"] is not None and o["pairing"] == row["pairing"]
                    and (name == "full" or o["budget"] == row["budget"]) and samples(o) is not None]
            if refs and row["method"] != name:
                try:
                    result = compare(samples(refs[0]), mine, resamples, seed)
                except VtrError:
                    continue
                matches = [t["answer_match"] for t in result["tasks"].values() if t["answer_match"] is not None]
                row[f"vs_{name}"] = {**result["average"], "reference": refs[0]["run_dir"],
                                     "answer_match": sum(matches) / len(matches) if matches else None}


def _diff_cell(entry: dict | None) -> str:
    """``+0.012 [−0.004, +0.030] ≈`` (≈: the interval contains 0), or — without a paired reference."""
    if not entry:
        return "—"
    d = entry["diff"]
    return f"{d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]" + (" ≈" if d["contains_zero"] else "")


def markdown(rows: list[dict]) -> str:
    """The results table in markdown (TMACs: multiply-accumulates / 1e12 under each run's FLOPs convention; Δ:
    paired differences of the mean per-sample headline score with their 95% bootstrap interval, ≈ where it
    contains 0; p: exact McNemar; loyalty: share of answers identical to the full model's)."""
    tasks = sorted({t for r in rows for t in r["scores"]})
    head = ["model", "method", "paper's label", "positions", "budget", "achieved", *tasks, "average", "Δ vs full",
            "p vs full", "Δ vs random", "loyalty", "TMACs", "FLOPs ratio", "prefill ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fmt = lambda v, spec: "—" if v is None else format(v, spec)  # noqa: E731
    for r in rows:
        full = r.get("vs_full")
        p_value = (full or {}).get("mcnemar") or {}
        cells = [r["model"], r["method"], r["label"] or "—", r["positions"] or "—", fmt(r["budget"], ".3g"),
                 fmt(r["budget_achieved"], ".3f"),
                 *[fmt(r["scores"].get(t), ".3f") for t in tasks], fmt(r["average"], ".3f"),
                 _diff_cell(full), fmt(p_value.get("p_value"), ".3g"), _diff_cell(r.get("vs_random")),
                 fmt((full or {}).get("answer_match"), ".3f"),
                 fmt(r["tflops"], ".4g"), fmt(r["flops_ratio"], ".3f"), fmt(r["prefill_ms"], ".1f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _same_as_full(row: dict) -> str:
    """`` ≈`` when the paired interval of the row's difference to the full model contains 0."""
    full = row.get("vs_full")
    return " ≈" if full and full["diff"]["contains_zero"] else ""


def _setting(row: dict) -> dict:
    """What a run was run with: its method parameters and its position policy."""
    return {**row["params"], "positions": row.get("positions")}


def _variants(rows: list[dict]) -> list[str]:
    """The method parameters (position policy included) that tell apart runs of one method in one budget cell (e.g.
    G-Search's criterion and tolerance, FastV's k): each combination gets its own table row."""
    keys = set()
    for budget in {r["budget"] for r in rows}:
        cell = [_setting(r) for r in rows if r["budget"] == budget]
        for key in {k for params in cell for k in params}:
            if len({json.dumps(params.get(key), sort_keys=True) for params in cell}) > 1:
                keys.add(key)
    return sorted(keys)


def budget_tables(rows: list[dict]) -> str:
    """Per model, average accuracy with one row per method (one per setting where runs of a method in one budget
    column differ in their parameters: :func:`_variants`) and one column per requested budget (``none``: the
    method's own, e.g. the full model or G-Search), each cell ``accuracy (achieved budget)``, `` ≈`` where the 95%
    paired interval of its difference to the full model contains 0."""
    budgets = sorted({r["budget"] for r in rows if r["budget"] is not None}, reverse=True)
    columns = [None, *budgets] if any(r["budget"] is None for r in rows) else budgets
    head = ["method", *("none" if b is None else f"{b:g}" for b in columns)]
    out = []
    for model in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == model]
        lines = [f"**{model}** (average accuracy, achieved budget in brackets; ≈: not distinguishable from the full "
                 f"model, 95% paired bootstrap)", "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for method in sorted({r["method"] for r in mine}, key=lambda m: (m != "full", m)):
            runs = [r for r in mine if r["method"] == method and r["average"] is not None]
            keys = _variants(runs)
            settings = sorted({tuple(json.dumps(_setting(r).get(k), sort_keys=True) for k in keys) for r in runs})
            for setting in settings or [()]:
                chosen = [r for r in runs if tuple(json.dumps(_setting(r).get(k), sort_keys=True)
                                                   for k in keys) == setting]
                cells = [" / ".join(f"{r['average']:.3f} ({r['budget_achieved']:.3f})" + _same_as_full(r)
                                    for r in chosen if r["budget"] == b) or "—" for b in columns]
                name = method + (f" ({', '.join(f'{k}={json.loads(v)}' for k, v in zip(keys, setting))})"
                                 if keys else "")
                lines.append("| " + " | ".join([name, *cells]) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by a cheaper-or-equal, more accurate one (cost ascending)."""
    front, best = [], float("-inf")
    for cost, score in sorted(points, key=lambda p: (p[0], -p[1])):
        if score > best:
            front.append((cost, score))
            best = score
    return front


def _finish(fig, ax, path: Path, legend_size: int = 7, **legend) -> Path:
    """Grid, legend, tight layout, save as PNG and close; returns ``path``."""
    import matplotlib.pyplot as plt

    for axis in (ax if isinstance(ax, (list, tuple)) else [ax]):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=legend_size, **legend)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plots(rows: list[dict], out: Path) -> list[Path]:
    """Write the three report plots; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if r["average"] is not None]
    models = sorted({r["model"] for r in scored})
    methods = sorted({r["method"] for r in rows})

    panels = max(1, len(models))
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [r for r in scored if r["model"] == model]
        for method in methods:
            pts = [(r["tflops"], r["average"]) for r in mine if r["method"] == method]
            if pts:
                ax.scatter(*zip(*pts), label=method)
        front = pareto_front([(r["tflops"], r["average"]) for r in mine])
        ax.plot(*zip(*front), "k--", lw=1, label="Pareto front")
        ax.set(title=model, xlabel="prefill TFLOPs (LLM)", ylabel="average accuracy")
    paths = [_finish(fig, list(axes[0][:len(models)]), out / "pareto.png")]

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for r in rows:
        ax.plot(range(len(r["ratios"])), r["ratios"], marker=".",
                label=f"{r['model']} {r['method']} b={r['budget_achieved']:.2f}")
    ax.set(xlabel="decoder layer", ylabel="keep ratio", title="keep schedules", ylim=(0, 1.05))
    paths.append(_finish(fig, ax, out / "schedules.png", legend_size=6, ncol=2))

    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        for i, method in enumerate(methods):
            mine = sorted((r for r in scored if r["model"] == model and r["method"] == method),
                          key=lambda r: r["budget_achieved"])
            if mine:
                x, y = [r["budget_achieved"] for r in mine], [r["average"] for r in mine]
                yerr = [[r["average"] - r["accuracy_ci"]["low"], r["accuracy_ci"]["high"] - r["average"]]
                        if _interval_of_average(r) else [0.0, 0.0] for r in mine]
                ax.errorbar(x, y, yerr=list(zip(*yerr)), marker="os^vDP*X"[i % 8], color=plt.cm.tab10(i % 10),
                            label=method, capsize=2)
        ax.set(xlabel="achieved budget (mean keep ratio)", ylabel="average accuracy", title=model)
    paths.append(_finish(fig, list(axes[0][:len(models)]), out / "accuracy_vs_budget.png"))
    return paths


def _interval_of_average(row: dict) -> bool:
    """Whether the row's bootstrap interval is of its reported average (it is of the mean per-sample headline
    score, which differs for tasks aggregated otherwise, e.g. MME's pair scores): error bars only then."""
    ci = row.get("accuracy_ci")
    return bool(ci) and row["average"] is not None and abs(ci["estimate"] - row["average"]) < 1e-9


def build_report(runs_dir: Path, out: Path, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict:
    """Collect, compare (paired, :func:`paired_stats`), tabulate and plot; returns ``{"rows": ..., "files": [...]}``.
    """
    rows = collect(runs_dir)
    if not rows:
        raise FileNotFoundError(f"no complete results.json under {runs_dir}")
    paired_stats(rows, resamples, seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(markdown(rows) + "\n" + budget_tables(rows))
    (out / "report.json").write_text(json.dumps(rows, indent=1))
    files = [out / "report.md", out / "report.json", *plots(rows, out)]
    return {"rows": rows, "files": [str(f) for f in files]}


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description="Build runs/report from the run directories.")
    parser.add_argument("--runs", default="runs")
    parser.add_argument("--out", default=None, help="default: <runs>/report")
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--wandb", default="none", choices=("none", "offline", "online"),
                        help="also log the table and plots to a W&B run (group 'report')")
    args = parser.parse_args(argv)
    runs = Path(args.runs)
    out = Path(args.out) if args.out else runs / "report"
    try:
        report = build_report(runs, out, args.resamples, args.seed)
    except FileNotFoundError as error:
        print(f"vtr_bench.report: error: {error}", file=sys.stderr)
        return 2
    print(markdown(report["rows"]))
    print("wrote " + ", ".join(report["files"]))
    if args.wandb != "none":
        log_to_wandb(report, args.wandb, out)
    return 0


def log_to_wandb(report: dict, mode: str, save_dir: Path) -> None:
    """Upload the report's table and PNG plots to one W&B run (a W&B failure only warns)."""
    from vtr_bench.tracking.wandb_logger import make_logger

    logger = make_logger(mode, project="vtr_bench", save_dir=save_dir, group="report", name="report")
    try:
        logger.start({"runs": len(report["rows"])})
        columns = ["model", "method", "label", "positions", "budget", "budget_achieved", "average", "tflops",
                   "flops_ratio", "prefill_ms"]
        logger.log_table("results", columns, [[r[c] for c in columns] for r in report["rows"]])
        for path in report["files"]:
            if path.endswith(".png"):
                logger.log_image(Path(path).stem, path)
    finally:
        logger.finish()


if __name__ == "__main__":
    sys.exit(main())

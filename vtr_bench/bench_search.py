"""Search-cost benchmark (`make bench-search`): G-Search and one P-Sigmoid search with each speed-up off and on.

Every search runs in this one process on the same loaded model, each with an empty evaluation cache of its own
(nothing is reused between settings), on the configured search split (``search.task``, ``search.limit``) with the
methods' default parameters. A setting switches the three speed-ups of ``search:``: ``batch_size`` (batched
evaluation), ``early_stop`` (a G-Search candidate stops once its answers decide pass / fail) and
``prefix_cache_mib`` (prefill prefixes shared across evaluations). For each: the search's wall time (model loading
excluded), objective calls and evaluations computed, decoder-layer forwards computed (x samples; prefill and
decode apart; and the prefill's token-layers: forwards x sequence length, which is what prefill compute scales
with) and whether the schedule (and, for P-Sigmoid, the whole BO trajectory) equals the plain search's.

    python -m vtr_bench.bench_search --model tiny_llava --out benchmarks/results
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from vtr_bench.errors import VtrError

CONF = Path(__file__).resolve().parent / "conf"


def settings(batch_size: int, prefix_mib: float) -> list[dict]:
    """The speed-up settings timed: all off (the plain search), each alone, all on."""
    off = {"batch_size": 1, "early_stop": False, "prefix_cache_mib": 0}
    return [{"name": "plain", **off},
            {"name": "batched", **off, "batch_size": batch_size},
            {"name": "early stop", **off, "early_stop": True},
            {"name": "prefix reuse", **off, "prefix_cache_mib": prefix_mib},
            {"name": "all", "batch_size": batch_size, "early_stop": True, "prefix_cache_mib": prefix_mib}]


def _compose(model: str, method: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose("config", overrides=[f"model={model}", f"method={method}", *overrides])


def time_search(adapter, cfg, setting: dict, cache_root: Path, budget: float | None) -> dict:
    """Run the configured search once with ``setting``'s speed-ups and an empty cache; what it cost and found."""
    from vtr_bench.run import instantiate_method, position_policy
    from vtr_bench.search.objective import ModelObjective

    method = instantiate_method(cfg.method)
    search = cfg.search
    objective = ModelObjective(adapter, method.scorer(cfg.seed), str(search.task), local=search.local,
                               task_cache_dir=cfg.run.cache_dir, cache_dir=cache_root / setting["name"],
                               limit=search.limit, metric=str(search.metric), positions=position_policy(cfg),
                               batch_size=setting["batch_size"], seed=cfg.seed, early_stop=setting["early_stop"],
                               prefix_cache_mib=setting["prefix_cache_mib"])
    start = time.perf_counter()
    result = method.search(len(adapter.decoder_layers), budget, objective, cfg.seed)
    seconds = time.perf_counter() - start
    forwards = {"prefill": 0, "decode": 0, "prefill_tokens": 0}
    for line in objective.trace:
        for phase, count in line.get("layer_forwards", {}).items():
            forwards[phase] += count
    return {**setting, "seconds": seconds, "calls": result.evaluations, "evaluations": objective.new_evaluations,
            "early_decisions": sum(bool(line.get("early")) for line in objective.trace),
            "layer_forwards": forwards, "ratios": list(result.schedule.ratios),
            "search_accuracy": result.accuracy, "bo_points": result.params.get("bo_points"),
            "bo_values": result.params.get("bo_values")}


def run_benchmark(model: str, budget: float, batch_size: int, prefix_mib: float, overrides: list[str]) -> dict:
    """Every setting of :func:`settings` for G-Search and for P-Sigmoid at ``budget``."""
    import torch

    from vtr_bench.models.loader import load_adapter

    report = {"model": model, "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
              "torch_threads": torch.get_num_threads(), "searches": {}}
    with tempfile.TemporaryDirectory(prefix="vtr_bench_search_bench_") as scratch:
        adapter = None
        for method, method_budget in (("gsearch", None), ("psigmoid", budget)):
            cfg = _compose(model, method, [f"run.cache_dir={scratch}/cache", *overrides])
            adapter = adapter or load_adapter(cfg.model, device=cfg.run.device)
            report.update(task=str(cfg.search.task), samples=cfg.search.limit)
            rows = []
            for setting in (settings(batch_size, prefix_mib) if method == "gsearch" else
                            [s for s in settings(batch_size, prefix_mib) if not s["early_stop"] or
                             s["name"] == "all"]):
                print(f"vtr_bench: timing {method} ({setting['name']})", file=sys.stderr, flush=True)
                rows.append(time_search(adapter, cfg, setting, Path(scratch) / method, method_budget))
            plain = rows[0]
            for row in rows:
                mine, base = row["layer_forwards"], plain["layer_forwards"]
                row["time_ratio"] = row["seconds"] / plain["seconds"]
                row["forwards_ratio"] = (mine["prefill"] + mine["decode"]) / (base["prefill"] + base["decode"])
                row["prefill_forwards_ratio"] = mine["prefill"] / base["prefill"]
                row["prefill_tokens_ratio"] = mine["prefill_tokens"] / base["prefill_tokens"]
                row["same_schedule"] = row["ratios"] == plain["ratios"]
                if method == "psigmoid":
                    row["same_trajectory"] = (row["bo_points"], row["bo_values"]) == \
                        (plain["bo_points"], plain["bo_values"])
            report["searches"][method] = {"budget": method_budget, "rows": rows}
    return report


def markdown(report: dict) -> str:
    """The tables of ``search.md``."""
    lines = [f"Search cost on `{report['model']}`, {report['samples']} samples of `{report['task']}`, one process "
             f"({report['torch_threads']} torch thread(s), {report['machine']}); each setting with an empty cache.",
             ""]
    for method, block in report["searches"].items():
        title = "G-Search (defaults)" if method == "gsearch" else f"P-Sigmoid (defaults, budget {block['budget']})"
        same = "same schedule" + (" and BO trajectory" if method == "psigmoid" else "")
        lines += [f"**{title}**", "",
                  f"| setting | batch | early stop | prefix MiB | wall s | × plain | calls | evaluated | early "
                  f"| layer-forwards prefill / decode | all × plain | prefill × plain | prefill token-layers × plain "
                  f"| {same} |",
                  "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in block["rows"]:
            ok = r["same_schedule"] and r.get("same_trajectory", True)
            lines.append(f"| {r['name']} | {r['batch_size']} | {'on' if r['early_stop'] else 'off'} | "
                         f"{r['prefix_cache_mib']:g} | {r['seconds']:.1f} | {r['time_ratio']:.2f} | {r['calls']} | "
                         f"{r['evaluations']} | {r['early_decisions']} | {r['layer_forwards']['prefill']:,} / "
                         f"{r['layer_forwards']['decode']:,} | {r['forwards_ratio']:.2f} | "
                         f"{r['prefill_forwards_ratio']:.2f} | {r['prefill_tokens_ratio']:.2f} | "
                         f"{'yes' if ok else 'NO'} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vtr_bench.bench_search", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny_llava")
    parser.add_argument("--budget", type=float, default=0.3, help="P-Sigmoid's budget")
    parser.add_argument("--batch-size", type=int, default=None, help="batched setting (default: search.batch_size)")
    parser.add_argument("--prefix-mib", type=float, default=None, help="default: search.prefix_cache_mib")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. search.limit=20")
    args = parser.parse_args(argv)
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from vtr_bench.checks import check_config

    try:
        for method in ("gsearch", "psigmoid"):  # both configs' values, before the model loads
            cfg = _compose(args.model, method, [*args.overrides, *([f"budget={args.budget}"] * (method != "gsearch"))])
            check_config(cfg)
        defaults = cfg.search
        report = run_benchmark(args.model, args.budget, args.batch_size or int(defaults.batch_size),
                               args.prefix_mib if args.prefix_mib is not None else float(defaults.prefix_cache_mib),
                               args.overrides)
    except (VtrError, HydraException, OmegaConfBaseException) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        print(f"vtr_bench: error: {first}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "search.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "search.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

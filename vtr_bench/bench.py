"""Efficiency benchmark (`make bench`): measured prefill / decode speed-up and memory against the FLOPs promise.

Protocol (DESIGN §4): a random-init decoder with a model config's real shapes (``conf/model/<name>.yaml`` dims),
batch 1, one prompt of text + vision + text tokens, greedy decoding of a fixed number of tokens with no early stop.
Every configuration (method × budget, plus the unmodified model and the keep-all engine) is warmed up, then
measured ``--reps`` times in round-robin order so that machine drift hits all of them alike; prefill (time to first
token) and per-token decode are reported as median and p90. Memory: the KV-cache bytes actually held after the
prefill (summed over the cache's layer tensors), and peak CUDA memory on GPU.

    python -m vtr_bench.bench --model synthetic_cpu --out benchmarks/results
    python -m vtr_bench.bench --model llava15_7b --device cuda --dtype bfloat16 --out benchmarks/results/gpu
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from vtr_bench.errors import InfeasibleBudgetError, VtrError
from vtr_bench.eval.generate import greedy_generate
from vtr_bench.reduction.flops import DecoderDims, prefill_macs
from vtr_bench.reduction.schedule import KeepSchedule

CONF = Path(__file__).resolve().parent / "conf"  # the package's configs (a link to the repo's conf/)
DEFAULT_METHODS = ("random", "fastv", "pdrop", "sparsevlm", "psigmoid", "fastervlm", "visionzip", "vispruner",
                   "divprune", "cdpruner", "dart")
# The pre-LLM methods read a synthetic vision probe (models/synthetic.py): the encoder is not part of this benchmark.
# P-Sigmoid is benchmarked as one fixed curve (no search): timing depends on the schedule, not on how it was found.
FIXED_OVERRIDES = {"psigmoid": {"k": 1.0, "alpha": 2.0}}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _summary_ms(values: list[float]) -> dict:
    return {"median_ms": 1000 * statistics.median(values), "p90_ms": 1000 * _percentile(values, 0.9)}


def build_configurations(methods: list[str], budgets: list[float], layers: int, seed: int,
                         dims=None) -> tuple[list[dict], list[dict]]:
    """Configurations to time (the unmodified model, the keep-all engine, each method × budget) and the method ×
    budget pairs skipped because the method cannot reach the budget on this depth. ``dims`` (the model's
    ``dims`` node) resolves method configs that read them (SparseVLM's ``${model.dims.vision_tokens}``)."""
    from vtr_bench.run import instantiate_method

    skipped: list[dict] = []
    configurations = [
        {"method": "unmodified", "budget": 1.0, "schedule": KeepSchedule.full(layers), "scorer": None, "hooked": False},
        {"method": "keep_all_hooks", "budget": 1.0, "schedule": KeepSchedule.full(layers), "scorer": None,
         "hooked": True},
    ]
    for name in methods:
        path = CONF / "method" / f"{name}.yaml"
        if not path.is_file():
            raise VtrError(f"unknown method {name!r} (no {path})")
        node = OmegaConf.merge(OmegaConf.load(path), FIXED_OVERRIDES.get(name, {}))
        root = OmegaConf.create({"model": {"dims": OmegaConf.to_container(dims) if dims is not None else {}}})
        root.method = node  # its interpolations resolve against this root
        method = instantiate_method(root.method)
        for budget in budgets:
            try:
                schedule, scorer = method.build(layers, budget, seed)
            except InfeasibleBudgetError as error:
                skipped.append({"method": name, "budget": budget, "reason": str(error)})
                continue
            configurations.append({"method": name, "budget": budget, "schedule": schedule, "scorer": scorer,
                                   "hooked": True})
    return configurations, skipped


def run_benchmark(model_name: str, methods: list[str], budgets: list[float], reps: int, warmup: int,
                  new_tokens: int, device: str, dtype: str, seed: int = 0, dims: dict | None = None,
                  batch: int = 1, attn_implementation: str = "sdpa", decoder=None) -> dict:
    """Measure every configuration on the synthetic decoder of ``model_name`` (or of explicit ``dims``), with
    ``batch`` prompts per forward and the given attention implementation (``decoder``: one already built).

    Returns:
        The report: one row per configuration (FLOPs ratio, ideal and measured speed-ups, latency median / p90,
        KV-cache MiB, ...), the skipped (infeasible) method × budget pairs, the machine and settings.
    """
    from tqdm import tqdm

    from vtr_bench.models.synthetic import SyntheticDecoder
    from vtr_bench.tracking.results import environment_info

    dims_cfg = OmegaConf.create(dims) if dims else OmegaConf.load(CONF / "model" / f"{model_name}.yaml").dims
    decoder = decoder or SyntheticDecoder(dims_cfg, dtype=DTYPES[dtype], device=device, seed=seed,
                                          attn_implementation=attn_implementation)
    before, after = int(dims_cfg.get("text_before", 35)), int(dims_cfg.get("text_after", 25))
    inputs, vision = decoder.prompt(before, after, seed=seed, batch=batch)
    dims = DecoderDims.from_hf_config(decoder.model.config)
    configurations, skipped = build_configurations(methods, budgets, decoder.layers, seed, dims_cfg)
    for c in configurations:
        c["engine"] = decoder.engine(c["schedule"], c["scorer"]) if c["hooked"] else None
        c["prefill"], c["decode"] = [], []

    def once(c):
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        engine = c["engine"]
        if engine is None:
            return greedy_generate(decoder.model, None, inputs, vision, new_tokens, set())
        with engine.attached():
            return greedy_generate(decoder.model, engine, inputs, vision, new_tokens, set())

    for c in configurations:
        for _ in range(warmup):
            once(c)
    for _ in tqdm(range(reps), desc="bench rounds", file=sys.stderr):
        for c in configurations:
            out = once(c)
            c["prefill"].append(out.prefill_seconds)
            c["decode"].extend(out.decode_seconds)
            c["kv_cache_bytes"] = out.kv_cache_bytes
            c["keep"] = out.processed_counts[0] if out.processed_counts else [decoder.n_vision] * decoder.layers
            if device.startswith("cuda"):
                c["peak_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20

    text = before + after
    full_macs = prefill_macs([decoder.n_vision] * decoder.layers, text, dims)
    base = next(c for c in configurations if c["method"] == "unmodified")
    base_prefill, base_decode = statistics.median(base["prefill"]), statistics.median(base["decode"])
    rows = []
    for c in configurations:
        ratio = prefill_macs(c["keep"], text, dims) / full_macs
        prefill, decode = statistics.median(c["prefill"]), statistics.median(c["decode"])
        rows.append({
            "method": c["method"], "budget": c["budget"],
            "budget_achieved": sum(c["keep"]) / (decoder.layers * decoder.n_vision), "keep": c["keep"],
            "flops_ratio": ratio, "ideal_speedup": 1 / ratio,
            "prefill": _summary_ms(c["prefill"]), "decode_per_token": _summary_ms(c["decode"]),
            "prefill_speedup": base_prefill / prefill, "decode_speedup": base_decode / decode,
            "efficiency": (base_prefill / prefill) * ratio,
            "kv_cache_mib": c["kv_cache_bytes"] / 2**20, "peak_memory_mib": c.get("peak_memory_mib"),
        })
    return {
        "model": model_name, "dims": OmegaConf.to_container(dims_cfg), "text_tokens": text,
        "device": device, "dtype": dtype, "attn_implementation": decoder.model.config._attn_implementation,
        "batch": batch, "timer": "cuda events" if device.startswith("cuda") else "perf_counter",
        "torch_threads": torch.get_num_threads(), "reps": reps, "warmup": warmup, "new_tokens": new_tokens,
        "environment": environment_info(), "rows": rows, "skipped": skipped,
    }


def markdown_table(report: dict) -> str:
    """The report as a markdown table (one row per configuration)."""
    lines = [
        "| method | budget | achieved | FLOPs ratio | ideal speed-up | prefill median / p90 (ms) | prefill speed-up "
        "| of ideal | decode ms/token median / p90 | decode speed-up | KV cache (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['method']} | {r['budget']:.3g} | {r['budget_achieved']:.3f} | {r['flops_ratio']:.3f} "
            f"| {r['ideal_speedup']:.2f}x | {r['prefill']['median_ms']:.1f} / {r['prefill']['p90_ms']:.1f} "
            f"| {r['prefill_speedup']:.2f}x | {r['efficiency']:.2f} "
            f"| {r['decode_per_token']['median_ms']:.2f} / {r['decode_per_token']['p90_ms']:.2f} "
            f"| {r['decode_speedup']:.2f}x | {r['kv_cache_mib']:.1f} |")
    lines += [f"\n{s['method']} at budget {s['budget']}: not run ({s['reason']})" for s in report["skipped"]]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    """Measured prefill speed-up against the FLOPs-ideal speed-up, per method (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    rows = [r for r in report["rows"] if r["method"] not in ("unmodified",)]
    top = max(r["ideal_speedup"] for r in rows) * 1.1
    ax.plot([1, top], [1, top], "k--", lw=1, label="ideal (1 / FLOPs ratio)")
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        ax.plot([r["ideal_speedup"] for r in mine], [r["prefill_speedup"] for r in mine], "o-", label=method)
    ax.set_xlabel("FLOPs-ideal prefill speed-up")
    ax.set_ylabel("measured prefill speed-up")
    ax.set_title(f"{report['model']} on {report['device']} ({report['dtype']})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: run the benchmark and write bench.json, bench.md and bench.png."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="synthetic_cpu")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.5, 0.25, 0.125])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's); use 1 when another process holds a core")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--batch", type=int, default=1, help="prompts per forward (same length, no padding)")
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.attn == "flash_attention_2":
            from vtr_bench.checks import check_attention

            check_attention(OmegaConf.create({"attn_implementation": args.attn, "dtype": args.dtype}), args.device)
        report = run_benchmark(args.model, args.methods, args.budgets, args.reps, args.warmup, args.new_tokens,
                               args.device, args.dtype, batch=args.batch, attn_implementation=args.attn)
    except VtrError as error:
        print(f"vtr_bench.bench: error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from vtr_bench.tracking.results import write_json_atomic

    write_json_atomic(out / "bench.json", report)
    (out / "bench.md").write_text(markdown_table(report))
    plot(report, out / "bench.png")
    print(markdown_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

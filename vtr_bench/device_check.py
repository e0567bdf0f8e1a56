"""One prepared device check (`recipes/device_check.sh`): what a short GPU slot should measure, in one run.

On one GPU, with no hub and no weights: random-weight decoders of the real LLaVA-1.5-7B and InternVL2-8B shapes
(``conf/model/*.yaml`` dims) in bfloat16, built on the device. For each:

1. **checks**: keep-all hooks give the unmodified logits bit for bit (batch 1 and 8); the engine agrees with a
   slow reference that runs the decoder layers by hand on explicitly gathered tokens, ranking by a float32 copy
   of each scoring layer's eager attention (the same kept tokens up to the first near-tie cut, last-token logits
   within ``RTOL`` of their largest magnitude when every cut is clear), for FastV's and PyramidDrop's scorers, both
   position policies, ``PROMPTS`` prompts each;
2. **bench**: :func:`vtr_bench.bench.run_benchmark` for the unmodified model, keep-all hooks, FastV, PyramidDrop,
   SparseVLM and P-Sigmoid (one fixed curve) at budgets 0.333 / 0.222 / 0.111, batch 1 and 8, with SDPA and —
   if the flash-attn package is importable — FlashAttention-2: prefill and per-token decode latency (CUDA
   events), peak memory, KV-cache bytes, FLOPs ratio and the prefill speed-up as a share of the FLOPs ideal.

Everything goes to ``--out`` (``device_check.json``, ``device_check.md``). Without a GPU the same steps run on small
shapes (``--small``, still bfloat16 by default): a test runs it so, so that it cannot rot.

    recipes/device_check.sh                       # on the GPU machine: benchmarks/results/gpu/
    recipes/device_check.sh --small --out /tmp/dc  # anywhere, in seconds (default out: .../device_check_small)
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from vtr_bench.errors import VtrError

CONF = Path(__file__).resolve().parent / "conf"
MODELS = ("llava15_7b", "internvl2")
METHODS = ("fastv", "pdrop", "sparsevlm", "psigmoid")
BUDGETS = (0.333, 0.222, 0.111)
BATCHES = (1, 8)
SMALL = {"layers": 20, "hidden": 64, "ffn": 128, "heads": 4, "kv_heads": 2, "vision_tokens": 48,
         "text_before": 6, "text_after": 6}  # 20 layers: FastV (k=2) reaches budget 0.111
MARGIN = 1e-5  # cuts whose score gap is at most this are near-ties (tests/test_half_precision.py measured them)
RTOL = 2e-2  # last-token logits, relative to their largest magnitude (bf16 keeps 8 bits; GPU kernels may differ)
PROMPTS = 3


def float32_attention(layer, hidden, cos, sin) -> torch.Tensor:
    """Head-averaged causal attention (queries, keys) of batch-1 ``hidden`` in decoder ``layer``: HF's eager
    attention of a float32 copy of the layer (half weights upcast exactly; HF's own half-precision eager weights
    are rounded to the dtype, which ties many tokens). The ranking oracle of the half-precision references."""
    layer = copy.deepcopy(layer).float()
    config = layer.self_attn.config
    previous, config._attn_implementation = config._attn_implementation, "eager"
    try:
        seq = hidden.shape[1]
        causal = torch.full((seq, seq), torch.finfo(torch.float32).min, device=hidden.device).triu(1)[None, None]
        _, weights = layer.self_attn(hidden_states=layer.input_layernorm(hidden.float()),
                                     position_embeddings=(cos.float(), sin.float()), attention_mask=causal)
    finally:
        config._attn_implementation = previous
    return weights.mean(1)[0]


@torch.no_grad()
def reference_prefill(decoder, embeds, vision, schedule, source_offset: int, positions: str):
    """Batch-1 reference: layers run by hand on gathered tokens. Returns the last-token logits and, per reducing
    layer, (kept prompt indices, score gap at the cut)."""
    lm = decoder.model.model
    counts = schedule.counts(int(vision.sum()))
    hidden, pos = embeds, torch.arange(embeds.shape[1], device=embeds.device)[None]
    is_vision, index = vision[0].clone(), torch.arange(embeds.shape[1], device=embeds.device)
    previous, record = None, {}
    for layer_index, layer in enumerate(lm.layers):
        if counts[layer_index] < int(is_vision.sum()):
            source = hidden if source_offset == 0 or previous is None else previous
            cos, sin = lm.rotary_emb(source, pos)
            scores = float32_attention(lm.layers[max(layer_index + source_offset, 0)], source, cos, sin)[-1]
            vis = is_vision.nonzero().flatten()
            ranked = scores[vis].sort(descending=True, stable=True)
            n = counts[layer_index]
            top = vis[ranked.indices[:n]]
            keep = torch.cat([(~is_vision).nonzero().flatten(), top]).sort().values
            gap = float(ranked.values[n - 1] - ranked.values[n]) if n else 0.0
            record[layer_index] = ({(int(i),) for i in index[top]}, gap)
            hidden, pos, is_vision, index = hidden[:, keep], pos[:, keep], is_vision[keep], index[keep]
            if positions == "renumber":
                pos = torch.arange(hidden.shape[1], device=hidden.device)[None]
        previous = hidden
        cos, sin = lm.rotary_emb(hidden, pos)
        out = layer(hidden, attention_mask=None, position_ids=pos, position_embeddings=(cos, sin))
        hidden = out[0] if isinstance(out, tuple) else out
    return decoder.model.lm_head(lm.norm(hidden))[:, -1], record


@torch.no_grad()
def _engine_prefill(decoder, inputs, vision, schedule, scorer, positions="keep", trace=False):
    engine = decoder.engine(schedule, scorer, positions=positions)
    mask = inputs["attention_mask"]
    with engine.attached(), engine.request(vision, mask, trace=trace) as ctx:
        logits = decoder.model(**inputs, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits[:, -1]
        return logits, (ctx.token_sets() if trace else None)


def run_checks(decoder, dims) -> dict:
    """Keep-all identity (batch 1 and 8) and engine-vs-reference agreement (FastV and PyramidDrop scorers, both
    position policies) on ``decoder``."""
    from vtr_bench.reduction.schedule import KeepSchedule
    from vtr_bench.reduction.scoring import LastTokenAttention

    before, after = int(dims.get("text_before", 35)), int(dims.get("text_after", 25))
    layers = decoder.layers
    checks = {"keep_all_identical": {}, "reference": []}
    for batch in BATCHES:
        inputs, vision = decoder.prompt(before, after, seed=1, batch=batch)
        mask = inputs["attention_mask"]
        with torch.no_grad():
            plain = decoder.model(**inputs, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits[:, -1]
        hooked, _ = _engine_prefill(decoder, inputs, vision, KeepSchedule.full(layers), None)
        checks["keep_all_identical"][f"batch{batch}"] = bool(torch.equal(plain, hooked))
    k = 2
    schedule = KeepSchedule((1.0,) * k + (0.5,) * (layers - k - layers // 2) + (0.25,) * (layers // 2))
    for name, offset in (("fastv", -1), ("pdrop", 0)):
        for positions in ("keep", "renumber"):
            row = {"scorer": name, "positions": positions, "prompts": PROMPTS, "layers_compared": 0,
                   "prompts_all_clear": 0, "same_kept_tokens": True, "max_relative_logit_difference": 0.0}
            for seed in range(PROMPTS):
                inputs, vision = decoder.prompt(before, after, seed=10 + seed)
                logits, sets = _engine_prefill(decoder, inputs, vision, schedule, LastTokenAttention(offset),
                                               positions, trace=True)
                expected, record = reference_prefill(decoder, inputs["inputs_embeds"], vision, schedule, offset,
                                                     positions)
                for layer, (kept, gap) in sorted(record.items()):
                    if gap <= MARGIN:
                        break
                    row["same_kept_tokens"] &= sets[layer][0] == kept
                    row["layers_compared"] += 1
                else:
                    row["prompts_all_clear"] += 1
                    scale = float(expected.float().abs().max())
                    difference = float((logits.float() - expected.float()).abs().max()) / max(scale, 1e-6)
                    row["max_relative_logit_difference"] = max(row["max_relative_logit_difference"], difference)
            row["agree"] = row["same_kept_tokens"] and row["layers_compared"] > 0 and \
                row["max_relative_logit_difference"] <= RTOL
            checks["reference"].append(row)
    checks["passed"] = all(checks["keep_all_identical"].values()) and all(r["agree"] for r in checks["reference"])
    return checks


def _attention_implementations() -> list[str]:
    from transformers.utils import is_flash_attn_2_available

    return ["sdpa"] + (["flash_attention_2"] if is_flash_attn_2_available() and torch.cuda.is_available() else [])


def run_device_check(device: str, dtype: str, small: bool, reps: int, warmup: int, new_tokens: int,
                     models=MODELS) -> dict:
    """Checks and benchmarks for every model shape; returns the report."""
    from vtr_bench.bench import DTYPES, run_benchmark
    from vtr_bench.models.synthetic import SyntheticDecoder
    from vtr_bench.tracking.results import environment_info

    report = {"device": device, "dtype": dtype, "small_shapes": small, "reps": reps, "warmup": warmup,
              "new_tokens": new_tokens, "environment": environment_info(), "models": {}}
    if device.startswith("cuda"):
        report["gpu"] = torch.cuda.get_device_name(device)
    for model in models:
        dims = OmegaConf.create(SMALL) if small else OmegaConf.load(CONF / "model" / f"{model}.yaml").dims
        start = time.perf_counter()
        print(f"vtr_bench: device check: building {model} ({'small' if small else 'real'} shapes)", file=sys.stderr,
              flush=True)
        decoder = SyntheticDecoder(dims, dtype=DTYPES[dtype], device=device, seed=0)
        entry = {"dims": OmegaConf.to_container(dims), "build_seconds": time.perf_counter() - start}
        entry["checks"] = run_checks(decoder, dims)
        entry["bench"] = []
        for attention in _attention_implementations():
            decoder.model.config._attn_implementation = attention
            for batch in BATCHES:
                print(f"vtr_bench: device check: {model} {attention} batch {batch}", file=sys.stderr, flush=True)
                entry["bench"].append(run_benchmark(
                    model, list(METHODS), list(BUDGETS), reps, warmup, new_tokens, device, dtype,
                    dims=OmegaConf.to_container(dims), batch=batch, attn_implementation=attention, decoder=decoder))
        decoder.model.config._attn_implementation = "sdpa"
        entry["seconds"] = time.perf_counter() - start
        report["models"][model] = entry
        del decoder
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    report["passed"] = all(m["checks"]["passed"] for m in report["models"].values())
    return report


def markdown(report: dict) -> str:
    """Checks and one bench table per model x attention x batch."""
    from vtr_bench.bench import markdown_table

    lines = [f"Device check on {report.get('gpu', report['device'])}, {report['dtype']}"
             f"{' (small shapes)' if report['small_shapes'] else ''}: checks "
             f"{'passed' if report['passed'] else 'FAILED'}.", ""]
    for model, entry in report["models"].items():
        checks = entry["checks"]
        lines += [f"## {model}", "", f"keep-all hooks bit for bit: {checks['keep_all_identical']}", "",
                  "| scorer | positions | prompts (all cuts clear) | layers compared | same kept tokens "
                  "| max logit difference / max logit | agree |", "|---|---|---|---|---|---|---|"]
        for r in checks["reference"]:
            lines.append(f"| {r['scorer']} | {r['positions']} | {r['prompts']} ({r['prompts_all_clear']}) | "
                         f"{r['layers_compared']} | {r['same_kept_tokens']} | "
                         f"{r['max_relative_logit_difference']:.2e} | {r['agree']} |")
        for bench in entry["bench"]:
            lines += ["", f"**{bench['attn_implementation']}, batch {bench['batch']}** (timer: {bench['timer']})", "",
                      markdown_table(bench)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recipes/device_check.sh", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None,
                        help="default: benchmarks/results/gpu (small shapes: benchmarks/results/device_check_small)")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--small", action="store_true", help="small shapes (default off a GPU)")
    parser.add_argument("--reps", type=int, default=None, help="default: 5 on a GPU, 1 with small shapes")
    parser.add_argument("--warmup", type=int, default=None, help="default: 2 on a GPU, 0 with small shapes")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if not (CONF / "model" / f"{m}.yaml").is_file()
               or "dims" not in OmegaConf.load(CONF / "model" / f"{m}.yaml")]
    if unknown:
        print(f"vtr_bench: error: --models {unknown}: no conf/model config with dims", file=sys.stderr)
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    small = args.small or not device.startswith("cuda")
    reps = args.reps if args.reps is not None else (1 if small else 5)
    warmup = args.warmup if args.warmup is not None else (0 if small else 2)
    try:
        report = run_device_check(device, args.dtype, small, reps, warmup, args.new_tokens, args.models)
    except VtrError as error:
        print(f"vtr_bench: error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out or ("benchmarks/results/device_check_small" if small else "benchmarks/results/gpu"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "device_check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / "device_check.md").write_text(markdown(report))
    print(markdown(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

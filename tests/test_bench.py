"""The efficiency benchmark measures every configuration and writes its table and plot."""
import pytest

from vtr_bench.bench import markdown_table, plot, run_benchmark

DIMS = {"layers": 4, "hidden": 64, "ffn": 128, "heads": 4, "kv_heads": 2, "vision_tokens": 64,
        "text_before": 5, "text_after": 7}


def test_benchmark_rows_counts_and_outputs(tmp_path):
    report = run_benchmark("tiny", ["fastv", "pdrop"], [0.5, 0.1], reps=2, warmup=1, new_tokens=3, device="cpu",
                           dtype="float32", dims=DIMS)
    rows = {(r["method"], r["budget"]): r for r in report["rows"]}
    assert list(rows) == [("unmodified", 1.0), ("keep_all_hooks", 1.0), ("fastv", 0.5), ("pdrop", 0.5)]
    assert [(s["method"], s["budget"]) for s in report["skipped"]] == [("fastv", 0.1), ("pdrop", 0.1)]
    fastv = rows[("fastv", 0.5)]
    assert fastv["keep"] == [64, 64, 0, 0] and fastv["budget_achieved"] == 0.5
    assert rows[("keep_all_hooks", 1.0)]["keep"] == [64] * 4 and rows[("unmodified", 1.0)]["flops_ratio"] == 1.0
    # KV cache actually held after prefill: 2 tensors x kv_heads x head_dim x fp32 x sum of per-layer lengths
    per_token = 2 * 2 * 16 * 4 / 2**20
    assert fastv["kv_cache_mib"] == pytest.approx(per_token * (2 * 76 + 2 * 12))
    assert rows[("unmodified", 1.0)]["kv_cache_mib"] == pytest.approx(per_token * 4 * 76)
    assert 0 < fastv["flops_ratio"] < 1 and fastv["ideal_speedup"] == pytest.approx(1 / fastv["flops_ratio"])
    assert all(r["prefill"]["median_ms"] > 0 and r["decode_per_token"]["p90_ms"] > 0 for r in report["rows"])
    table = markdown_table(report)
    assert table.count("\n| ") == 4 and "fastv at budget 0.1: not run (budget 0.1 is unreachable" in table
    plot(report, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"


def test_every_default_method_builds_for_the_benchmark():
    """SparseVLM's config reads ${model.dims.vision_tokens}: the benchmark resolves it from the model's dims."""
    from omegaconf import OmegaConf

    from vtr_bench.bench import CONF, DEFAULT_METHODS, build_configurations

    dims = OmegaConf.load(CONF / "model" / "synthetic_cpu.yaml").dims
    configurations, skipped = build_configurations(list(DEFAULT_METHODS), [0.5], 16, 0, dims)
    assert {c["method"] for c in configurations} == {"unmodified", "keep_all_hooks", *DEFAULT_METHODS}
    assert not skipped

"""The prepared device check (`recipes/device_check.sh`) runs end to end off a GPU, on small shapes (#23)."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_device_check_runs_on_small_shapes_and_writes_its_report(tmp_path):
    env = {**os.environ, "PY": sys.executable}
    proc = subprocess.run([str(ROOT / "recipes" / "device_check.sh"), "--small", "--models", "llava15_7b",
                           "--new-tokens", "2", "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "device_check.json").read_text())
    assert report["passed"] and report["small_shapes"] and report["dtype"] == "bfloat16"
    entry = report["models"]["llava15_7b"]
    assert entry["checks"]["keep_all_identical"] == {"batch1": True, "batch8": True}
    assert {(r["scorer"], r["positions"]) for r in entry["checks"]["reference"]} == \
        {(s, p) for s in ("fastv", "pdrop") for p in ("keep", "renumber")}
    assert all(r["agree"] and r["layers_compared"] > 0 for r in entry["checks"]["reference"])
    benches = {(b["attn_implementation"], b["batch"]): b for b in entry["bench"]}
    assert set(benches) == {("sdpa", 1), ("sdpa", 8)}  # no flash-attn here
    rows = benches[("sdpa", 8)]["rows"]
    assert {r["method"] for r in rows} == {"unmodified", "keep_all_hooks", "fastv", "pdrop", "sparsevlm", "psigmoid"}
    fastv = {r["budget"]: r for r in rows if r["method"] == "fastv"}
    assert set(fastv) == {0.333, 0.222, 0.111} and fastv[0.111]["kv_cache_mib"] < fastv[0.333]["kv_cache_mib"]
    assert "keep-all hooks bit for bit" in (tmp_path / "device_check.md").read_text()


def test_an_unknown_model_shape_is_one_line(tmp_path, capsys):
    from vtr_bench.device_check import main

    assert main(["--models", "nope", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "vtr_bench: error: --models ['nope']: no conf/model config with dims"
    assert not list(tmp_path.iterdir())

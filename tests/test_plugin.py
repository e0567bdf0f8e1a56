"""lmms-eval's own CLI runs vtr_bench's reduced model (entry-point plugin) with the same numbers as our CLI."""
import json
import os
import subprocess
import sys
from pathlib import Path

from test_cli import run_cli

LMMS_EVAL = Path(sys.executable).with_name("lmms-eval")


def test_lmms_eval_cli_equals_vtr_bench_cli(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf")}
    include = subprocess.run([sys.executable, "-m", "vtr_bench.tasks", "shapes", str(tmp_path / "cache")],
                             capture_output=True, text=True, env=env, check=True).stdout.strip()
    plugin = subprocess.run(
        [str(LMMS_EVAL), "--model", "vtr_bench", "--model_args", "method=fastv,budget=0.5,run.show_progress=false",
         "--tasks", "shapes", "--include_path", include, "--limit", "12", "--output_path", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    # lmms-eval's CLI exits 0 even when it fails: check what it wrote
    results_files = list((tmp_path / "out").rglob("*_results.json"))
    assert len(results_files) == 1, plugin.stdout[-3000:] + plugin.stderr[-3000:]
    plugin_metrics = json.loads(results_files[0].read_text())["results"]["shapes"]
    ours = run_cli("method=fastv", "budget=0.5", "benchmark.limit=12", "logger=none", "run.show_progress=false",
                   out_dir=tmp_path / "runs", cwd=tmp_path)
    assert ours.returncode == 0, ours.stderr[-2000:]
    [ours_file] = list((tmp_path / "runs").rglob("results.json"))
    our_metrics = json.loads(ours_file.read_text())["metrics"]["shapes"]
    assert plugin_metrics["exact_match,none"] == our_metrics["exact_match"]
    for key, value in our_metrics.items():
        assert plugin_metrics[f"{key},none"] == value or (value != value and plugin_metrics[f"{key},none"] is None)

"""Scaling out: data-parallel evaluation over 2 CPU processes (torchrun, gloo) equals the 1-process run, through our
CLI and lmms-eval's, rank 0 alone writing (``accelerate launch --cpu`` starts a single process: accelerate's
multi-CPU path needs MPI); hydra-submitit-launcher's local executor runs a sweep with the same run dirs and
skips finished jobs; the SLURM launcher config composes."""
import json
import os
import subprocess
import sys

import pytest
from test_cli import run_cli

LAUNCH = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ARGS = ("benchmark.limit=24", "logger=none", "run.show_progress=false")


def _env(tmp_path):
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
            "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _results(out):
    [path] = list(out.glob("tiny_llava/fastv/*/results.json"))
    return path.parent, json.loads(path.read_text())


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("dp1")
    result = run_cli("method=fastv", "budget=0.3", *ARGS, out_dir=out)
    assert result.returncode == 0, result.stderr[-2000:]
    return _results(out)


def test_our_cli_over_two_processes_equals_one(one_process, tmp_path):
    out = tmp_path / "runs"
    result = subprocess.run([*LAUNCH, "-m", "vtr_bench", "method=fastv", "budget=0.3", *ARGS, f"run.out_dir={out}"],
                            capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir, two = _results(out)
    one_dir, one = one_process
    assert run_dir.name == one_dir.name  # the same run id
    assert two["metrics"] == one["metrics"] and two["samples"] == one["samples"] == 24
    assert two["budget_achieved"] == one["budget_achieved"] and two["tflops"] == one["tflops"]
    assert len((run_dir / "samples.jsonl").read_text().splitlines()) == 24
    assert two["data_parallel"] == {"processes": 2, "samples_per_rank": [12, 12]}  # sharded, not run twice
    assert one["data_parallel"] == {"processes": 1, "samples_per_rank": [24]}
    # rank 0 alone wrote: one results.json, one config, nothing else of another rank
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml", "results.json", "samples.jsonl"]
    assert result.stdout.count('"run_dir"') == 1


def test_lmms_eval_over_two_processes_equals_one(one_process, tmp_path):
    """lmms-eval's CLI with the plugin, sharded over 2 processes, gives the 1-process run's metrics (ours, which a
    parity test equates with lmms-eval's own 1-process run) on the same 24 samples."""
    include = subprocess.run([sys.executable, "-m", "vtr_bench.tasks", "shapes", str(tmp_path / "cache")],
                             capture_output=True, text=True, check=True, env=_env(tmp_path)).stdout.strip()
    done = subprocess.run([*LAUNCH, "-m", "lmms_eval", "--model", "vtr_bench", "--model_args",
                           f"model=tiny_llava,method=fastv,budget=0.3,run.show_progress=false,run.out_dir={tmp_path}",
                           "--tasks", "shapes", "--include_path", include, "--limit", "24", "--verbosity", "INFO",
                           "--output_path", str(tmp_path / "two")], capture_output=True, text=True,
                          env=_env(tmp_path), cwd=tmp_path, timeout=600)
    assert "Running on rank 1" in done.stdout + done.stderr  # two ranks ran
    two = json.loads(next((tmp_path / "two").rglob("*_results.json")).read_text())
    assert two["n-samples"]["shapes"]["effective"] == 24
    ours = one_process[1]["metrics"]["shapes"]
    assert {k.split(",")[0]: v for k, v in two["results"]["shapes"].items()
            if k.endswith(",none") and "_stderr" not in k} == ours


def test_searches_refuse_a_data_parallel_launch(tmp_path):
    """Checked before any process group or model: the environment a launcher sets is enough."""
    result = subprocess.run([sys.executable, "-m", "vtr_bench", "method=psigmoid", "budget=0.3", *ARGS,
                             f"run.out_dir={tmp_path}"], capture_output=True, text=True,
                            env={**_env(tmp_path), "WORLD_SIZE": "2", "RANK": "0"}, cwd=tmp_path, timeout=600)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "vtr_bench: error: under a data-parallel launch (WORLD_SIZE > 1) only evaluations run" in result.stderr


def test_a_submitit_local_sweep_runs_reports_failures_and_resumes(tmp_path):
    """Jobs in other processes: the good ones write the run dirs the basic launcher would (same ids), a failing
    one is reported by the sweep (non-zero exit), and a re-run skips the finished jobs."""
    from test_configs import compose_config

    from vtr_bench.run import run_directory

    grid = ("method=fastv,random", "benchmark.limit=8", "logger=none", "run.show_progress=false")
    first = run_cli("hydra/launcher=submitit_local", *grid, "budget=0.5,1.5", flags=("-m",), out_dir=tmp_path)
    assert first.returncode == 2 and "vtr_bench: error: 2 sweep job(s) failed:" in first.stderr
    assert first.stderr.count("budget must be in (0, 1]") == 2
    files = sorted(tmp_path.glob("tiny_llava/*/*/results.json"))
    expected = sorted(run_directory(compose_config(f"method={m}", "budget=0.5", "benchmark.limit=8", "logger=none",
                                                   f"run.out_dir={tmp_path}")) / "results.json"
                      for m in ("fastv", "random"))
    assert files == expected
    stamps = [p.stat().st_mtime_ns for p in files]
    again = run_cli("hydra/launcher=submitit_local", *grid, "budget=0.5", flags=("-m",), out_dir=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert [p.stat().st_mtime_ns for p in files] == stamps  # both skipped


def test_the_slurm_launcher_config_composes_with_a_users_options():
    result = subprocess.run([sys.executable, "-m", "vtr_bench", "hydra/launcher=slurm",
                             "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=2",
                             "hydra.launcher.timeout_min=120", "--cfg", "hydra", "-p", "hydra.launcher"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for line in ("partition: gpu", "gpus_per_node: 2", "timeout_min: 120", "cpus_per_task: 8",
                 "_target_: hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"):
        assert line in result.stdout, result.stdout

"""Sweeps survive faults: a killed multirun resumes, keeping every finished run without recomputing it."""
import json
import os
import signal
import subprocess
import sys
import time

from test_cli import run_cli


def _complete(root):
    done = []
    for path in root.glob("tiny_llava/*/*/results.json"):
        try:
            if json.loads(path.read_text()).get("status") == "complete":
                done.append(path)
        except json.JSONDecodeError:  # pragma: no cover - atomic writes make this unreachable
            raise AssertionError(f"half-written {path}")
    return done


def test_killed_sweep_resumes_without_recomputing(tmp_path):
    overrides = ["method=random,fastv", "budget=0.5", "benchmark.limit=3", "logger=none", "run.show_progress=false"]
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf")}
    command = [sys.executable, "-m", "vtr_bench", "-m", f"run.out_dir={tmp_path}", *overrides]
    with open(tmp_path / "first.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                                   start_new_session=True)
        deadline = time.time() + 300
        while not _complete(tmp_path) and process.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    [first] = _complete(tmp_path)
    first_mtime = first.stat().st_mtime_ns

    result = run_cli("run.show_progress=false", *overrides[:-1], out_dir=tmp_path, flags=["-m"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"skipped {first.parent}: already complete" in result.stderr
    assert first.stat().st_mtime_ns == first_mtime
    finished = _complete(tmp_path)
    assert sorted(p.parts[-3] for p in finished) == ["fastv", "random"]
    again = run_cli("run.show_progress=false", *overrides[:-1], out_dir=tmp_path, flags=["-m"])
    assert again.stderr.count("already complete") == 2


def test_infeasible_budget_in_a_sweep_is_reported_and_the_sweep_goes_on(tmp_path):
    result = run_cli("method=fastv", "budget=0.5,0.1", "benchmark.limit=2", "logger=none", "run.show_progress=false",
                     out_dir=tmp_path, flags=["-m"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "vtr_bench: error: budget 0.1 is unreachable" in result.stderr
    [done] = _complete(tmp_path)
    assert done.parent.name.startswith("b0.5-")


def test_a_failing_sweep_job_makes_the_sweep_exit_non_zero(tmp_path):
    result = run_cli("method=full", "budget=null,0.5", "benchmark.limit=2", "logger=none",
                     "run.show_progress=false", out_dir=tmp_path, flags=["-m"])
    assert result.returncode == 2
    assert "1 sweep job(s) failed" in result.stderr and "takes no budget" in result.stderr
    assert len(_complete(tmp_path)) == 1

"""A wheel built from the repo works outside it: installed with --no-deps into a fresh venv (reusing the
project's installed dependencies), used from an unrelated folder, it runs the default job, the flops mode and the
lmms-eval plugin, and has the ``vtr-bench`` console command."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"  # a copy, so that the build leaves nothing in the repo
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", "runs", ".git", "build", "*.egg-info", "__pycache__", "wandb", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(root / "dist")], check=True, capture_output=True, text=True, cwd=root, timeout=600)
    [wheel] = (root / "dist").glob("vtr_bench-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # the project's dependencies, not its editable vtr_bench: a bare path line (its .pth files are not processed)
    Path(purelib, "project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, text=True, timeout=600)
    work = root / "elsewhere"
    work.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(root / "hf"),
           "PYTHONWARNINGS": "ignore", "PYTHONPATH": ""}
    return venv, work, env


def _run(args, work, env):
    return subprocess.run(args, capture_output=True, text=True, cwd=work, env=env, timeout=600)


def test_the_wheel_carries_the_configs_and_runs_from_any_folder(wheel_venv):
    venv, work, env = wheel_venv
    where = _run([str(venv / "bin" / "python"), "-c", "import vtr_bench.cli as c; print(c.__file__, c.CONF_DIR)"],
                 work, env)
    module, conf = where.stdout.split()
    assert module.startswith(str(venv)) and Path(conf, "config.yaml").is_file() and not Path(conf).is_symlink()
    result = _run([str(venv / "bin" / "vtr-bench"), "benchmark.limit=20", "logger=none", "run.show_progress=false"],
                  work, env)
    assert result.returncode == 0, result.stderr[-3000:]
    [path] = (work / "runs").glob("tiny_llava/full/*/results.json")  # ./runs of the current folder
    results = json.loads(path.read_text())
    assert results["samples"] == 20 and 0 < results["metrics"]["shapes"]["exact_match"] <= 1
    flops = _run([str(venv / "bin" / "python"), "-m", "vtr_bench", "run.mode=flops", "model=llava15_7b",
                  "method=fastv"], work, env)
    assert flops.returncode == 0, flops.stderr[-2000:]
    assert json.loads(flops.stdout.strip().splitlines()[-1])["model"] == "llava15_7b"
    # a user's own config group entry, found through Hydra's search path
    (work / "my_conf" / "model").mkdir(parents=True)
    (work / "my_conf" / "model" / "my_model.yaml").write_text(
        Path(conf, "model", "llava15_7b.yaml").read_text().replace("name: llava15_7b", "name: my_model"))
    own = _run([str(venv / "bin" / "vtr-bench"), f"hydra.searchpath=[file://{work / 'my_conf'}]", "model=my_model",
                "run.mode=flops"], work, env)
    assert own.returncode == 0, own.stderr[-2000:]
    assert json.loads(own.stdout.strip().splitlines()[-1])["model"] == "my_model"
    # make bench's model dims come from the installed package's configs (the wheel has no repo folder)
    bench = _run([str(venv / "bin" / "python"), "-c", "from vtr_bench import bench; "
                  "print((bench.CONF / 'model' / 'synthetic_cpu.yaml').is_file(), bench.CONF)"], work, env)
    found, where = bench.stdout.split()
    assert found == "True" and where.startswith(str(venv)), bench.stderr[-2000:]


def test_the_lmms_eval_plugin_of_the_wheel(wheel_venv):
    venv, work, env = wheel_venv
    python = str(venv / "bin" / "python")
    include = _run([python, "-m", "vtr_bench.tasks", "shapes", str(work / "task_cache")], work, env).stdout.strip()
    result = _run([python, "-m", "lmms_eval", "--model", "vtr_bench", "--model_args",
                   f"model=tiny_llava,run.show_progress=false,run.out_dir={work / 'plugin_runs'}", "--tasks",
                   "shapes", "--include_path", include, "--limit", "12", "--output_path", str(work / "lmms")],
                  work, env)
    [path] = (work / "lmms").rglob("*_results.json")  # lmms-eval exits 0 even when it fails: read what it wrote
    results = json.loads(path.read_text())
    assert results["n-samples"]["shapes"]["effective"] == 12, result.stderr[-2000:]
    assert 0 <= results["results"]["shapes"]["exact_match,none"] <= 1
    assert results["config"]["model"] == "vtr_bench"

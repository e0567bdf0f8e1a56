"""The command line: bad input gives one clear line and a non-zero exit; runs write their files."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*overrides, out_dir, flags=(), timeout=600, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline",
           "HF_HOME": str(out_dir / "hf"), "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "vtr_bench", *flags, f"run.out_dir={out_dir}", *overrides],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd or out_dir)


def assert_one_clear_error(result, expected):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert expected in result.stderr, result.stderr
    ours = [line for line in result.stderr.splitlines() if line.startswith("vtr_bench: error:")]
    assert len(ours) <= 1


@pytest.mark.parametrize("overrides, expected", [
    (["model=nope"], "Could not find 'model/nope'"),
    (["method=nope"], "Could not find 'method/nope'"),
    (["benchmark=nope"], "Could not find 'benchmark/nope'"),
    (["budget=abc", "method=fastv"], "vtr_bench: error: budget must be a number in (0, 1], got 'abc'"),
    (["model=llava15_7b"], "vtr_bench: error: llava-hf/llava-1.5-7b-hf is not in the local HF cache"),
])
def test_bad_input_gives_one_clear_line(tmp_path, overrides, expected):
    assert_one_clear_error(run_cli(*overrides, out_dir=tmp_path), expected)


@pytest.mark.parametrize("overrides, expected", [
    (["budget=0", "method=fastv"], "budget must be in (0, 1]"),
    (["budget=1.5", "method=fastv"], "budget must be in (0, 1]"),
    (["method=full", "budget=0.5"], "method 'full' takes no budget"),
    (["method=schedule", "method.ratios=[1,0.5,0.7,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5]"],
     "keep schedule must be non-increasing with depth: layer 2 keeps 0.7 > layer 1 keeps 0.5"),
    (["model.path=/nonexistent/ckpt"], "model.path /nonexistent/ckpt has no config.json"),
    (["benchmark.tasks=[no_such_task]", "benchmark.limit=2"], "lmms-eval does not know task(s) ['no_such_task']"),
    (["method=fastv", "budget=0.1"], "budget 0.1 is unreachable with k=2 on a 12-layer decoder"),
])
def test_bad_input_is_one_error_before_the_work(tmp_path, overrides, expected):
    """What the CLI runs (:func:`vtr_bench.run.run`) in this process; the CLI prints such an error as one line."""
    from test_search import compose_config
    from vtr_bench.errors import VtrError
    from vtr_bench.run import run

    with pytest.raises(VtrError) as error:
        run(compose_config(f"run.out_dir={tmp_path / 'runs'}", f"run.cache_dir={tmp_path / 'cache'}", *overrides))
    assert expected in str(error.value) and "\n" not in str(error.value)
    assert not list((tmp_path / "runs").rglob("results.json"))


def test_flops_mode_runs_without_weights(tmp_path):
    result = run_cli("run.mode=flops", "model=llava15_7b", "method=fastv", "method.k=2", "method.r=0.5",
                     "flops.ffn=fastv", "flops.text_tokens=36", out_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["keep"] == [576] * 2 + [288] * 30
    assert report["budget"] == pytest.approx((2 * 576 + 30 * 288) / (32 * 576))
    d, m = 4096, 11008
    cost = lambda n: 4 * n * d * d + 2 * n * n * d + 2 * n * d * m  # noqa: E731  FastV's formula
    assert report["tflops_full"] == pytest.approx(32 * cost(612) / 1e12)
    assert report["flops_ratio"] == pytest.approx((2 * cost(612) + 30 * cost(324)) / (32 * cost(612)))


def test_fastv_run_end_to_end_writes_results_and_wandb(tmp_path):
    result = run_cli("method=fastv", "budget=0.5", "benchmark.limit=6", "run.show_progress=false",
                     out_dir=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [results_file] = list(tmp_path.glob("tiny_llava/fastv/*/results.json"))
    results = json.loads(results_file.read_text())
    assert results["status"] == "complete" and results["samples"] == 6
    assert results["method"] == "fastv" and results["budget_requested"] == 0.5
    layers = len(results["schedule_ratios"])
    kept = int(144 * (1 - 0.5 * layers / (layers - 2)))  # FastV's int(): 57.6 -> 57
    assert results["keep_mean_per_layer"] == [144.0] * 2 + [kept] * (layers - 2)
    assert abs(results["budget_achieved"] - 0.5) <= 1 / 144
    assert 0 < results["flops_ratio"] < 1
    assert set(results["metrics"]["shapes"]) >= {"exact_match"}
    assert results["kv_cache_bytes"] < results["kv_cache_bytes_full"] and results["vision_tower_tflops_per_image"] > 0
    assert results["latency"]["prefill"]["median_ms"] > 0
    assert results["environment"]["packages"]["torch"].startswith("2.13.0")
    assert list(results_file.parent.glob("wandb/offline-run-*/run-*.wandb"))


def test_multirun_and_cfg_job(tmp_path):
    result = run_cli("run.mode=flops", "model=llava15_7b", "method=fastv", "budget=0.5,0.25",
                     f"hydra.sweep.dir={tmp_path}/sweep", out_dir=tmp_path, flags=["-m"])
    assert result.returncode == 0, result.stderr
    reports = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["budget_requested"] for r in reports] == [0.5, 0.25]
    assert [abs(r["budget"] - r["budget_requested"]) <= 1 / 576 for r in reports] == [True, True]
    shown = run_cli("method=fastv", "budget=0.5", out_dir=tmp_path, flags=["--cfg", "job"])
    assert shown.returncode == 0 and "budget: 0.5" in shown.stdout
    assert "_target_: vtr_bench.methods.FastV" in shown.stdout


@pytest.mark.parametrize("content, expected", [
    ('{"ratios": [1, 1, 0.5', "is not valid JSON"),
    ('{"ratios": [1, 0.5, 0.75, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]}', "must be non-increasing with depth: layer 2 keeps 0.75"),
    ('{"ratios": [1, 0.5]}', "schedule has 2 layers but the model has 12"),
    ('{"keep": [1, 0.5]}', "must hold an object with a list 'ratios'"),
])
def test_malformed_saved_schedule(tmp_path, content, expected):
    path = tmp_path / "schedule.json"
    path.write_text(content)
    result = run_cli("method=schedule", f"method.path={path}", "benchmark.limit=2", "logger=none", out_dir=tmp_path)
    assert_one_clear_error(result, expected)


def test_unwritable_output_dir(tmp_path):
    (tmp_path / "a_file").write_text("")
    result = run_cli("benchmark.limit=2", "logger=none", out_dir=tmp_path / "a_file" / "runs", cwd=tmp_path)
    assert_one_clear_error(result, "vtr_bench: error: cannot write the ")  # the run dir, or task data under it


def write_local_task(root, images_per_doc, corrupt_second=False):
    """A local lmms-eval task ``my_images`` (json data, image files) under ``root``; returns its folder."""
    from PIL import Image

    tasks = root / "tasks"
    tasks.mkdir()
    Image.new("RGB", (48, 48), "red").save(root / "good.png")
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    second = "bad.png" if corrupt_second else "good.png"
    rows = [{"image_paths": [str(root / name)] * images_per_doc, "question": "What color is it?", "answer": "red"}
            for name in ("good.png", second)]
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tasks / "utils.py").write_text(
        "from PIL import Image\n\n\ndef doc_to_visual(doc):\n"
        "    return [Image.open(p).convert('RGB') for p in doc['image_paths']]\n"
        "\n\ndef process_results(doc, results):\n    return {'exact_match': float(results[0] == doc['answer'])}\n")
    (tasks / "my_images.yaml").write_text(LOCAL_TASK_YAML.format(data=root / "data.jsonl"))
    return tasks


LOCAL_TASK_YAML = """task: my_images
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: question
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 2
process_results: !function utils.process_results
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


def test_corrupt_image_in_a_local_task(tmp_path):
    """A local task whose second image is corrupt: one clear line naming the task and doc, nothing half-written."""
    tasks = write_local_task(tmp_path, images_per_doc=1, corrupt_second=True)
    result = run_cli("benchmark.local=null", "benchmark.tasks=[my_images]", f"benchmark.include_path=[{tasks}]",
                     "logger=none", out_dir=tmp_path)
    assert_one_clear_error(result,
                           "vtr_bench: error: my_images doc 1: could not load its image: UnidentifiedImageError")
    assert not list(tmp_path.glob("tiny_llava/full/*/results.json"))


def test_multi_image_samples_error_unless_a_policy_is_set(tmp_path):
    tasks = write_local_task(tmp_path, images_per_doc=3)
    args = ["benchmark.local=null", "benchmark.tasks=[my_images]", f"benchmark.include_path=[{tasks}]", "logger=none"]
    assert_one_clear_error(run_cli(*args, out_dir=tmp_path), "my_images doc 0: expected one image, got 3")
    result = run_cli(*args, "benchmark.multi_image=middle", out_dir=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(list(tmp_path.glob("tiny_llava/full/*/results.json"))) == 1


def test_psigmoid_end_to_end_on_the_internvl_family(tmp_path):
    """Search (BO on the search split) + test evaluation + saved schedule through the CLI, InternVL-style model."""
    result = run_cli("model=tiny_random_internvl2", "method=psigmoid", "budget=0.3", "benchmark.limit=4",
                     "search.limit=3", "method.n_calls=5", "method.n_initial_points=3", "logger=none",
                     "run.show_progress=false", out_dir=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    [saved] = list((tmp_path / "schedules").glob("tiny_random_internvl2-psigmoid-b0.3-*.json"))
    assert f"searched schedule saved to {saved}" in result.stdout + result.stderr
    [results_file] = list(tmp_path.glob("tiny_random_internvl2/psigmoid/*/results.json"))
    results = json.loads(results_file.read_text())
    assert results["schedule_ratios"] == json.loads(saved.read_text())["ratios"]
    assert abs(results["budget_achieved"] - 0.3) <= 1 / 144 and results["samples"] == 4

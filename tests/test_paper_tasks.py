"""The paper's 12 lmms-eval tasks run end to end: each task's own YAML, hooks, judge and aggregations on a 3-4 row
local stand-in of its data (tests/standin_tasks.py), through our CLI in one run and, for POPE, MME, SEED-Bench,
MM-Vet and LLaVA-W, through lmms-eval's own CLI with the vtr_bench plugin, which must agree: the same metrics and the
same answers (the judge's prompts quote them; the tiny model, which knows only the shapes vocabulary, scores 0 on
most real prompts, so equal metrics alone would say little)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from standin_tasks import (EXPECTED_METRICS, PAPER_TASKS, SOURCES, judge_of, judge_server, lmms_eval_tasks_dir,
                           load_task_yaml, standin_configs, standin_docs, write_standin_tasks, yaml_metric_names)

LMMS_EVAL = Path(sys.executable).with_name("lmms-eval")
PARITY_TASKS = [PAPER_TASKS[task] for task in ("pope", "mme", "seedbench", "mmvet", "llava_in_the_wild")]
JUDGE_QUOTED = {"mmvet", "llava_in_the_wild"}  # judges that see every answer (MMBench's only some)
MODEL_ARGS = "model=tiny_llava,method=fastv,benchmark.multi_image=middle,run.show_progress=false"


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_tasks")
    return SimpleNamespace(root=root, folder=write_standin_tasks(root))


@pytest.fixture(scope="module")
def runs(standin):
    """All 12 stand-ins through our CLI (one process, judge stub up), then the parity subset through lmms-eval's."""
    tmp, folder = standin.root, standin.folder
    env = {**os.environ, "HF_HOME": str(tmp / "hf"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    with judge_server() as judge:
        env.update(judge.env)  # utils modules read it at import: it must be in the evaluating process's environment
        ours = subprocess.run([sys.executable, "-m", "vtr_bench", "model=tiny_llava", "method=fastv",
                               "benchmark.local=null", f"benchmark.tasks=[{','.join(PAPER_TASKS.values())}]",
                               f"benchmark.include_path=[{folder}]", "benchmark.multi_image=middle", "logger=none",
                               # the stub answers any path: one OPENAI_API_URL serves MMBench and MM-Vet / LLaVA-W,
                               # which a real endpoint cannot (checked by default, see test_benchmarks)
                               "benchmark.require_judge=false",
                               "run.show_progress=false", f"run.out_dir={tmp / 'runs'}"],
                              capture_output=True, text=True, env=env, cwd=tmp, timeout=600)
        judge_calls = dict(judge.calls)
        ours_prompts = [p for p in judge.prompts]
        out = tmp / "lmms_out"
        plugin = subprocess.run([str(LMMS_EVAL), "--model", "vtr_bench", "--model_args",
                                 f"{MODEL_ARGS},run.out_dir={tmp / 'plugin_runs'}", "--tasks", ",".join(PARITY_TASKS),
                                 "--include_path", str(folder), "--output_path", str(out)],
                                capture_output=True, text=True, env=env, cwd=tmp, timeout=600)
        plugin_prompts = judge.prompts[len(ours_prompts):]
    return SimpleNamespace(ours=ours, judge_calls=judge_calls, plugin=plugin, ours_prompts=ours_prompts,
                           plugin_prompts=plugin_prompts,
                           plugin_files=list(out.rglob("*_results.json")),
                           results_files=list((tmp / "runs").glob("tiny_llava/fastv/*/results.json")))


def test_stand_ins_are_copies_of_the_installed_tasks_on_local_data(standin):
    configs = standin_configs(standin.folder)
    assert set(configs) == set(PAPER_TASKS.values())
    for real, task in PAPER_TASKS.items():
        folder, yaml_name, _ = SOURCES[real]
        # the metric list of the task's own YAML is the stand-in's, and EXPECTED_METRICS names all its numbers
        assert yaml_metric_names(configs[task]) == yaml_metric_names(lmms_eval_tasks_dir() / folder / yaml_name)
        assert yaml_metric_names(configs[task]) == EXPECTED_METRICS[task]
        config = load_task_yaml(configs[task])
        assert config["dataset_path"] == "parquet" and list(config["dataset_kwargs"]) == ["data_files"]
        assert Path(config["dataset_kwargs"]["data_files"][config["test_split"]]).is_file()
    assert all(3 <= n <= 4 for n in standin_docs(standin.folder).values())


def test_the_twelve_paper_tasks_through_our_cli(runs, standin):
    assert runs.ours.returncode == 0, runs.ours.stderr[-4000:]
    [results_file] = runs.results_files
    results = json.loads(results_file.read_text())
    assert results["status"] == "complete"
    assert results["samples"] == sum(standin_docs(standin.folder).values())
    metrics = results["metrics"]
    for task, expected in EXPECTED_METRICS.items():
        assert set(metrics.get(task, {})) >= expected, (task, metrics.get(task))
        for name in expected:
            value = metrics[task][name]
            assert isinstance(value, (int, float)) and math.isfinite(value), (task, name, value)
    # the judged tasks called the stub: MM-Vet and LLaVA-W once per doc; MMBench's matcher for answers naming no
    # option (the stand-in options are words the tiny model never says)
    docs = standin_docs(standin.folder)
    assert runs.judge_calls.get("mmvet", 0) >= docs[PAPER_TASKS["mmvet"]], runs.judge_calls
    assert runs.judge_calls.get("llava_in_the_wild", 0) >= docs[PAPER_TASKS["llava_in_the_wild"]], runs.judge_calls
    assert runs.judge_calls.get("mmbench", 0) > 0, runs.judge_calls
    # and their scores are the stub's: MM-Vet 0.5 per doc, LLaVA-W "8 7" = 7 / 8
    assert metrics[PAPER_TASKS["mmvet"]]["gpt_eval_score"] == pytest.approx(50.0)
    assert set(metrics[PAPER_TASKS["llava_in_the_wild"]].values()) == {87.5}


def test_lmms_eval_cli_with_the_plugin_gives_the_same_metrics(runs):
    assert runs.ours.returncode == 0, runs.ours.stderr[-4000:]
    # lmms-eval's CLI exits 0 even when it fails: read what it wrote
    assert len(runs.plugin_files) == 1, runs.plugin.stdout[-2000:] + runs.plugin.stderr[-4000:]
    plugin = json.loads(runs.plugin_files[0].read_text())["results"]
    [results_file] = runs.results_files
    ours = json.loads(results_file.read_text())["metrics"]
    for task in PARITY_TASKS:
        assert {name: plugin[task][f"{name},none"] for name in EXPECTED_METRICS[task]} == {
            name: ours[task][name] for name in EXPECTED_METRICS[task]}, task
    # the same answers: the MM-Vet and LLaVA-W judges were sent the same prompts (answers quoted) by both CLIs
    quoted = [p for p in runs.ours_prompts if judge_of(p) in JUDGE_QUOTED]
    assert len(quoted) >= 6 and sorted(quoted) == sorted(runs.plugin_prompts)


def test_submission_files_and_generation_settings_land_in_the_run_dir(runs, standin):
    """Tasks that write submission files (TextVQA, MMBench) write them in the run dir, never in the working folder;
    results.json records each task's generation settings (its own max_new_tokens and stop strings, or ours)."""
    [results_file] = runs.results_files
    submissions = sorted(p.name for p in (results_file.parent / "submissions").iterdir())
    assert any(n.startswith("textvqa_submission") for n in submissions), submissions
    assert any(n.startswith("mmbench_en_dev_results") for n in submissions), submissions
    assert not (standin.root / "submissions").exists()
    generation = json.loads(results_file.read_text())["generation"]
    assert set(generation) == set(PAPER_TASKS.values())
    for real, task in PAPER_TASKS.items():
        own = load_task_yaml(standin_configs(standin.folder)[task]).get("generation_kwargs") or {}
        assert generation[task]["max_new_tokens"] == own.get("max_new_tokens", 1024), task
        assert generation[task]["max_new_tokens_source"] == ("task" if "max_new_tokens" in own else "default")
        assert generation[task]["samples"] == standin_docs(standin.folder)[task]

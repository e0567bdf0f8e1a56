"""A task's own definition is checked and hashed before the model loads (the real-task harness issue, points 4-6):
edited tasks or data never pass for finished runs, missing data files, hook typos and judged tasks fail in one
line, and results.json says which tasks ran and how each generated (settings, stops, empty answers)."""
import json
import shutil
import sys
from pathlib import Path

from test_cli import assert_one_clear_error, run_cli, write_local_task
from test_configs import compose_config
from test_task_parity import _shapes_task_copy

from vtr_bench.run import run_id

LMMS_TASKS = Path(sys.executable).parents[1] / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / \
    "site-packages" / "lmms_eval" / "tasks"


def _local_task_config(tmp_path, tasks):
    return compose_config("benchmark.local=null", "benchmark.tasks=[my_images]", f"benchmark.include_path=[{tasks}]",
                          f"run.cache_dir={tmp_path / 'cache'}")


def test_the_run_id_follows_the_task_yaml_its_hooks_and_its_data(tmp_path):
    tasks = write_local_task(tmp_path, images_per_doc=1)
    cfg = _local_task_config(tmp_path, tasks)
    first = run_id(cfg)
    files = [tasks / "my_images.yaml", tasks / "utils.py", tmp_path / "data.jsonl"]
    for path in files:
        original = path.read_text()
        path.write_text(original)  # the same bytes, a new mtime: the same run
        assert run_id(cfg) == first
        path.write_text(original + "\n# edited\n" if path.suffix != ".jsonl" else original + original)
        assert run_id(cfg) != first, path.name
        path.write_text(original)
        assert run_id(cfg) == first


def test_a_missing_data_file_is_one_line_before_any_run_dir(tmp_path):
    tasks = write_local_task(tmp_path, images_per_doc=1)
    (tmp_path / "data.jsonl").unlink()
    result = run_cli("benchmark.local=null", "benchmark.tasks=[my_images]", f"benchmark.include_path=[{tasks}]",
                     "logger=none", out_dir=tmp_path / "runs", cwd=tmp_path)
    assert_one_clear_error(result, f"vtr_bench: error: task my_images: data file {tmp_path / 'data.jsonl'} does not "
                                   f"exist")
    assert not (tmp_path / "runs" / "tiny_llava").exists()


def test_a_hook_typo_is_one_line_before_the_model_loads(tmp_path):
    tasks = write_local_task(tmp_path, images_per_doc=1)
    yaml = tasks / "my_images.yaml"
    yaml.write_text(yaml.read_text().replace("utils.doc_to_visual", "utils.doc_to_visul"))
    result = run_cli("benchmark.local=null", "benchmark.tasks=[my_images]", f"benchmark.include_path=[{tasks}]",
                     "logger=none", out_dir=tmp_path / "runs", cwd=tmp_path)
    assert_one_clear_error(result, "vtr_bench: error: task my_images")
    assert "a !function hook cannot be imported" in result.stderr and "doc_to_visul" in result.stderr
    assert "Loading" not in result.stderr  # no checkpoint shard bar: the model never loaded
    [error] = (tmp_path / "runs").rglob("error.txt")
    assert not list((tmp_path / "runs").rglob("results.json")) and "ConfigError" in error.read_text()


def test_a_renamed_copy_of_a_judged_task_still_needs_its_judge(tmp_path, monkeypatch):
    """Judges are read from the metric config: a copy of MMBench under another name is still judged."""
    import pytest

    from vtr_bench.errors import ConfigError, EvaluationError
    from vtr_bench.eval.evaluate import check_tasks, task_manager

    folder = tmp_path / "copies"
    folder.mkdir()
    for name in ("_default_template_mmbench_en_yaml", "en_utils.py", "mmbench_evals.py", "mmbench.yaml"):
        shutil.copy(LMMS_TASKS / "mmbench" / name, folder / name)
    own = (LMMS_TASKS / "mmbench" / "mmbench_en_dev.yaml").read_text()
    own = own.replace('task: "mmbench_en_dev"', 'task: "my_mmbench"').replace("tag:\n  - public_eval_qwen3_5_family\n",
                                                                              "")
    (folder / "my_mmbench.yaml").write_text(own)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("LMMS_EVAL_DATASETS_CACHE", str(tmp_path / "empty_cache"))
    from lmms_eval.api.task import _resolve_hf_datasets_cache_dir

    _resolve_hf_datasets_cache_dir.cache_clear()  # lmms-eval resolves it once per process
    manager = task_manager(["my_mmbench"], None, tmp_path / "cache", [str(folder)])
    with pytest.raises(ConfigError, match=r"task my_mmbench is scored by an LLM judge "
                                          r"\(metrics \['gpt_eval_score'\]\): set OPENAI_API_KEY"):
        check_tasks(manager, ["my_mmbench"])
    with pytest.raises(EvaluationError, match="dataset lmms-lab-encoder/MMBench \\(en\\) of task my_mmbench"):
        check_tasks(manager, ["my_mmbench"], require_judge=False)  # the user said so: the next check speaks
    _resolve_hf_datasets_cache_dir.cache_clear()


def test_generation_settings_stops_and_empty_answers_are_recorded(tmp_path):
    """A task without max_new_tokens gets lmms-eval's models' 1024; a stop string ends generation where it
    appears (here "y": every "yes" answer becomes empty, counted and warned about)."""
    _shapes_task_copy(tmp_path, "shapes_y_stop", '["y"]')
    folder = _shapes_task_copy(tmp_path, "shapes_no_max", '["</s>"]')
    yaml = folder / "shapes_no_max.yaml"
    yaml.write_text("\n".join(line for line in yaml.read_text().splitlines() if "max_new_tokens" not in line))
    result = run_cli("benchmark.local=null", "benchmark.tasks=[shapes_y_stop,shapes_no_max]",
                     f"benchmark.include_path=[{folder}]", "benchmark.limit=30", "logger=none",
                     "run.show_progress=false", out_dir=tmp_path / "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    [path] = (tmp_path / "runs").rglob("results.json")
    results = json.loads(path.read_text())
    assert results["benchmark"] == {"config": "shapes", "tasks": ["shapes_no_max", "shapes_y_stop"]}
    no_max, y_stop = results["generation"]["shapes_no_max"], results["generation"]["shapes_y_stop"]
    assert (no_max["max_new_tokens"], no_max["max_new_tokens_source"], no_max["until"]) == (1024, "default", ["</s>"])
    assert no_max["empty_answers"] == 0 and no_max["ended"]["eos"] == 30
    assert y_stop["max_new_tokens_source"] == "task" and y_stop["until"] == ["y"]
    assert 0 < y_stop["empty_answers"] == y_stop["ended"]["stop"] < 30  # each "yes" stopped at its first token
    assert y_stop["ended"]["eos"] == 30 - y_stop["ended"]["stop"]
    assert f"vtr_bench: warning: shapes_y_stop: {y_stop['empty_answers']} of 30 answers are empty" in result.stderr
    assert results["task_files"]["lmms_eval"] == "0.7.3" and set(results["task_files"]["tasks"]) == {
        "shapes_no_max", "shapes_y_stop"}

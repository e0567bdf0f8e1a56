"""lmms-eval task code runs the same under both entry points: per-model prompt kwargs, stop strings given as one
string, and the multi-image policy through the plugin (the real-task harness issue, points 1-3)."""
import json
import os
import subprocess
import sys
from pathlib import Path

from test_cli import run_cli, write_local_task

LMMS_EVAL = Path(sys.executable).with_name("lmms-eval")

KWARGS_UTILS = """import os

from PIL import Image


def doc_to_visual(doc):
    return [Image.open(p).convert('RGB') for p in doc['image_paths']]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    pre = (lmms_eval_specific_kwargs or {}).get('pre_prompt', '')
    with open(os.environ['PROMPT_LOG'], 'a') as f:
        f.write(pre + '\\n')
    return pre + doc['question']


def process_results(doc, results):
    return {'exact_match': float(results[0] == doc['answer'])}
"""


def _lmms_eval(tmp_path, model_args, tasks, include, env):
    out = tmp_path / "lmms_out"
    result = subprocess.run([str(LMMS_EVAL), "--model", "vtr_bench", "--model_args",
                             f"{model_args},run.show_progress=false,run.out_dir={tmp_path / 'plugin_runs'}",
                             "--tasks", tasks, "--include_path", str(include), "--output_path", str(out)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    files = list(out.rglob("*_results.json"))  # lmms-eval exits 0 even when it fails: read what it wrote
    assert len(files) == 1, result.stdout[-2000:] + result.stderr[-3000:]
    return json.loads(files[0].read_text())["results"]


def test_both_entry_points_use_the_tasks_vtr_bench_prompt_kwargs(tmp_path):
    tasks = write_local_task(tmp_path, images_per_doc=1)
    (tasks / "utils.py").write_text(KWARGS_UTILS)
    yaml = (tasks / "my_images.yaml").read_text().replace("doc_to_text: question", "doc_to_text: !function "
                                                          "utils.doc_to_text")
    yaml += ("lmms_eval_specific_kwargs:\n  default:\n    pre_prompt: 'DEFAULT '\n"
             "  vtr_bench:\n    pre_prompt: 'OURS '\n")
    (tasks / "my_images.yaml").write_text(yaml)
    log = tmp_path / "prompts.log"
    env = {**os.environ, "PROMPT_LOG": str(log), "HF_HOME": str(tmp_path / "hf")}
    os.environ["PROMPT_LOG"] = str(log)  # run_cli passes the environment on
    try:
        ours = run_cli("benchmark.local=null", "benchmark.tasks=[my_images]", f"benchmark.include_path=[{tasks}]",
                       "logger=none", out_dir=tmp_path / "runs", cwd=tmp_path)
    finally:
        del os.environ["PROMPT_LOG"]
    assert ours.returncode == 0, ours.stderr[-2000:]
    assert set(log.read_text().split()) == {"OURS"}
    log.unlink()
    plugin = _lmms_eval(tmp_path, "model=tiny_llava", "my_images", tasks, env)
    assert set(log.read_text().split()) == {"OURS"}
    [ours_file] = (tmp_path / "runs").rglob("results.json")
    assert plugin["my_images"]["exact_match,none"] == json.loads(ours_file.read_text())["metrics"]["my_images"][
        "exact_match"]


def _shapes_task_copy(tmp_path, name, until):
    """A copy of the bundled ``shapes`` task (its data, hooks and metrics) with other stop strings."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf")}
    bundled = Path(subprocess.run([sys.executable, "-m", "vtr_bench.tasks", "shapes", str(tmp_path / "cache")],
                                  capture_output=True, text=True, env=env, check=True).stdout.strip())
    folder = tmp_path / "copies"
    folder.mkdir(exist_ok=True)
    (folder / "utils.py").write_text((bundled / "utils.py").read_text())
    task = (bundled / "shapes.yaml").read_text().replace("task: shapes", f"task: {name}")
    default = (bundled / "_default.yaml").read_text().replace('until: ["</s>"]', f"until: {until}")
    (folder / f"{name}.yaml").write_text(task.replace("include: _default.yaml", "") + default)
    return folder


def test_a_stop_string_given_as_one_string_is_one_stop(tmp_path):
    """lmms-eval's own models accept ``until: "ny"``; splitting it into characters would cut "yes" and "no"."""
    _shapes_task_copy(tmp_path, "shapes_list_stop", '["ny"]')
    folder = _shapes_task_copy(tmp_path, "shapes_string_stop", '"ny"')
    result = run_cli("benchmark.local=null", "benchmark.tasks=[shapes_list_stop,shapes_string_stop]",
                     f"benchmark.include_path=[{folder}]", "benchmark.limit=40", "logger=none",
                     "run.show_progress=false", out_dir=tmp_path / "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    [path] = (tmp_path / "runs").rglob("results.json")
    metrics = json.loads(path.read_text())["metrics"]
    assert metrics["shapes_string_stop"] == metrics["shapes_list_stop"]
    assert metrics["shapes_string_stop"]["exact_match_exist"] > 0.5  # "yes" / "no" answers survive the stop


def test_the_multi_image_policy_reaches_the_plugin(tmp_path):
    tasks = write_local_task(tmp_path, images_per_doc=3)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf")}
    plugin = _lmms_eval(tmp_path, "model=tiny_llava,benchmark.multi_image=middle", "my_images", tasks, env)
    ours = run_cli("benchmark.local=null", "benchmark.tasks=[my_images]", f"benchmark.include_path=[{tasks}]",
                   "benchmark.multi_image=middle", "logger=none", out_dir=tmp_path / "runs", cwd=tmp_path)
    assert ours.returncode == 0, ours.stderr[-2000:]
    [ours_file] = (tmp_path / "runs").rglob("results.json")
    assert plugin["my_images"]["exact_match,none"] == json.loads(ours_file.read_text())["metrics"]["my_images"][
        "exact_match"]

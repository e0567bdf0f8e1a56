"""Benchmark configs map to lmms-eval 0.7.3 generation tasks; missing datasets and judges fail fast in one line."""

import pytest
from test_cli import assert_one_clear_error, run_cli
from test_configs import CONF, compose_config

from vtr_bench.errors import ConfigError, EvaluationError
from vtr_bench.eval.evaluate import check_tasks
from vtr_bench.eval.task_files import task_configs

HUB_BENCHMARKS = sorted(p.stem for p in (CONF / "benchmark").glob("*.yaml")
                        if not p.stem.startswith(("shapes", "sparse")))
PAPER_TASKS = {"vqav2_val", "gqa", "vizwiz_vqa_val", "scienceqa_img", "textvqa_val", "pope", "mme", "mmbench_en_dev",
               "mmbench_cn_dev", "seedbench", "llava_in_the_wild", "mmvet"}
JUDGED_TASKS = {"mmvet", "llava_in_the_wild", "mmbench_en_dev", "mmbench_cn_dev", "mmbench_cn_cc"}


@pytest.fixture(scope="module")
def lmms_tasks():
    """lmms-eval's own task index (read from its YAML files, offline)."""
    from lmms_eval.tasks import TaskManager

    return TaskManager(verbosity="ERROR")


@pytest.mark.parametrize("name", HUB_BENCHMARKS)
def test_benchmark_configs_name_lmms_eval_generation_tasks(name, lmms_tasks):
    bench = compose_config(f"benchmark={name}").benchmark
    assert bench.name == name and bench.local is None and bench.batch_size == 1
    for task in bench.tasks:
        configs = {t: c for t, (_, c) in task_configs(lmms_tasks, task).items()}
        assert list(configs) == [task]  # a task, not a group
        assert configs[task]["output_type"] == "generate_until"
        assert configs[task]["dataset_path"].startswith("lmms-lab-encoder/")


def test_paper12_is_the_union_of_the_single_task_configs():
    singles = [compose_config(f"benchmark={n}").benchmark.tasks for n in HUB_BENCHMARKS if n != "paper12"]
    assert all(len(tasks) == 1 for tasks in singles)
    assert set(compose_config("benchmark=paper12").benchmark.tasks) == {t for [t] in singles} == PAPER_TASKS


@pytest.fixture
def empty_datasets_cache(monkeypatch, tmp_path):
    from lmms_eval.api.task import _resolve_hf_datasets_cache_dir

    monkeypatch.setenv("LMMS_EVAL_DATASETS_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    _resolve_hf_datasets_cache_dir.cache_clear()  # lmms-eval resolves it once per process
    yield tmp_path
    _resolve_hf_datasets_cache_dir.cache_clear()


def test_a_dataset_missing_offline_fails_fast_and_a_cached_one_passes(lmms_tasks, empty_datasets_cache):
    with pytest.raises(EvaluationError) as error:  # raised before lmms-eval's dataset loading and its retries
        check_tasks(lmms_tasks, ["gqa"])
    message = str(error.value)
    assert message.startswith("dataset lmms-lab-encoder/GQA (testdev_balanced_instructions) of task gqa is not in "
                              f"the local datasets cache {empty_datasets_cache}")
    assert "hub.offline=false" in message and "\n" not in message
    (empty_datasets_cache / "lmms-lab-encoder___gqa" / "testdev_balanced_instructions" / "0.0.0" / "abc").mkdir(
        parents=True)
    check_tasks(lmms_tasks, ["gqa"])


def test_groups_are_checked_task_by_task(lmms_tasks, empty_datasets_cache):
    assert set(task_configs(lmms_tasks, "pope_full")) == {"pope_adv", "pope_pop", "pope_random"}
    with pytest.raises(EvaluationError, match="of task pope_"):
        check_tasks(lmms_tasks, ["pope_full"])


@pytest.mark.parametrize("task", sorted(JUDGED_TASKS))
def test_judged_tasks_need_a_judge(task, lmms_tasks, empty_datasets_cache, monkeypatch):
    with pytest.raises(ConfigError, match=f"task {task} is scored by an LLM judge .*: set OPENAI_API_KEY"):
        check_tasks(lmms_tasks, [task])
    with pytest.raises(EvaluationError, match="is not in the local datasets cache"):  # the user said so
        check_tasks(lmms_tasks, [task], require_judge=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with pytest.raises(EvaluationError, match="is not in the local datasets cache"):
        check_tasks(lmms_tasks, [task])


def test_the_judge_is_read_from_the_metric_config_not_the_task_name(lmms_tasks):
    """Every lmms-eval task whose metrics a judge computes, and only those: the rule-based MMBench needs none."""
    from vtr_bench.eval.task_files import judge_metrics

    judged = {t for t in PAPER_TASKS | {"mmbench_en_dev_static", "mmbench_cn_cc"}
              if judge_metrics(task_configs(lmms_tasks, t)[t][1])}
    assert judged == JUDGED_TASKS


def test_a_run_on_an_uncached_benchmark_fails_in_one_line(tmp_path):
    result = run_cli("benchmark=gqa", "run.show_progress=false", out_dir=tmp_path)
    assert_one_clear_error(result, "vtr_bench: error: dataset lmms-lab-encoder/GQA (testdev_balanced_instructions)")



def test_a_judge_url_that_one_kind_of_judge_would_miss_is_named(lmms_tasks):
    """lmms-eval 0.7.3 appends /chat/completions to OPENAI_API_URL for MM-Vet / LLaVA-Bench but posts to it as given
    for MMBench: a URL of the wrong kind would fail every judge call (scores 0, or MMBench guessing)."""
    from vtr_bench.eval.task_files import judge_url_problem

    base, full = "http://judge.local/v1", "http://judge.local/v1/chat/completions"
    for task, wrong, right in (("mmvet", full, base), ("llava_in_the_wild", full, base),
                               ("mmbench_en_dev", base, full), ("mmbench_cn_dev", base, full)):
        yaml_path = task_configs(lmms_tasks, task)[task][0]
        assert judge_url_problem(yaml_path, wrong) and judge_url_problem(yaml_path, right) is None, task
        assert judge_url_problem(yaml_path, None) is None


def test_a_wrong_kind_of_judge_url_fails_the_check(lmms_tasks, empty_datasets_cache, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_API_URL", "http://judge.local/v1")
    with pytest.raises(ConfigError, match=r"task mmbench_en_dev: OPENAI_API_URL=http://judge.local/v1 will not "
                                          r"reach its judge: its judge posts to it as given"):
        check_tasks(lmms_tasks, ["mmbench_en_dev"])
    with pytest.raises(EvaluationError, match="is not in the local datasets cache"):
        check_tasks(lmms_tasks, ["mmvet"])  # the right kind for MM-Vet: the next check speaks

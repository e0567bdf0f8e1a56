"""Search methods from the command line: search, save, test evaluation and logs in one run."""
import json
import re

from test_cli import assert_one_clear_error, run_cli


def test_psigmoid_run_searches_saves_and_evaluates(tmp_path):
    result = run_cli("method=psigmoid", "budget=0.3", "search.limit=1", "method.n_calls=1", "benchmark.limit=1",
                     "run.show_progress=true", out_dir=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # every progress bar says what runs: each search evaluation by number, the test evaluation by model and method
    assert "search eval 1 (mean keep 1.000) shapes_search" in result.stderr
    assert "search eval 2 (mean keep" in result.stderr and "tiny_llava psigmoid shapes" in result.stderr
    assert not re.search(r"(^|\r|\n)\s*\d+%\|", result.stderr), result.stderr[-2000:]  # no unlabelled bar
    [saved] = list((tmp_path / "schedules").glob("tiny_llava-psigmoid-b0.3-shapes_search-n1-s0-*.json"))
    assert f"searched schedule saved to {saved}" in result.stdout
    schedule = json.loads(saved.read_text())
    [run_dir] = [p.parent for p in tmp_path.glob("tiny_llava/psigmoid/*/results.json")]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["schedule_ratios"] == schedule["ratios"] and abs(results["budget_achieved"] - 0.3) <= 1 / 144
    assert results["method_params"]["search"]["saved_to"] == str(saved)
    assert set(results["metrics"]) == {"shapes"} and results["samples"] == 1  # test split, not the search split
    trace = [json.loads(line) for line in (run_dir / "search_trace.jsonl").read_text().splitlines()]
    assert len(trace) == schedule["evaluations"] == 2 and trace[0]["budget"] == 1.0
    assert (run_dir / "search_schedule.png").exists() and (run_dir / "bo_convergence.png").exists()
    assert list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))


def test_search_methods_cannot_be_planned_without_a_model(tmp_path):
    result = run_cli("run.mode=flops", "method=gsearch", out_dir=tmp_path)
    assert_one_clear_error(result, "vtr_bench: error: method 'gsearch' searches its schedule on search data")

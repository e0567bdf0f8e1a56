"""Per-sample records, loyalty, paired comparisons of real runs (compare CLI, report) on the bundled tiny model."""
import json
import subprocess
import sys

import pytest
from test_cli import run_cli

from vtr_bench.eval.samples import read_samples
from vtr_bench.report import build_report

ARGS = ("benchmark.limit=40", "logger=wandb", "logger.mode=offline", "run.show_progress=false")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A full run, then FastV and random at budget 0.3, on the first 40 shapes samples (tiny_llava)."""
    out = tmp_path_factory.mktemp("paired")
    full = run_cli("method=full", *ARGS, "logger=none", out_dir=out)  # W&B: the reduced runs log it
    assert full.returncode == 0, full.stderr[-2000:]
    reduced = run_cli("method=fastv,random", "budget=0.3", *ARGS, flags=("-m",), out_dir=out)
    assert reduced.returncode == 0, reduced.stderr[-2000:]
    dirs = {p.parent.parent.name: p.parent for p in out.glob("tiny_llava/*/*/results.json")}
    assert set(dirs) == {"full", "fastv", "random"}
    return out, dirs


def test_every_eval_run_writes_its_samples_and_they_pair_by_doc_id(runs):
    _, dirs = runs
    samples = {name: read_samples(path) for name, path in dirs.items()}
    assert all(len(s) == 40 for s in samples.values())
    assert samples["full"].keys() == samples["fastv"].keys() == {("shapes", i) for i in range(40)}
    row = samples["fastv"][("shapes", 3)]
    assert row["prompt_sha256"] == samples["full"][("shapes", 3)]["prompt_sha256"]
    assert set(row["scores"]) >= {"exact_match"} and row["scores"]["exact_match"] in (0.0, 1.0)
    assert len(row["kept_per_layer"]) == 12 and row["kept_per_layer"][0] == row["n_vision"] == 144
    assert row["prefill_ms"] > 0 and row["ended"] in ("eos", "stop", "max_new_tokens")
    results = {name: json.loads((path / "results.json").read_text()) for name, path in dirs.items()}
    for name in dirs:  # the per-sample scores are the ones lmms-eval aggregated
        mean = sum(r["scores"]["exact_match"] for r in samples[name].values()) / 40
        assert mean == pytest.approx(results[name]["metrics"]["shapes"]["exact_match"])
    assert len({r["pairing"] for r in results.values()}) == 1
    assert list(dirs["fastv"].glob("wandb/offline-run-*/run-*.wandb"))


def test_loyalty_to_the_full_model_is_recorded(runs):
    _, dirs = runs
    full, fastv = read_samples(dirs["full"]), read_samples(dirs["fastv"])
    expected = sum(fastv[k]["answer"] == full[k]["answer"] for k in full) / 40
    loyalty = json.loads((dirs["fastv"] / "results.json").read_text())["loyalty"]
    assert loyalty["full_run"] == str(dirs["full"])
    assert loyalty["tasks"]["shapes"]["answer_match"] == pytest.approx(expected)
    assert loyalty["tasks"]["shapes"]["samples"] == 40
    assert json.loads((dirs["full"] / "results.json").read_text())["loyalty"] is None


def test_compare_prints_one_paired_line_per_task(runs):
    _, dirs = runs
    result = subprocess.run([sys.executable, "-m", "vtr_bench.compare", str(dirs["full"]), str(dirs["fastv"]),
                             "--resamples", "500"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    [line] = [ln for ln in result.stdout.splitlines() if ln.startswith("shapes")]
    full, fastv = read_samples(dirs["full"]), read_samples(dirs["fastv"])
    a = sum(r["scores"]["exact_match"] for r in full.values()) / 40
    b = sum(r["scores"]["exact_match"] for r in fastv.values()) / 40
    assert f"A {a:.3f}  B {b:.3f}  B−A {b - a:+.4f} [95% CI" in line and "McNemar p=" in line
    bad = subprocess.run([sys.executable, "-m", "vtr_bench.compare", str(dirs["full"]), str(dirs["full"].parent)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("vtr_bench.compare: error:") and "Traceback" not in bad.stderr


def test_the_report_carries_paired_intervals_and_marks_the_indistinguishable(runs, tmp_path):
    out, dirs = runs
    report = build_report(out, tmp_path / "report", resamples=500)
    rows = {r["method"]: r for r in report["rows"]}
    assert rows["full"]["vs_full"] is None and rows["full"]["accuracy_ci"]["low"] <= rows["full"]["average"]
    fastv = rows["fastv"]
    assert fastv["vs_full"]["reference"] == str(dirs["full"]) and fastv["vs_random"]["reference"] == str(
        dirs["random"])
    diff = fastv["vs_full"]["diff"]
    assert diff["low"] <= diff["estimate"] <= diff["high"]
    assert diff["estimate"] == pytest.approx(fastv["average"] - rows["full"]["average"])
    assert rows["random"]["vs_random"] is None
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Δ vs full" in text and f"{diff['estimate']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]" in text
    for row in (rows["fastv"], rows["random"]):  # ≈ marks exactly the differences whose interval contains 0
        d = row["vs_full"]["diff"]
        marked = f"{d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] ≈" in text
        assert marked == d["contains_zero"] == (d["low"] <= 0 <= d["high"])


def test_a_samples_file_that_is_not_its_runs_is_refused(runs, tmp_path):
    import shutil

    _, dirs = runs
    copy = tmp_path / "copy"
    shutil.copytree(dirs["fastv"], copy, ignore=shutil.ignore_patterns("wandb"))
    lines = (copy / "samples.jsonl").read_text().splitlines()
    (copy / "samples.jsonl").write_text("\n".join(lines[1:] + lines[:1]) + "\n")  # the same rows, another file
    result = subprocess.run([sys.executable, "-m", "vtr_bench.compare", str(dirs["full"]), str(copy)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "is not the samples file its results.json was computed from" in result.stderr

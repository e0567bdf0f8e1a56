"""`make report` builds its table and plots from run directories alone."""
import json

from vtr_bench.report import build_report, pareto_front
from vtr_bench.tracking.results import write_json_atomic


def _write_run(root, model, method, budget, acc, tflops, status="complete", run_id=None, **extra):
    run = root / model / method / (run_id or f"b{budget}")
    achieved = 1.0 if budget is None else budget
    write_json_atomic(run / "results.json", {
        "status": status, "model": model, "method": method, "budget_requested": budget, "budget_achieved": achieved,
        "metrics": {"shapes": {"exact_match": acc, "exact_match_count": 0.1}}, "tflops": tflops,
        "flops_ratio": tflops / 2.0, "latency": {"prefill": {"median_ms": 10.0 * achieved}},
        "schedule_ratios": [1.0, achieved, achieved], **extra,
    })


def test_report_table_and_plots(tmp_path):
    _write_run(tmp_path, "tiny", "full", None, 0.9, 2.0)
    _write_run(tmp_path, "tiny", "fastv", 0.5, 0.8, 1.1)
    _write_run(tmp_path, "tiny", "random", 0.5, 0.7, 1.1)
    _write_run(tmp_path, "tiny", "random", 0.25, 0.6, 0.6, status="running")  # incomplete: left out
    _write_run(tmp_path, "other", "sparsevlm", None, 0.5, 0.7, label="SparseVLM 192 tokens", positions="renumber")
    (tmp_path / "tiny" / "broken").mkdir()
    (tmp_path / "tiny" / "broken" / "results.json").write_text("{half")
    report = build_report(tmp_path, tmp_path / "report")
    assert [(r["method"], r["average"]) for r in report["rows"]] == [
        ("sparsevlm", 0.5), ("fastv", 0.8), ("full", 0.9), ("random", 0.7)]
    table = (tmp_path / "report" / "report.md").read_text().splitlines()
    assert table[0].split(" | ")[2:5] == ["paper's label", "positions", "budget"]
    assert table[0].split(" | ")[6] == "shapes"
    # no samples.jsonl in these runs: no paired columns (Δ vs full / random, p, loyalty), never a made-up number
    assert "| tiny | fastv | — | — | 0.5 | 0.500 | 0.800 | 0.800 | — | — | — | — | 1.1 | 0.550 | 5.0 |" in table
    assert ("| other | sparsevlm | SparseVLM 192 tokens | renumber | — | 1.000 | 0.500 | 0.500 | — | — | — | — | 0.7 | "
            "0.350 | 10.0 |") in table
    assert "| method | none | 0.5 |" in table
    tiny = table[next(i for i, line in enumerate(table) if line.startswith("**tiny** (average accuracy")):]
    assert tiny[tiny.index("| method | none | 0.5 |") + 2:][:3] == [
        "| full | 0.900 (1.000) | — |", "| fastv | — | 0.800 (0.500) |", "| random | — | 0.700 (0.500) |"]
    for name in ("pareto.png", "schedules.png", "accuracy_vs_budget.png"):
        assert (tmp_path / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(json.loads((tmp_path / "report" / "report.json").read_text())) == 4


def test_budget_table_shows_every_run_of_a_cell(tmp_path):
    _write_run(tmp_path, "tiny", "fastv", 0.5, 0.8, 1.1)
    _write_run(tmp_path, "tiny", "fastv", 0.5, 0.6, 1.1, run_id="k1")  # same method and budget, other parameters
    build_report(tmp_path, tmp_path / "report")
    assert "| fastv | 0.800 (0.500) / 0.600 (0.500) |" in (tmp_path / "report" / "report.md").read_text()


def test_budget_table_gives_each_setting_of_a_method_its_row(tmp_path):
    for criterion, tolerance, acc in (("mean", 0.01, 0.8), ("paired", 0.01, 0.85), ("mean", 0.05, 0.7)):
        _write_run(tmp_path, "tiny", "gsearch", None, acc, 1.0, run_id=f"{criterion}{tolerance}",
                   method_params={"name": "gsearch", "criterion": criterion, "tolerance": tolerance, "start_layer": 2,
                                  "search": {"evaluations": 20}})
    build_report(tmp_path, tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    for line in ("| gsearch (criterion=mean, tolerance=0.01) | 0.800 (1.000) |",
                 "| gsearch (criterion=mean, tolerance=0.05) | 0.700 (1.000) |",
                 "| gsearch (criterion=paired, tolerance=0.01) | 0.850 (1.000) |"):
        assert line in text


def test_budget_table_tells_position_policies_apart(tmp_path):
    for positions, acc in (("keep", 0.7), ("renumber", 0.6)):
        _write_run(tmp_path, "tiny", "sparsevlm", 0.3, acc, 1.0, run_id=positions, positions=positions)
    build_report(tmp_path, tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| sparsevlm (positions=keep) | 0.700 (0.300) |" in text
    assert "| sparsevlm (positions=renumber) | 0.600 (0.300) |" in text


def test_pareto_front_keeps_only_undominated_points():
    assert pareto_front([(2.0, 0.9), (1.1, 0.8), (1.1, 0.7), (1.5, 0.75), (0.5, 0.5)]) == [
        (0.5, 0.5), (1.1, 0.8), (2.0, 0.9)]

"""Does G-Search keep its promise on the test split? One row per G-Search run under a runs folder (both pass
criteria, every tolerance): search drop (full − schedule, on the search samples), test drop with its 95% paired
interval (vs the full run of the same pairing), and whether the test drop stayed within the tolerance.

    .venv/bin/python recipes/gsearch_criteria.py [runs/tiny]      (after recipes/tiny_tables.sh)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from vtr_bench.compare import compare
from vtr_bench.eval.samples import read_samples


def rows(runs: Path) -> list[dict]:
    """The G-Search runs under ``runs`` with their search and test drops."""
    out = []
    for path in sorted(runs.glob("*/gsearch/*/results.json")):
        result = json.loads(path.read_text())
        fulls = [p for p in sorted(runs.glob(f"{result['model']}/full/*/results.json"))
                 if json.loads(p.read_text()).get("pairing") == result.get("pairing")]
        if not fulls:
            continue
        full = json.loads(fulls[0].read_text())
        search = result["method_params"]["search"]
        paired = compare(read_samples(fulls[0].parent), read_samples(path.parent))["average"]["diff"]
        test_drop = full["metrics"]["shapes"]["exact_match"] - result["metrics"]["shapes"]["exact_match"]
        out.append({"model": result["model"], "criterion": search["criterion"], "tolerance": search["tolerance"],
                    "budget": result["budget_achieved"], "evaluations": search["evaluations"],
                    "search_drop": search["reference_accuracy"] - search["search_accuracy"], "test_drop": test_drop,
                    "test_drop_ci": [-paired["high"], -paired["low"]],
                    "kept": test_drop <= search["tolerance"] + 1e-9})
    return sorted(out, key=lambda r: (r["model"], r["tolerance"], r["criterion"]))


def markdown(table: list[dict]) -> str:
    lines = ["| model | tolerance | criterion | achieved budget | evaluations | search drop | test drop [95% CI] | "
             "within tolerance on test |", "|---|---|---|---|---|---|---|---|"]
    for r in table:
        low, high = r["test_drop_ci"]
        lines.append(f"| {r['model']} | {r['tolerance']:g} | {r['criterion']} | {r['budget']:.3f} | "
                     f"{r['evaluations']} | {r['search_drop']:+.3f} | {r['test_drop']:+.3f} [{low:+.3f}, {high:+.3f}] "
                     f"| {'yes' if r['kept'] else 'no'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/tiny")
    table = rows(runs)
    (runs / "report").mkdir(parents=True, exist_ok=True)
    (runs / "report" / "gsearch_criteria.json").write_text(json.dumps(table, indent=1))
    print(markdown(table))

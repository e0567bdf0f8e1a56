"""Kill-and-resume measurement (README "Reliability"): SIGKILL a sweep and two searches at random moments, resume
with the same command, and check that finished results were never rewritten and searches end at the schedule an
uninterrupted run finds.

    .venv/bin/python recipes/kill_resume.py [--kills 8] [--out /tmp/kill_resume] [--seed 0]

Writes ``benchmarks/results/kill_resume.json``. CPU, one thread; about 10 minutes on the 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["-m", "method=fastv,random", "++method.k=1", "budget=0.5,0.3,0.25,0.125", "benchmark.limit=40"]
SEARCHES = {"psigmoid": ["method=psigmoid", "budget=0.3", "search.limit=10", "method.n_calls=8",
                         "method.n_initial_points=4", "benchmark.limit=5"],
            "gsearch": ["method=gsearch", "search.limit=10", "benchmark.limit=5"]}


def command(out: Path, args: list[str]) -> list[str]:
    flags = [a for a in args if a.startswith("-")]  # Hydra's flags go before the overrides
    return [sys.executable, "-m", "vtr_bench", *flags, f"run.out_dir={out}", "logger=none", "run.show_progress=false",
            *(a for a in args if not a.startswith("-"))]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def complete(out: Path) -> dict[str, bytes]:
    found = {}
    for path in out.rglob("results.json"):
        data = path.read_bytes()
        if json.loads(data).get("status") == "complete":
            found[str(path.relative_to(out))] = data
    return found


def timed(out: Path, args: list[str]) -> float:
    """Run ``args`` uninterrupted (the reference); returns its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run(command(out, args), env=env(), cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def killed_then_resumed(out: Path, args: list[str], kills: int, delay):
    """Run ``args`` ``kills`` times, each SIGKILLed after ``delay(finished runs so far)`` seconds, then to the end;
    returns (snapshots of the finished results after each kill, the final finished results, kills that landed before
    the command had finished)."""
    snapshots, landed = [], 0
    for _ in range(kills):
        proc = subprocess.Popen(command(out, args), env=env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(delay(len(complete(out))))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            landed += 1
        proc.wait()
        snapshots.append(complete(out))
    subprocess.run(command(out, args), env=env(), cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return snapshots, complete(out), landed


def metrics(results: dict[str, bytes]) -> dict[str, dict]:
    return {json.loads(v)["config"]["method"]["_target_"] + str(json.loads(v)["budget_requested"]):
            json.loads(v)["metrics"] for v in results.values()}


def saved_schedule(out: Path) -> list[float]:
    [path] = (out / "schedules").glob("*.json")
    return json.loads(path.read_text())["ratios"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("/tmp/kill_resume"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "kill_resume.json")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    shutil.rmtree(args.out, ignore_errors=True)
    start = time.time()
    report = {"machine": "2-core x86-64 CPU, OMP_NUM_THREADS=1", "seed": args.seed}

    reference = args.out / "reference"
    seconds = timed(reference, SWEEP)
    total = len(complete(reference))
    # a kill at a random moment of what is left (each attempt skips the finished runs), after a 2 s start
    delay = lambda done: 2 + rng.uniform(0.1, 1.0) * seconds * (total - done) / total  # noqa: E731
    snapshots, final, landed = killed_then_resumed(args.out / "sweep", SWEEP, args.kills, delay)
    rewritten = sum(final.get(path) != data for snap in snapshots for path, data in snap.items())
    report["sweep"] = {"runs": len(final), "kills": landed, "uninterrupted_seconds": round(seconds, 1),
                       "finished_before_a_kill": sum(map(len, snapshots)),
                       "rewritten_after_resume": rewritten,
                       "metrics_equal_uninterrupted": metrics(final) == metrics(complete(reference))}

    for name, search in SEARCHES.items():
        reference = args.out / f"{name}-reference"
        seconds = timed(reference, search)
        resumed = args.out / name
        delay = lambda done, s=seconds: rng.uniform(0.3, 0.7) * s  # noqa: E731  (cached evaluations replay fast)
        _, _, landed = killed_then_resumed(resumed, search, max(2, args.kills // 2), delay)
        report[name] = {"kills": landed, "uninterrupted_seconds": round(seconds, 1),
                        "same_schedule": saved_schedule(resumed) == saved_schedule(reference)}
    report["minutes"] = round((time.time() - start) / 60, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    ok = report["sweep"]["rewritten_after_resume"] == 0 and report["sweep"]["metrics_equal_uninterrupted"] and \
        all(report[name]["same_schedule"] for name in SEARCHES)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

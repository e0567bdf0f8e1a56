"""No silent wrong numbers, no stale reuse, one line for every bad input: each case through the CLI (or the plugin /
report entry point), with a checksum of the output folder showing that no earlier result changed and that nothing
was written outside ``run.out_dir``; plus tests that catch plausible bugs the rest of the suite let through."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch

from test_cli import LOCAL_TASK_YAML, assert_one_clear_error, run_cli
from vtr_bench.tracking.results import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
TINY_LLAVA = ROOT / "vtr_bench" / "assets" / "tiny_llava"
FAST = ("benchmark.limit=2", "logger=none", "run.show_progress=false")


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def guarded(tmp_path):
    """A work folder with an earlier finished run under ``runs/``: on exit, every earlier file is unchanged and
    nothing new exists outside ``runs/``."""
    work = tmp_path / "work"
    out = work / "runs"
    write_json_atomic(out / "tiny_llava" / "full" / "earlier" / "results.json", {"status": "complete", "x": 1})
    before = _tree(work)
    yield work, out
    after = _tree(work)
    assert {k: v for k, v in after.items() if k in before} == before, "an earlier result changed"
    assert all(k.startswith("runs/") for k in after), f"files outside run.out_dir: {sorted(set(after) - set(before))}"


def cli(work, out, *overrides, **kwargs):
    return run_cli(*overrides, out_dir=out, cwd=work, **kwargs)


# --- 1-6: silent wrong numbers and stale reuse --------------------------------------------------------------------

def _damaged_png(path):
    """A PNG whose header is intact and whose pixel data (IDAT) is damaged: PIL decodes it silently into a partial
    image when LOAD_TRUNCATED_IMAGES is set, as lmms-eval sets it."""
    from PIL import Image

    Image.radial_gradient("L").convert("RGB").resize((48, 48)).save(path)
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 4
    data[start + 10:start + 40] = bytes(30)  # zeros in the deflate stream
    crc = zlib.crc32(bytes(data[start - 4:start + int.from_bytes(data[start - 8:start - 4], "big")]))
    end = start + int.from_bytes(data[start - 8:start - 4], "big")
    data[end:end + 4] = crc.to_bytes(4, "big")  # a valid chunk checksum: only the pixel stream is bad
    path.write_bytes(bytes(data))


def test_1_damaged_pixel_data_is_an_error_not_a_zero(guarded):
    from PIL import Image, ImageFile

    work, out = guarded
    task = out / "task"
    task.mkdir(parents=True)
    _damaged_png(task / "bad.png")
    previous, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, True
    try:
        Image.open(task / "bad.png").convert("RGB")  # what lmms-eval's setting lets through silently
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
    (task / "data.jsonl").write_text(json.dumps({"image_paths": [str(task / "bad.png")], "question": "q?",
                                                 "answer": "red"}) + "\n")
    (task / "utils.py").write_text("from PIL import Image\n\n\ndef doc_to_visual(doc):\n"
                                   "    return [Image.open(p).convert('RGB') for p in doc['image_paths']]\n\n\n"
                                   "def process_results(doc, results):\n"
                                   "    return {'exact_match': float(results[0] == doc['answer'])}\n")
    (task / "my_images.yaml").write_text(LOCAL_TASK_YAML.format(data=task / "data.jsonl"))
    result = cli(work, out, "benchmark.local=null", "benchmark.tasks=[my_images]", f"benchmark.include_path=[{task}]",
                 *FAST)
    assert_one_clear_error(result, "vtr_bench: error: my_images doc 0: could not load its image")
    assert [p.parent.name for p in out.glob("tiny_llava/full/*/results.json")] == ["earlier"]


def _schedule_file(path, ratios):
    path.write_text(json.dumps({"ratios": ratios}))
    return path


def test_2_a_schedule_file_changed_on_disk_is_not_reused(guarded):
    work, out = guarded
    path = _schedule_file(work / "runs" / "s.json", [1.0] * 2 + [0.5] * 10)
    first = cli(work, out, "method=schedule", f"method.path={path}", *FAST)
    assert first.returncode == 0, first.stderr[-2000:]
    _schedule_file(path, [1.0] * 2 + [0.25] * 10)
    second = cli(work, out, "method=schedule", f"method.path={path}", *FAST)
    assert second.returncode == 0 and "already complete" not in second.stderr
    ratios = sorted(json.loads(p.read_text())["schedule_ratios"][-1]
                    for p in out.glob("tiny_llava/schedule/*/results.json"))
    assert ratios == [0.25, 0.5]


SEARCH = ("search.limit=2", "method.n_initial_points=2", "budget=0.5", *FAST)


def test_3_different_searches_never_share_a_schedule_file(guarded):
    work, out = guarded
    for calls in (2, 3):
        result = cli(work, out, "method=psigmoid", f"method.n_calls={calls}", *SEARCH)
        assert result.returncode == 0, result.stderr[-2000:]
    saved = sorted((out / "schedules").glob("*.json"))
    assert len(saved) == 2 and {json.loads(p.read_text())["method_params"]["n_calls"] for p in saved} == {2, 3}


def test_4_resume_does_not_depend_on_how_out_dir_is_spelt(guarded):
    work, out = guarded
    results = [run_cli(*FAST, out_dir=Path(spelling), cwd=work) for spelling in ("runs", "./runs", str(out))]
    assert results[0].returncode == 0, results[0].stderr[-2000:]
    assert all("already complete" in r.stderr for r in results[1:])
    assert len(list(out.glob("tiny_llava/full/*/results.json"))) == 2  # the earlier one and this one


def test_5_6_bad_search_cache_entries_are_recomputed_and_trace_attempts_are_marked(guarded):
    work, out = guarded
    args = ("method=gsearch", "method.grid=[0.5,1.0]", "search.limit=2", *FAST)
    assert cli(work, out, *args).returncode == 0
    entries = sorted((out / "cache" / "search").glob("*.json"))
    for path, bad in zip(entries, [None, float("nan"), "0.5", True] * len(entries)):
        entry = json.loads(path.read_text())
        path.write_text(json.dumps({**entry, "accuracy": bad}))
    again = cli(work, out, *args, "run.force=true")
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr[-2000:]
    assert all(isinstance(json.loads(p.read_text())["accuracy"], float) for p in entries)
    [trace] = out.glob("tiny_llava/gsearch/*/search_trace.jsonl")
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    attempts = list(dict.fromkeys(line["attempt"] for line in lines))
    assert len(attempts) == 2 and all(sum(line["attempt"] == a for line in lines) == len(lines) // 2 for a in attempts)
    assert not [line for line in lines if line["attempt"] == attempts[1]][0]["cached"]  # its entries were bad


# --- 7-9: files outside the output dir, races, odd paths ----------------------------------------------------------

@pytest.mark.parametrize("overrides, expected", [
    (["method=fastv", "budget='../../escaped'"], "budget must be a number in (0, 1]"),
    (["model.name=../../escaped"], "model.name '../../escaped' cannot name a run directory"),
    (["method=fastv", "budget=1.5"], "budget must be in (0, 1]"),
])
def test_7_rejected_runs_write_nothing(guarded, overrides, expected):
    work, out = guarded
    assert_one_clear_error(cli(work, out, *overrides, *FAST), f"vtr_bench: error: {expected}")
    assert sorted(_tree(work)) == ["runs/tiny_llava/full/earlier/results.json"]


def test_7_a_failed_run_marks_its_dir(guarded):
    work, out = guarded
    result = cli(work, out, "model=llava15_7b", *FAST)
    assert_one_clear_error(result, "vtr_bench: error: llava-hf/llava-1.5-7b-hf is not in the local HF cache")
    [error] = out.glob("llava15_7b/full/*/error.txt")
    assert error.read_text().startswith("ModelLoadError: llava-hf/llava-1.5-7b-hf") and not \
        list(error.parent.glob("results.json"))


def test_8_processes_materialising_the_task_cache_at_once(tmp_path):
    for round_ in range(2):
        target = tmp_path / f"cache{round_}"
        procs = [subprocess.Popen([sys.executable, "-m", "vtr_bench.tasks", "shapes", str(target)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
        outputs = [p.communicate(timeout=600) for p in procs]
        assert all(p.returncode == 0 for p in procs), [err[-500:] for _, err in outputs]
        assert len({out.strip() for out, _ in outputs}) == 1
        tasks = Path(outputs[0][0].strip())
        assert not [p for p in tasks.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_9_an_out_dir_with_non_ascii_characters(guarded):
    work, _ = guarded
    out = work / "runs" / "résultats-😀"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(work / "runs" / "hf")}
    result = subprocess.run([sys.executable, "-m", "vtr_bench", f"run.out_dir='{out}'", *FAST],  # quoted: Hydra
                            capture_output=True, text=True, env=env, cwd=work, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert list(out.glob("tiny_llava/full/*/results.json"))


# --- 10-12: one line instead of a traceback -------------------------------------------------------------------------

BAD_VALUES = [
    (["benchmark.limit=0"], "benchmark.limit must be >= 1, got 0"),
    (["benchmark.limit=-1"], "benchmark.limit must be >= 1, got -1"),
    (["benchmark.limit=abc"], "benchmark.limit must be an integer or null, got 'abc'"),
    (["search.limit=0"], "search.limit must be >= 1, got 0"),
    (["benchmark.batch_size=0"], "benchmark.batch_size must be >= 1, got 0"),
    (["seed=abc"], "seed must be an integer, got 'abc'"),
    (["run.mode=flops", "flops.vision_tokens=-5"], "flops.vision_tokens must be >= 1, got -5"),
    (["method=psigmoid", "budget=0.3", "method.source_offset=5"], "method.source_offset must be -1 or 0, got 5"),
    (["method=schedule", "method.ratios=[1,1,1,1,1,1,1,1,1,1,1,1]", "method.source_offset=5"],
     "method.source_offset must be -1 or 0, got 5"),
    (["method=fastv", "method.k=1.5"], "method.k must be an integer >= 0, got 1.5"),
    (["run.device=cuda"], "run.device=cuda, but this machine has no CUDA device"),
    (["run.device=cuda:7"], "run.device=cuda:7, but this machine has no CUDA device"),
    (["run.device=tpu9"], "run.device must be cpu, cuda, cuda:N or mps, got 'tpu9'"),
    (["logger.mode=bogus"], "logger.mode must be one of"),
]


@pytest.mark.parametrize("overrides, expected", BAD_VALUES)
def test_10_values_are_validated_up_front(tmp_path, overrides, expected):
    """What the CLI runs (:func:`vtr_bench.run.run`), in this process: the error comes before any file is written."""
    from test_search import compose_config
    from vtr_bench.errors import ConfigError
    from vtr_bench.run import run

    if "cuda" in overrides[0] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "runs"
    with pytest.raises(ConfigError) as error:
        run(compose_config(f"run.out_dir={out}", f"run.cache_dir={out}/cache", *overrides))
    assert expected in str(error.value) and not out.exists()


@pytest.mark.parametrize("overrides, expected", [BAD_VALUES[3], BAD_VALUES[9]])
def test_10_the_cli_says_it_in_one_line(guarded, overrides, expected):
    work, out = guarded
    assert_one_clear_error(cli(work, out, *overrides), f"vtr_bench: error: {expected}")


def _copy_checkpoint(folder):
    shutil.copytree(TINY_LLAVA, folder)
    return folder


@pytest.mark.parametrize("damage, expected", [
    ("truncate", "model.safetensors is not a readable safetensors file"),
    ("text_config", "config.json: text_config must be an object, got int"),
    ("config", "config.json is not readable JSON"),
])
def test_11_broken_checkpoints_are_one_line_naming_the_file(guarded, damage, expected):
    work, out = guarded
    folder = _copy_checkpoint(out / "ckpt")
    if damage == "truncate":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "text_config":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "text_config": 5}))
    else:
        (folder / "config.json").write_text("{not json")
    assert_one_clear_error(cli(work, out, f"model.path={folder}", "model.asset=null", *FAST), expected)


def test_12_unwritable_storage_is_reported_before_the_work(guarded):
    work, out = guarded
    blocker = out / "a-file"
    blocker.write_text("")
    for key in ("search.cache_dir", "search.schedules_dir"):
        result = cli(work, out, "method=gsearch", f"{key}={blocker}/sub", "search.limit=2", *FAST)
        assert_one_clear_error(result, f"vtr_bench: error: {key} {blocker}/sub is not a writable folder")
    first = cli(work, out, *FAST)
    assert first.returncode == 0
    [results] = [p for p in out.glob("tiny_llava/full/*/results.json") if "earlier" not in str(p)]
    results.unlink()
    results.mkdir()
    assert_one_clear_error(cli(work, out, *FAST), f"vtr_bench: error: {results} is a directory")


# --- 13-17: entry points -------------------------------------------------------------------------------------------

LMMS_EVAL = Path(sys.executable).with_name("lmms-eval")


def test_13_lmms_eval_plugin_bad_model_args(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf")}
    include = subprocess.run([sys.executable, "-m", "vtr_bench.tasks", "shapes", str(tmp_path / "cache")],
                             capture_output=True, text=True, env=env, check=True).stdout.strip()
    result = subprocess.run([str(LMMS_EVAL), "--model", "vtr_bench", "--model_args", f"model=nope,run.out_dir="
                             f"{tmp_path / 'runs'}", "--tasks", "shapes", "--include_path", include, "--limit", "2",
                             "--output_path", str(tmp_path / "out")],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("vtr_bench: error:")]
    assert len(ours) == 1 and "Could not find 'model/nope'" in ours[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("model_args, expected", [
    ({"budget": "abc"}, "budget must be a number in (0, 1], got 'abc'"),
    ({"nosuchkey": "1"}, "nosuchkey"),
])
def test_13_plugin_model_args_are_checked_in_one_line(tmp_path, capsys, model_args, expected):
    """The same model class lmms-eval builds from ``--model_args`` (strings, as its parser gives them)."""
    from vtr_bench.eval.plugin import VtrBenchLMM

    with pytest.raises(SystemExit) as stop:
        VtrBenchLMM(**model_args, **{"run.out_dir": str(tmp_path / "runs")})
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("vtr_bench: error:")]
    assert stop.value.code == 2 and len(ours) == 1 and expected in ours[0], err


def test_14_a_sweep_job_with_an_unexpected_error_and_ctrl_c(guarded):
    work, out = guarded
    # the random model's builder rejects the key (a KeyError, not one of ours); the bundled model ignores it
    result = cli(work, out, "model=tiny_random_llava,tiny_llava", "+model.builder_args.bogus=1", *FAST, flags=("-m",))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "1 sweep job(s) failed" in result.stderr and "KeyError" in result.stderr
    assert len(list(out.glob("tiny_llava/full/*/results.json"))) == 2  # the other job finished
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "HF_HOME": str(out / "hf")}
    proc = subprocess.Popen([sys.executable, "-m", "vtr_bench", f"run.out_dir={out}", "logger=none",
                             "run.force=true"], cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(10)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    assert "vtr_bench: error: interrupted" in stderr.strip().splitlines()[-1]  # (after a progress bar's \r)


def test_15_report_skips_broken_results_with_a_warning(tmp_path):
    good = {"status": "complete", "model": "m", "method": "full", "budget_achieved": 1.0,
            "metrics": {"t": {"exact_match": 0.5}}, "tflops": 1.0, "flops_ratio": 1.0,
            "latency": {"prefill": {"median_ms": 1.0}}, "schedule_ratios": [1.0]}
    write_json_atomic(tmp_path / "runs" / "good" / "results.json", good)
    for name, content in {"binary": b"\x89PNG\x00\xff\xfe", "list": b"[1, 2]", "stub": b'{"status": "complete"}',
                          "wrong": json.dumps({**good, "latency": 3}).encode()}.items():
        (tmp_path / "runs" / name).mkdir()
        (tmp_path / "runs" / name / "results.json").write_bytes(content)
    result = subprocess.run([sys.executable, "-m", "vtr_bench.report", "--runs", str(tmp_path / "runs"), "--out",
                             str(tmp_path / "report"), "--wandb", "none"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.count("vtr_bench: warning: skipped") == 4
    assert len(json.loads((tmp_path / "report" / "report.json").read_text())) == 1


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_16_a_schedule_path_that_is_not_a_file(guarded, kind):
    work, out = guarded
    path = "/dev/zero"
    if kind == "fifo":
        path = out / "fifo"
        os.mkfifo(path)
    result = cli(work, out, "method=schedule", f"method.path={path}", *FAST, timeout=120)
    assert_one_clear_error(result, f"vtr_bench: error: schedule file {path} is not a regular file")


@pytest.mark.parametrize("overrides", [["model=nope"], ["method=fastvv"], ["benchmark=nope"], ["modle=tiny_llava"]])
def test_17_hydra_errors_start_with_our_line(guarded, overrides):
    work, out = guarded
    result = cli(work, out, *overrides)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    first = result.stderr.strip().splitlines()[0]
    assert first.startswith("vtr_bench: error: ") and len(result.stderr.strip().splitlines()) >= 1
    if overrides[0].startswith(("model=", "method=", "benchmark=")):
        assert "Available options" in result.stderr  # Hydra's list of valid options is kept


# --- 18-23: tests that catch plausible bugs ----------------------------------------------------------------------

def test_18_a_retrained_checkpoint_gets_new_cached_accuracies(tmp_path):
    from test_search import make_objective
    from vtr_bench.models.base import VLMAdapter
    from vtr_bench.models.loader import load_adapter
    from vtr_bench.reduction.schedule import KeepSchedule
    from test_configs import compose_config

    adapter = load_adapter(compose_config().model)
    half = KeepSchedule((1.0,) * 2 + (0.5,) * 10)
    before = make_objective(adapter, tmp_path / "tasks", tmp_path / "cache")
    before(half)
    with torch.no_grad():
        adapter.model.lm_head.weight[0, 0] += 1e-3  # "retrained"
    after = make_objective(VLMAdapter(adapter.model, adapter.processor, adapter.prompt_template, adapter.name),
                           tmp_path / "tasks", tmp_path / "cache")
    after(half)
    assert after.new_evaluations == 1 and len(list((tmp_path / "cache").glob("*.json"))) == 2


def test_19_results_json_is_never_half_written(tmp_path, monkeypatch):
    from test_configs import compose_config
    from vtr_bench import run as run_module

    cfg = compose_config(f"run.out_dir={tmp_path}", "logger=none", "run.force=true")
    run_dir = run_module.run_directory(cfg)
    write_json_atomic(run_dir / "results.json", {"status": "complete", "old": True})
    old = (run_dir / "results.json").read_bytes()
    monkeypatch.setattr(run_module.BenchmarkRecipe, "setup", lambda self: setattr(self, "objective", None))
    monkeypatch.setattr(run_module.BenchmarkRecipe, "evaluate",
                        lambda self: {"status": "complete", "metrics": {"t": {"m": 1.0}}, "zz_broken": object()})
    with pytest.raises(TypeError):
        run_module.run(cfg)
    assert (run_dir / "results.json").read_bytes() == old


def test_20_kv_cache_bytes_follow_the_formula(guarded):
    work, out = guarded
    assert cli(work, out, "method=fastv", "budget=0.5", *FAST).returncode == 0
    [path] = out.glob("tiny_llava/fastv/*/results.json")
    r = json.loads(path.read_text())
    layers, kv_heads, head_dim, fp32 = 12, 4, 96 // 4, 4
    text = r["prompt_tokens_mean"] - 144
    assert r["kv_cache_bytes_full"] == pytest.approx(2 * layers * kv_heads * head_dim * (text + 144) * fp32)
    assert r["kv_cache_bytes"] == pytest.approx(2 * kv_heads * head_dim * fp32 *
                                                sum(text + k for k in r["keep_mean_per_layer"]))


def test_21_psigmoid_alpha_is_searched_within_alpha_range_times_depth_minus_one(tmp_path):
    from vtr_bench.methods import PSigmoid
    from vtr_bench.search.objective import SyntheticObjective

    method = PSigmoid(n_calls=8, n_initial_points=8, alpha_range=[0.9, 1.0])
    method.build(12, 0.5, seed=0, objective=SyntheticObjective([1.0] * 12, tmp_path))
    alphas = [alpha for _, alpha in method.result.params["bo_points"]]
    assert len(alphas) == 8 and all(0.9 * 11 <= a <= 1.0 * 11 for a in alphas)


def test_22_search_samples_with_different_vision_token_counts(tmp_path, monkeypatch):
    from PIL import Image

    from test_models import build_internvl_tiles
    from vtr_bench.reduction.schedule import KeepSchedule
    from vtr_bench.reduction.scoring import LastTokenAttention
    from vtr_bench.search import data as search_data
    from vtr_bench.search.objective import ModelObjective

    adapter = build_internvl_tiles()
    samples = [(Image.new("RGB", (40, 16)), "what color?"), (Image.new("RGB", (16, 16)), "how many?")]
    monkeypatch.setattr(search_data, "load_search_samples", lambda *args: ("search", samples))
    objective = ModelObjective(adapter, LastTokenAttention(-1), "shapes_search", local="shapes",
                               task_cache_dir=tmp_path, cache_dir=tmp_path / "cache", limit=2, metric="exact_match")
    counts = [int(adapter.vision_mask(adapter.prepare([img], [q])["input_ids"]).sum()) for img, q in samples]
    assert len(set(counts)) == 2 and objective.vision_token_counts == sorted(counts)
    schedule = KeepSchedule((1.0,) * 2 + (0.3,) * (len(adapter.decoder_layers) - 2))
    assert objective.key(schedule)["keep"] == {str(n): schedule.counts(n) for n in sorted(counts)}


def test_14_a_killed_wandb_service_is_one_warning(guarded):
    work, out = guarded
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline",
           "HF_HOME": str(out / "hf")}
    proc = subprocess.Popen([sys.executable, "-m", "vtr_bench", f"run.out_dir={out}", "run.show_progress=false"],
                            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = False
    for _ in range(600):  # the W&B service starts after the model has loaded
        found = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "wandb-core"], capture_output=True, text=True)
        if found.stdout.strip():
            time.sleep(3)  # W&B is running and logging
            os.kill(int(found.stdout.split()[0]), signal.SIGKILL)
            killed = True
            break
        time.sleep(0.1)
    _, stderr = proc.communicate(timeout=300)
    assert killed and proc.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
    assert "vtr_bench: W&B logging disabled" in stderr
    assert [p for p in out.glob("tiny_llava/full/*/results.json") if "earlier" not in str(p)]


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs filled up (needs root and mount; skipped where either is missing)."""
    folder = tmp_path / "full"
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:  # full
            pass
        finally:
            os.close(fd)
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_12_a_full_disk_is_one_line(full_disk, tmp_path):
    out = full_disk / "runs"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-m", "vtr_bench", f"run.out_dir={out}", *FAST], capture_output=True,
                            text=True, env=env, cwd=tmp_path, timeout=600)
    assert_one_clear_error(result, "vtr_bench: error: cannot write the ")  # the run dir, or task data under it
    assert "No space left on device" in result.stderr

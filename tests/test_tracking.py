"""results.json helpers and the W&B logger (offline run read back from its .wandb file; failure paths)."""
import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vtr_bench.tracking import (
    NullLogger,
    WandbLogger,
    environment_info,
    is_complete,
    load_results,
    make_logger,
    write_json_atomic,
)

WARNING = "vtr_bench: W&B logging disabled:"


@pytest.fixture(autouse=True)
def wandb_env(tmp_path, monkeypatch):
    """Keep every wandb file and setting inside the test's tmp dir; offline unless a test says otherwise."""
    for var, sub in [("WANDB_DIR", "wandb_dir"), ("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"),
                     ("WANDB_DATA_DIR", "data"), ("WANDB_ARTIFACT_DIR", "artifacts")]:
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)


def read_wandb_file(path: Path) -> dict:
    """Config, summary and run metadata from an offline run's ``.wandb`` file (wandb 0.25 internals)."""
    from wandb.proto import wandb_internal_pb2 as pb
    from wandb.sdk.internal import datastore

    store = datastore.DataStore()
    store.open_for_scan(str(path))
    out = {"config": {}, "summary": {}, "history": []}
    while (data := store.scan_data()) is not None:
        record = pb.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out.update(project=run.project, name=run.display_name, group=run.run_group, tags=list(run.tags))
            out["config"].update({i.key: json.loads(i.value_json) for i in run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "summary":
            out["summary"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in record.summary.update})
        elif kind == "history":
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in record.history.item})
    return out


# results.json


def test_write_json_atomic_converts_scalars(tmp_path):
    path = tmp_path / "sub" / "results.json"
    write_json_atomic(path, {"a": np.float32(0.5), "b": np.int64(3), "c": torch.tensor(2.0), "d": np.arange(3),
                             "e": tmp_path, "f": {"z", "y"}})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": 3, "c": 2.0, "d": [0, 1, 2], "e": str(tmp_path),
                                            "f": ["y", "z"]}
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"status": "complete", "acc": 0.5})
    good = path.read_text()
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json_atomic(path, {"status": "complete", "acc": 0.9, "bad": object()})
    assert path.read_text() == good

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", failing_fsync)  # fails after the temp file holds the new text
    with pytest.raises(OSError, match="disk full"):
        write_json_atomic(path, {"status": "complete", "acc": 0.9})
    assert path.read_text() == good
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temp file left behind


def test_environment_info():
    info = environment_info()
    assert {"python", "platform", "machine", "cpu_count", "packages", "cuda_device", "git_sha",
            "git_dirty"} <= info.keys()
    assert info["packages"]["torch"] == torch.__version__
    assert set(info["packages"]) == {"torch", "transformers", "lmms_eval", "hydra-core", "wandb", "scikit-optimize"}
    assert info["git_sha"] is None or (len(info["git_sha"]) == 40 and isinstance(info["git_dirty"], bool))
    json.dumps(info)


def test_is_complete_and_load_results(tmp_path):
    done, partial, corrupt, listed, missing = (tmp_path / n for n in ("done", "partial", "corrupt", "list", "none"))
    write_json_atomic(done / "results.json", {"status": "complete", "acc": 1.0})
    write_json_atomic(partial / "results.json", {"status": "running"})
    corrupt.mkdir()
    (corrupt / "results.json").write_text('{"status": "complete", "acc": 0.')
    write_json_atomic(listed / "results.json", ["status", "complete"])
    assert is_complete(done) and load_results(done) == {"status": "complete", "acc": 1.0}
    assert not is_complete(partial) and load_results(partial) == {"status": "running"}
    for run_dir in (corrupt, listed, missing):
        assert not is_complete(run_dir) and load_results(run_dir) is None


# W&B


def test_offline_run_reads_back(tmp_path, capsys):
    from PIL import Image

    png = tmp_path / "plot.png"
    Image.new("RGB", (4, 3), (255, 0, 0)).save(png)
    logger = WandbLogger(save_dir=tmp_path / "run", group="sweep-1", tags=("tiny", "fastv"), name="tiny-fastv")
    config = {"model": "tiny", "budget": 0.25, "method": {"K": 2, "R": 0.5}}
    logger.start(config)
    logger.log_metrics({"tflops": 1.5, "flops_ratio": 0.55, "metrics": {"shapes": {"acc": 0.75}}})
    logger.log_table("keep_schedule", ["layer", "ratio"], [[0, 1.0], [1, 0.5]])
    logger.log_image("schedule_plot", png)
    logger.finish()
    logger.finish()

    run_dir = logger.run_dir
    assert run_dir.parent == tmp_path / "run" / "wandb" and run_dir.name.startswith("offline-run-")
    (wandb_file,) = run_dir.glob("run-*.wandb")
    run = read_wandb_file(wandb_file)
    assert (run["project"], run["name"], run["group"], run["tags"]) == ("vtr_bench", "tiny-fastv", "sweep-1",
                                                                        ["tiny", "fastv"])
    assert {k: run["config"][k] for k in config} == config
    assert run["summary"]["tflops"] == 1.5 and run["summary"]["flops_ratio"] == 0.55
    assert run["summary"]["metrics"] == {"shapes": {"acc": 0.75}}
    assert run["history"][0]["metrics/shapes/acc"] == 0.75
    assert run["summary"]["keep_schedule/_type"] == "table-file"
    table = run_dir / "files" / run["summary"]["keep_schedule/path"]
    assert json.loads(table.read_text()) == {"columns": ["layer", "ratio"], "data": [[0, 1.0], [1, 0.5]]}
    assert run["summary"]["schedule_plot/_type"] == "image-file"
    assert (run_dir / "files" / run["summary"]["schedule_plot/path"]).read_bytes() == png.read_bytes()
    assert WARNING not in capsys.readouterr().err


def test_online_unreachable_server_warns_once(tmp_path, monkeypatch, capsys):
    with socket.socket() as s:  # a local port with nothing listening: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef" * 2 + "01234567")
    monkeypatch.delenv("WANDB_MODE")
    logger = make_logger("online", save_dir=tmp_path / "run")
    start = time.perf_counter()
    logger.start({"a": 1})
    logger.log_metrics({"acc": 1.0})
    logger.log_table("t", ["x"], [[1]])
    logger.finish()
    assert time.perf_counter() - start < 30
    assert capsys.readouterr().err.count(WARNING) == 1


def test_init_failure_disables_logging(tmp_path, monkeypatch, capsys):
    import wandb

    def failing_init(**kwargs):
        raise RuntimeError("server said no\nsecond line")

    monkeypatch.setattr(wandb, "init", failing_init)
    logger = WandbLogger(save_dir=tmp_path / "run")
    logger.start({})
    logger.log_metrics({"acc": 1.0})
    logger.log_image("img", tmp_path / "missing.png")
    logger.finish()
    assert capsys.readouterr().err.strip() == f"{WARNING} RuntimeError: server said no"
    assert logger.run_dir is None


def test_log_failure_mid_run_disables_logging(tmp_path, capsys):
    logger = WandbLogger(save_dir=tmp_path / "run")
    logger.start({"a": 1})
    logger.log_image("img", tmp_path / "missing.png")  # wandb raises on a missing file
    logger.log_metrics({"acc": 1.0})
    logger.finish()
    assert capsys.readouterr().err.count(WARNING) == 1
    assert logger.run_dir is not None and list(logger.run_dir.glob("run-*.wandb"))


def test_disabled_and_null_loggers(tmp_path):
    assert isinstance(make_logger("none"), NullLogger) and isinstance(make_logger(None), NullLogger)
    for logger in (make_logger("disabled", save_dir=tmp_path / "run"), NullLogger()):
        logger.start({"a": 1})
        logger.log_metrics({"acc": 1.0})
        logger.log_table("t", ["x"], [[1]])
        logger.log_image("img", tmp_path / "missing.png")
        logger.finish()
        assert logger.run_dir is None
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="mode must be one of"):
        make_logger("upload")

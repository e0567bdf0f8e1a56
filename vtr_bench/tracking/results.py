"""Run results on disk: crash-safe JSON writes, the environment block, and completeness checks."""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import secrets
import subprocess
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"
PACKAGES = ("torch", "transformers", "lmms_eval", "hydra-core", "wandb", "scikit-optimize")


def _to_json(value: Any) -> Any:
    """``json`` fallback for numpy/torch scalars and arrays, paths and sets."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as JSON so that ``path`` is either the old file or the complete new one.

    The JSON is serialised first, written to a temporary file in the same directory, fsynced and moved over
    ``path`` with ``os.replace``; a kill at any point never leaves a half-written file.

    Args:
        path: Destination file; its parent directory is created if needed.
        obj: JSON-serialisable data (numpy/torch scalars and arrays, paths and sets are converted).

    Raises:
        TypeError: If ``obj`` holds something that cannot be serialised (``path`` is left untouched).
    """
    write_text_atomic(path, json.dumps(obj, indent=2, default=_to_json) + "\n")


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) so that ``path`` is either the old file or the complete new one: a temporary file of
    its own in the same directory (concurrent writers never share one), fsynced, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment_info() -> dict:
    """Describe the software and hardware a run used.

    Returns:
        ``python``, ``platform``, ``machine``, ``cpu_count``, ``packages`` (distribution name → version or
        None), ``cuda_device`` (name of CUDA device 0, or None), ``git_sha`` (HEAD of the checkout holding
        vtr_bench, or None outside a git checkout) and ``git_dirty`` (uncommitted changes; None without git).
    """
    cuda_device = None
    try:
        import torch

        if torch.cuda.is_available():
            cuda_device = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    sha = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain") if sha else None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": {name: _version(name) for name in PACKAGES},
        "cuda_device": cuda_device,
        "git_sha": sha,
        "git_dirty": bool(status) if status is not None else None,
    }


def load_results(run_dir: str | Path) -> dict | None:
    """Read a run's ``results.json``.

    Args:
        run_dir: The run's output directory.

    Returns:
        The parsed results, or None when the file is missing, truncated or not a JSON object.
    """
    try:
        data = json.loads((Path(run_dir) / RESULTS_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def is_complete(run_dir: str | Path) -> bool:
    """Whether a run finished: its ``results.json`` parses and says ``"status": "complete"``.

    Args:
        run_dir: The run's output directory.

    Returns:
        True for a finished run (which a sweep may skip).
    """
    results = load_results(run_dir)
    return results is not None and results.get("status") == "complete"

"""What an lmms-eval task reads before any model runs: its YAML chain, its ``!function`` hooks, its local data files
and whether an LLM judge scores it. Checked before the model loads and hashed into run ids, so that an edited task
or dataset never passes for a finished run."""
from __future__ import annotations

import glob
import hashlib
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import yaml

from vtr_bench.errors import ConfigError

_JUDGE_METRIC = re.compile(r"gpt|judge", re.IGNORECASE)
_LOCAL_BUILDERS = ("arrow", "csv", "imagefolder", "json", "pandas", "parquet", "text", "webdataset")
_stamps: dict[tuple, str] = {}


def task_configs(manager, name: str) -> dict[str, tuple[Path, dict]]:
    """``{task: (its YAML file, its config with includes merged, ``!function`` entries not imported)}`` of a task,
    or of each task of a group / tag (python-class tasks have no YAML and are left out)."""
    from lmms_eval import utils

    info = manager.task_index[name]
    if info["type"] == "tag":
        members = info["task"]
    elif info["yaml_path"] == -1 or info["type"] == "python_task":
        return {}
    else:
        config = utils.load_yaml_config(info["yaml_path"], mode="simple")
        if info["type"] != "group":
            return {name: (Path(info["yaml_path"]), config)}
        members = config.get("task", [])
    configs = {}
    for member in members:
        if isinstance(member, str) and member in manager.task_index:
            configs.update(task_configs(manager, member))
    return configs


class _SimpleLoader(yaml.SafeLoader):
    """PyYAML's safe loader reading ``!function module.name`` as its text (no import)."""


_SimpleLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def _read_simple(path: Path) -> dict:
    """A task YAML with its includes merged as lmms-eval merges them (last include first, the file's own keys
    last), read with PyYAML alone."""
    import yaml

    with open(path, "rb") as f:
        raw = yaml.load(f, Loader=_SimpleLoader) or {}
    includes = raw.pop("include", None) if isinstance(raw, dict) else None
    if not includes:
        return raw
    merged: dict = {}
    for include in reversed([includes] if isinstance(includes, str) else list(includes)):
        target = Path(include) if Path(include).is_file() else path.parent / include
        merged.update(_read_simple(target))
    merged.update(raw)
    return merged


def local_task_folder(local: str, cache_dir: str | Path) -> Path:
    """The task folder of a bundled task package (``vtr_bench.tasks.<local>``), materialised under ``cache_dir``.

    Raises:
        ConfigError: unknown package, or ``cache_dir`` cannot be written (one line).
    """
    import importlib

    try:
        package = importlib.import_module(f"vtr_bench.tasks.{local}")
    except ModuleNotFoundError:
        raise ConfigError(f"unknown local task package {local!r} (no vtr_bench.tasks.{local})") from None
    try:
        return Path(package.materialize(Path(cache_dir) / "tasks"))
    except OSError as error:  # an unwritable or full run.cache_dir (by default under run.out_dir)
        raise ConfigError(f"cannot write the bundled task data under run.cache_dir={cache_dir}: "
                          f"{error.strerror or error}") from None


def folder_task_configs(folders: Sequence[str | Path], name: str) -> dict[str, tuple[Path, dict]] | None:
    """``{name: (YAML, config)}`` for a plain task defined in one YAML of ``folders`` (a bundled package, a user's
    task folder), read without importing lmms-eval (seconds per process); None where that would not be exactly
    what lmms-eval reads — not found, defined twice, a group, or local data files given as relative paths (which
    lmms-eval resolves itself) — and the caller asks lmms-eval's TaskManager instead."""
    found = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("*.yaml")):
            try:
                own = _read_simple(path) if name in path.read_text(errors="replace") else {}
            except Exception:  # noqa: BLE001 - a YAML this reader cannot parse: leave it to lmms-eval
                return None
            if isinstance(own, dict) and own.get("task") == name:
                found.append((path, own))
    if len(found) != 1 or "group" in found[0][1]:
        return None
    path, config = found[0]
    files = (config.get("dataset_kwargs") or {}).get("data_files")
    values = files.values() if isinstance(files, dict) else [files]
    flat = [v for value in values for v in ([value] if isinstance(value, str) else list(value or []))]
    if any(not Path(os.path.expanduser(v)).is_absolute() for v in flat):
        return None
    return {name: (path, config)}


def _function_name(value) -> str:
    """The ``module.function`` text of a ``!function`` entry as simple-mode loading leaves it (a YAML node)."""
    return str(getattr(value, "value", value))


def judge_metrics(config: dict) -> list[str]:
    """The metrics of a task config that an LLM judge computes: a metric named for a judge (``gpt_eval_*``,
    ``*judge*``) whose aggregation is not a rule-based one (``..._static``, as ``mmbench_en_dev_static``)."""
    judged = []
    for entry in config.get("metric_list") or []:
        name = str(entry.get("metric", ""))
        if _JUDGE_METRIC.search(name) and "static" not in _function_name(entry.get("aggregation", "")):
            judged.append(name)
    return judged


def judge_url_problem(path: Path, url: str | None) -> str | None:
    """Why ``OPENAI_API_URL=url`` would not reach the judge of the task whose YAML is ``path`` (None: it would, or
    the task's code does not say): lmms-eval 0.7.3 reads the variable two ways — its ``llm_judge`` (MM-Vet,
    LLaVA-Bench) as the API base, appending ``/chat/completions``; MMBench's matcher as the full endpoint."""
    if not url:
        return None
    code = " ".join(p.read_text(errors="replace") for p in _hook_files(_yaml_chain(path)))
    full = url.rstrip("/").endswith("/chat/completions")
    if "llm_judge" in code and full:
        return "its judge (lmms_eval.llm_judge) appends /chat/completions to it: set the API base (.../v1)"
    if "llm_judge" not in code and "OPENAI_API_URL" in code and "/chat/completions" in code and not full:
        return "its judge posts to it as given: set the full endpoint (.../v1/chat/completions)"
    return None


def _yaml_chain(path: Path) -> list[Path]:
    """A task YAML and the YAMLs it includes, recursively (as lmms-eval resolves ``include``)."""
    with open(path, "rb") as f:
        raw = yaml.load(f, Loader=_SimpleLoader) or {}
    includes = raw.get("include", []) if isinstance(raw, dict) else []
    chain = [path]
    for include in [includes] if isinstance(includes, str) else includes:
        target = Path(include) if Path(include).is_file() else path.parent / include
        if target.is_file():
            chain += _yaml_chain(target)
    return chain


def _data_patterns(config: dict) -> list[str]:
    """The local files or folders a task's dataset is read from (none for a hub dataset)."""
    path, kwargs = str(config.get("dataset_path", "")), config.get("dataset_kwargs") or {}
    patterns = []
    if path not in _LOCAL_BUILDERS and (Path(path).exists() or kwargs.get("load_from_disk")
                                        or path.startswith(("/", "./", "../", "~"))):
        patterns.append(os.path.expanduser(path))
    if path in _LOCAL_BUILDERS:
        files = kwargs.get("data_files")
        for value in files.values() if isinstance(files, dict) else [files]:
            patterns += [value] if isinstance(value, str) else list(value or [])
        if kwargs.get("data_dir"):
            patterns.append(str(kwargs["data_dir"]))
    return [str(p) for p in patterns]


def data_files(task: str, config: dict) -> list[Path]:
    """The local data files of a task (folders expanded, globs matched).

    Raises:
        ConfigError: a named file, folder or pattern matches nothing (lmms-eval would retry for seconds and fail
            with a long traceback).
    """
    files = []
    for pattern in _data_patterns(config):
        matches = [Path(m) for m in glob.glob(pattern, recursive=True)] or ([Path(pattern)] if Path(pattern).exists()
                                                                           else [])
        if not matches:
            raise ConfigError(f"task {task}: data file {pattern} does not exist")
        for match in matches:
            files += sorted(p for p in match.rglob("*") if p.is_file() and not p.name.startswith(".")) \
                if match.is_dir() else [match]
    return files


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, memoised per (path, size, mtime) within the process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _stamps:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _stamps[key] = digest.hexdigest()
    return _stamps[key]


def _hook_files(chain: Iterable[Path]) -> list[Path]:
    """The Python files next to a task's YAMLs (where its ``!function`` hooks are imported from)."""
    return sorted({p for yaml_path in chain for p in yaml_path.parent.glob("*.py")})


def tasks_stamp(manager, tasks: Sequence[str], configs=None) -> dict[str, str]:
    """``{task: digest}`` over each task's YAML chain, the Python files beside it and its local data files: a run
    id that contains it changes when any of them is edited (hub datasets are named, with their revision, by the
    YAML itself). Where a YAML names its local data, the path is left out (the data's bytes are hashed), so the
    same task and data in another folder (e.g. another ``run.cache_dir``) give the same digest.

    Args:
        manager: a TaskManager (used for names ``configs`` does not resolve); None if ``configs`` resolves all.
        configs: ``configs(name) -> {task: (YAML, config)} | None`` tried first (:func:`folder_task_configs`).
    """
    stamps = {}
    for name in tasks:
        resolved = configs(name) if configs is not None else None
        for task, (path, config) in (resolved if resolved is not None else task_configs(manager, name)).items():
            chain, patterns = _yaml_chain(path), _data_patterns(config)
            digest = hashlib.sha256()
            for file in chain:
                text = file.read_text(errors="replace")
                for pattern in patterns:
                    text = text.replace(pattern, "<local data>")
                digest.update(f"yaml:{file.name}:{hashlib.sha256(text.encode()).hexdigest()}\n".encode())
            for role, files in (("hooks", _hook_files(chain)), ("data", data_files(task, config))):
                for file in files:
                    digest.update(f"{role}:{file.name}:{file_digest(file)}\n".encode())
            stamps[task] = digest.hexdigest()[:16]
    return dict(sorted(stamps.items()))


def tasks_digest(tasks: Sequence[str], local: str | None, cache_dir: str | Path,
                 include_path: Sequence[str] = ()) -> dict[str, str]:
    """:func:`tasks_stamp` of ``tasks`` as a run finds them (a bundled package, the user's folders, lmms-eval's own
    tasks): tasks defined in a folder are read with PyYAML alone (:func:`folder_task_configs`), the rest through
    lmms-eval's TaskManager (the same digest either way)."""
    folders = [*include_path, *([local_task_folder(local, cache_dir)] if local else [])]
    resolved = {name: folder_task_configs(folders, name) for name in tasks}
    if all(found is not None for found in resolved.values()):
        return tasks_stamp(None, tasks, resolved.get)
    from vtr_bench.eval.evaluate import task_manager  # lmms-eval's own tasks, groups

    return tasks_stamp(task_manager(tasks, local, cache_dir, include_path), tasks)


def check_hooks(task: str, path: Path) -> None:
    """Import a task's ``!function`` hooks as lmms-eval will, so that a typo fails before the model loads.

    Raises:
        ConfigError: a hook's module or function cannot be imported.
    """
    from lmms_eval import utils

    try:
        utils.load_yaml_config(str(path), mode="full")
    except Exception as error:  # noqa: BLE001 - any import failure of the task's own code, in one line
        cause = error.__cause__ or error
        detail = (str(error).splitlines() or [""])[0]
        raise ConfigError(f"task {task} ({path}): a !function hook cannot be imported: {detail}"
                          + (f" ({type(cause).__name__}: {cause})" if cause is not error else "")) from None

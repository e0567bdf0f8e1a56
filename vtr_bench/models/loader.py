"""Load a model adapter from a ``conf/model/*.yaml`` node: bundled tiny checkpoints, random builders, HF repos."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from vtr_bench.errors import ConfigError, ModelLoadError
from vtr_bench.models.base import VLMAdapter

ASSETS = Path(__file__).resolve().parent.parent / "assets"
FAMILIES = ("llava", "llava_next", "internvl", "qwen2_vl", "qwen2_5_vl", "llava_onevision")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CPU_MODELS = {"llava": "tiny_llava", "llava_next": "tiny_llava", "internvl": "tiny_internvl2",
              "qwen2_vl": "tiny_random_qwen2vl", "qwen2_5_vl": "tiny_random_qwen25vl",
              "llava_onevision": "tiny_random_llava_ov"}
"""The bundled model config to use instead of a family's real checkpoints on a machine without GPU or hub."""


def _hub_hint(repo_id: str, family: str) -> str:
    return (f"download it where the hub is reachable (huggingface-cli download {repo_id} --local-dir /local/dir) "
            f"and set model.path=/local/dir, or run with hub.offline=false; on a CPU machine use "
            f"model={CPU_MODELS.get(family, 'tiny_llava')}")


def _local_checkpoint(cfg) -> tuple[Path, bool] | None:
    """``(directory, bundled)`` of a local checkpoint: ``model.path`` first, then the bundled ``model.asset``; None
    for hub and built models."""
    if cfg.get("path"):
        return Path(str(cfg.path)).expanduser(), False
    if cfg.get("asset"):
        return ASSETS / str(cfg.asset), True
    return None


def resolve_checkpoint(cfg) -> str | None:
    """The local directory (or hub id) to load from; raises a one-line ModelLoadError when it is unavailable.

    Order: ``model.path`` (must exist), then ``model.asset`` (bundled in the package), then ``model.repo_id``
    (from the local HF cache when ``HF_HUB_OFFLINE=1``, else from the hub). None means: build from config.
    """
    local = _local_checkpoint(cfg)
    if local is not None:
        path, bundled = local
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"bundled checkpoint {path} is missing; rebuild it with `make tiny-models`" if bundled
                                 else f"model.path {path} has no config.json (missing checkpoint directory)")
        return str(path)
    repo_id = cfg.get("repo_id")
    if not repo_id:
        return None
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(str(repo_id), "config.json", revision=cfg.get("revision"))
        if not isinstance(cached, str):
            raise ModelLoadError(f"{repo_id} is not in the local HF cache and the hub is offline: "
                                 f"{_hub_hint(repo_id, cfg.family)}")
    return str(repo_id)


def local_weights_stamp(cfg) -> str | None:
    """A digest of a local checkpoint's weight files, so that finished runs are not reused after a retrain: the
    bytes of a bundled checkpoint (``model.asset``, a few MB), or the names, sizes and modification times of the
    ``*.safetensors`` / ``*.bin`` files in ``model.path`` (large: not read). None for hub and built models, and for
    a missing directory (loading reports that)."""
    import hashlib

    local = _local_checkpoint(cfg)
    if local is None:
        return None
    folder, read_bytes = local
    files = sorted(f for pattern in ("*.safetensors", "*.bin") for f in folder.glob(pattern))
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        stat = f.stat()
        digest.update(f"{f.name}|{stat.st_size}|".encode())
        digest.update(f.read_bytes() if read_bytes else str(stat.st_mtime_ns).encode())
    return digest.hexdigest()


def native_checkpoint(cfg, source: str) -> str:
    """``source``, or for an OpenGVLab remote-code InternVL2 checkpoint its conversion to the transformers-native
    format (:mod:`vtr_bench.models.internvl2`), made once in ``model.converted_dir`` and reused while its source
    is unchanged."""
    from vtr_bench.models import internvl2

    if cfg.family != "internvl":
        return source
    local = Path(source)
    if not local.is_dir():
        from huggingface_hub import hf_hub_download, snapshot_download

        revision = cfg.get("revision")
        if not internvl2.is_remote_code(Path(hf_hub_download(source, "config.json", revision=revision)).parent):
            return source
        local = Path(snapshot_download(source, revision=revision, allow_patterns=internvl2.SOURCE_FILES))
    if not internvl2.is_remote_code(local):
        return source
    target = cfg.get("converted_dir")
    if not target:
        raise ModelLoadError(
            f"{source} is an OpenGVLab remote-code checkpoint (model_type internvl_chat), which transformers' "
            f"InternVLForConditionalGeneration cannot load: set model.converted_dir=/dir to convert it there once, "
            f"or run python -m vtr_bench.models.internvl2 {source} /dir and set model.path=/dir")
    if internvl2.conversion_source(target) != str(local.resolve()):
        print(f"vtr_bench: converting {source} to the transformers-native InternVL format in {target} (once)",
              file=sys.stderr)
        internvl2.convert_checkpoint(local, target)
    return str(target)


def check_local_files(folder: Path) -> None:
    """One-line errors, naming the file, for a local checkpoint whose ``config.json`` is not a JSON object (or has a
    non-object ``*_config``) or whose safetensors files cannot be opened (truncated, corrupt)."""
    import json

    from safetensors import safe_open

    config = folder / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{config} is not readable JSON: {error}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{config} must hold a JSON object")
    for key, value in data.items():
        if key.endswith("_config") and value is not None and not isinstance(value, dict):
            raise ModelLoadError(f"{config}: {key} must be an object, got {type(value).__name__}")
    for weights in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="pt") as f:
                for name in f.keys():
                    f.get_slice(name)
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error type
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ModelLoadError(f"{weights} is not a readable safetensors file: {first}") from None


def _classes(family: str):
    """(model class, processor class) of a family; InternVL's processor is the one without a video processor."""
    import transformers

    from vtr_bench.models.llava_onevision import VisionOnlyOnevisionProcessor
    from vtr_bench.models.qwen2_vl import VisionOnlyQwen2VLProcessor
    from vtr_bench.models.tiny import TinyInternVLProcessor

    return {
        "llava": (transformers.LlavaForConditionalGeneration, transformers.AutoProcessor),
        "llava_next": (transformers.LlavaNextForConditionalGeneration, transformers.AutoProcessor),
        "internvl": (transformers.InternVLForConditionalGeneration, TinyInternVLProcessor),
        "qwen2_vl": (transformers.Qwen2VLForConditionalGeneration, VisionOnlyQwen2VLProcessor),
        "qwen2_5_vl": (transformers.Qwen2_5_VLForConditionalGeneration, VisionOnlyQwen2VLProcessor),
        "llava_onevision": (transformers.LlavaOnevisionForConditionalGeneration, VisionOnlyOnevisionProcessor),
    }[family]


def adapter_class(family: str) -> type[VLMAdapter]:
    """The adapter of a family: the base one, or the family's own (Qwen2-VL's M-RoPE)."""
    from vtr_bench.models.qwen2_vl import Qwen2VLAdapter

    return Qwen2VLAdapter if family in ("qwen2_vl", "qwen2_5_vl") else VLMAdapter


def _build_random(cfg):
    from vtr_bench.models import tiny, tiny_random

    builders = {"tiny_llava": tiny.build_tiny_llava, "tiny_internvl2": tiny.build_tiny_internvl2,
                "tiny_sparse_llava": tiny.build_tiny_sparse_llava,
                "tiny_qwen2_vl": tiny_random.build_tiny_qwen2_vl,
                "tiny_llava_onevision": tiny_random.build_tiny_llava_onevision}
    if cfg.builder not in builders:
        raise ConfigError(f"unknown model.builder {cfg.builder!r}; known: {sorted(builders)}")
    return builders[cfg.builder](dict(cfg.get("builder_args") or {}), seed=int(cfg.get("seed", 0)))


def load_adapter(cfg, device: str = "cpu") -> VLMAdapter:
    """Load the model described by ``cfg`` (a model config node) and wrap it in an adapter.

    Raises:
        ConfigError: unknown family / dtype / builder.
        ModelLoadError: checkpoint missing or unreachable.
    """
    if cfg.family not in FAMILIES:
        raise ConfigError(f"unknown model family {cfg.family!r}; known: {FAMILIES}")
    if cfg.dtype not in DTYPES:
        raise ConfigError(f"unknown model.dtype {cfg.dtype!r}; known: {sorted(DTYPES)}")
    source = resolve_checkpoint(cfg)
    if source is None:
        model, processor = _build_random(cfg)
    else:
        model_class, processor_class = _classes(cfg.family)
        kwargs = dict(revision=cfg.get("revision"), dtype=DTYPES[cfg.dtype],
                      attn_implementation=cfg.attn_implementation)
        if Path(source).is_dir():
            check_local_files(Path(source))
        try:
            source = native_checkpoint(cfg, source)
            # use_fast=False: the fast image processors need torchvision, which this environment leaves out
            processor = processor_class.from_pretrained(source, revision=cfg.get("revision"), use_fast=False)
            model = model_class.from_pretrained(source, **kwargs)
        except Exception as error:  # noqa: BLE001 - any loading failure is one line naming the checkpoint
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelLoadError(f"could not load {source}: {type(error).__name__}: {first_line}") from error
        processor.tokenizer.padding_side = "left"
    model = model.to(device=device, dtype=DTYPES[cfg.dtype]).eval()
    return adapter_class(cfg.family)(model, processor, prompt_template=cfg.prompt_template, name=cfg.name,
                                     processor_kwargs=dict(cfg.get("processor_kwargs") or {}))

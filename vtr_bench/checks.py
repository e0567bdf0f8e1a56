"""Up-front validation of a composed config: every value a run reads, checked before anything is loaded or written,
each problem one :class:`~vtr_bench.errors.ConfigError` line."""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

from omegaconf import DictConfig

from vtr_bench.errors import ConfigError

LOGGER_MODES = ("none", "offline", "online", "disabled")
ATTENTION = ("sdpa", "eager", "flash_attention_2")
_DEVICE = re.compile(r"(cpu|mps|cuda)(:\d+)?")


def integer(value, what: str, minimum: int | None = None, optional: bool = False) -> int | None:
    """``value`` as an int (a bool, a float or a string is an error), at least ``minimum``; None when ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be an integer{' or null' if optional else ''}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{what} must be >= {minimum}, got {value}")
    return value


def check_device(device) -> str:
    """``cpu``, ``mps``, ``cuda`` or ``cuda:N`` that this machine has."""
    device = str(device)
    match = _DEVICE.fullmatch(device)
    if match is None:
        raise ConfigError(f"run.device must be cpu, cuda, cuda:N or mps, got {device!r}")
    if match.group(1) == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"run.device={device}, but this machine has no CUDA device (use run.device=cpu)")
        index = int(match.group(2)[1:]) if match.group(2) else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"run.device={device}, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    if match.group(1) == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise ConfigError("run.device=mps, but MPS is not available on this machine")
    return device


def check_config(cfg: DictConfig) -> None:
    """Validate the values of a run's config that no method or loader checks itself."""
    integer(cfg.seed, "seed")
    bench, search, flops = cfg.benchmark, cfg.search, cfg.flops
    integer(bench.get("limit"), "benchmark.limit", minimum=1, optional=True)
    integer(bench.get("batch_size", 1), "benchmark.batch_size", minimum=1)
    integer(search.get("limit"), "search.limit", minimum=1, optional=True)
    integer(search.get("batch_size", 1), "search.batch_size", minimum=1)
    if not isinstance(search.get("early_stop", False), bool):
        raise ConfigError(f"search.early_stop must be true or false, got {search.get('early_stop')!r}")
    mib = search.get("prefix_cache_mib", 0)
    if isinstance(mib, bool) or not isinstance(mib, (int, float)) or not mib >= 0:
        raise ConfigError(f"search.prefix_cache_mib must be a number of MiB >= 0 (0: off), got {mib!r}")
    integer(flops.get("vision_tokens"), "flops.vision_tokens", minimum=1, optional=True)
    integer(flops.get("text_tokens", 0), "flops.text_tokens", minimum=0)
    if cfg.logger.mode not in LOGGER_MODES:
        raise ConfigError(f"logger.mode must be one of {LOGGER_MODES}, got {cfg.logger.mode!r}")
    if cfg.run.mode != "flops":
        check_device(cfg.run.device)
        check_attention(cfg.model, str(cfg.run.device))


def check_attention(model: DictConfig, device: str) -> None:
    """``model.attn_implementation`` is one the engine supports, and FlashAttention-2 has what it needs: the
    ``flash-attn`` package, a CUDA device and a half-precision ``model.dtype``."""
    implementation = model.get("attn_implementation", "sdpa")
    if implementation not in ATTENTION:
        raise ConfigError(f"model.attn_implementation must be one of {ATTENTION}, got {implementation!r}")
    if implementation != "flash_attention_2":
        return
    from transformers.utils import is_flash_attn_2_available

    if not is_flash_attn_2_available() or not device.startswith("cuda"):
        raise ConfigError("model.attn_implementation=flash_attention_2 needs the flash-attn package and a CUDA GPU "
                          "(pip install flash-attn --no-build-isolation; run.device=cuda); here use sdpa")
    if model.get("dtype") not in ("bfloat16", "float16"):
        raise ConfigError(f"model.attn_implementation=flash_attention_2 runs in bfloat16 or float16, not "
                          f"model.dtype={model.get('dtype')}")


def check_writable_dir(path, what: str) -> Path:
    """Create ``path`` if needed and make sure a file can be written there (one line naming ``what`` if not)."""
    path = Path(str(path))
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as error:
        raise ConfigError(f"{what} {path} is not a writable folder: {error.strerror or error}") from None
    return path

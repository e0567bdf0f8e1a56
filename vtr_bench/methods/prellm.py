"""The shared shape of the pre-LLM methods: one reduction before the first decoder layer (layer 0's input: the
projected vision tokens among the text embeddings), so every layer processes the kept tokens.

Their official CLIs take the number of vision tokens kept of LLaVA-1.5's 576 (``method.tokens``; published settings
by label, ``method.preset``); vtr_bench resolves it per sample as the ratio ``tokens / 576`` of the sample's own
vision tokens (576 of 576: exactly ``tokens``), and a ``budget`` (mean keep ratio) is that ratio directly. Positions
are renumbered (``positions: renumber``): their LLaVA code hands the LLM a plain shorter sequence.
"""
from __future__ import annotations

from vtr_bench.errors import ConfigError
from vtr_bench.methods.base import Method
from vtr_bench.methods.stages import check_rounding
from vtr_bench.reduction.schedule import KeepSchedule

REFERENCE_TOKENS = 576
"""LLaVA-1.5's vision tokens per image, which the official token counts refer to."""


class PreLLMMethod(Method):
    """A reduction at layer 0's input, keeping ``tokens`` of 576 (or ``budget``) per image.

    Subclasses set ``name``, ``PRESETS`` (label -> tokens kept of 576), ``DEFAULT_TOKENS`` and :meth:`scorer`.

    Args:
        tokens: vision tokens kept of a 576-token image (the official CLIs' argument); None: the default.
        preset: a published setting by label (``PRESETS``).
        rounding: ``half_up`` (default) or ``floor`` for the per-sample count.
    """

    stage = "pre-LLM"
    attention = "none"
    PRESETS: dict[str, int] = {}
    DEFAULT_TOKENS = 64

    def __init__(self, tokens: int | None = None, preset=None, rounding: str = "half_up") -> None:
        if preset is not None:
            if str(preset) not in self.PRESETS:
                raise ConfigError(f"method.preset must be one of {sorted(self.PRESETS)}, got {preset!r}")
            if tokens is not None:
                raise ConfigError("give either method.preset or method.tokens, not both")
            tokens = self.PRESETS[str(preset)]
        if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int)
                                   or not 0 < tokens <= REFERENCE_TOKENS):
            raise ConfigError(f"method.tokens must be an integer in 1..{REFERENCE_TOKENS}, got {tokens!r}")
        self.tokens = tokens
        self.preset = None if preset is None else str(preset)
        self.rounding = check_rounding(rounding)

    def keep_ratio(self, budget: float | None) -> float:
        """The share of each sample's vision tokens kept."""
        if budget is not None:
            if self.tokens is not None:
                raise ConfigError("give either budget or method.tokens / method.preset, not both")
            return budget
        return (self.tokens if self.tokens is not None else self.DEFAULT_TOKENS) / REFERENCE_TOKENS

    def schedule(self, layers: int, budget: float | None) -> KeepSchedule:
        return KeepSchedule((self.keep_ratio(budget),) * layers, self.rounding)

    def label(self, budget: float | None) -> str | None:
        if budget is not None:
            return None
        tokens = self.tokens if self.tokens is not None else self.DEFAULT_TOKENS
        return f"{self.title} {tokens} tokens"

    @property
    def title(self) -> str:
        return type(self).__name__

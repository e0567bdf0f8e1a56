"""Errors that the CLI reports as one clear line (and a non-zero exit) instead of a traceback."""


class VtrError(Exception):
    """Base class of every user-facing vtr_bench error."""


class ConfigError(VtrError):
    """A configuration value is invalid (unknown model/method, bad budget, malformed schedule...)."""


class InfeasibleBudgetError(ConfigError):
    """A method cannot reach the requested budget (e.g. FastV below k/L); sweeps record it and go on."""


class ScheduleError(ConfigError):
    """A keep schedule is malformed: ratios outside [0, 1], increasing with depth, wrong length."""


class ModelLoadError(VtrError):
    """A checkpoint cannot be loaded (missing weights, hub unreachable)."""


class EvaluationError(VtrError):
    """Evaluation failed (a sample could not be generated, a task could not be loaded)."""

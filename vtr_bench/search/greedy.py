"""G-Search: the greedy shallow-to-deep search of the fewest vision tokens per layer (paper, DESIGN §1.3).

The full model's search accuracy is the reference. Layers before ``start_layer`` keep every token (the paper
found layer-1 rankings unstable). For layer ``l = start_layer .. L-1`` in turn, layers ``l..L-1`` are set to one
candidate keep ratio from the grid (only ratios below layer ``l-1``'s, so the schedule stays non-increasing);
assuming accuracy does not decrease with the ratio (the monotone assumption), a binary search finds the smallest
candidate whose accuracy is at least ``reference - tolerance``; it is fixed and the search moves to ``l+1``. If no
candidate passes, layer ``l`` keeps layer ``l-1``'s ratio (which is known to pass).

Two pass criteria (``criterion``): ``mean`` (the paper's) compares the two search-split means; ``paired``
(noise-aware) passes a candidate when the one-sided paired-bootstrap lower bound of ``mean(candidate − full)`` over
the search samples (confidence ``confidence``) is at least ``−tolerance``, so a drop that is only luck of the
draw fails; it needs an objective with per-sample scores (``objective.scores(schedule)``).

With the mean criterion the search asks the objective "is the accuracy at least ``reference - tolerance``?"
(``objective.decide``), so an objective that stops early (``search.early_stop``) evaluates a candidate only until
its answers decide that; the paired criterion needs every sample's score and always evaluates in full.

Cost: one reference evaluation plus at most ``ceil(log2(c + 1))`` per layer, where ``c`` is the number of grid
ratios below the previous layer's (``|G| - 1`` when the grid holds 1.0): at most ``(L-2)·ceil(log2|G|) + L``.
"""
from __future__ import annotations

from collections.abc import Sequence

from vtr_bench.errors import ConfigError
from vtr_bench.eval.stats import DEFAULT_RESAMPLES, lower_bound
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.search.result import Objective, Recorder, SearchResult

_EPS = 1e-12  # accuracies are means of 0/1 scores: compare with a hair of slack against float error


def check_grid(grid: Sequence[float]) -> tuple[float, ...]:
    """The candidate keep ratios, sorted and de-duplicated; each must be in [0, 1].

    Raises:
        ConfigError: an empty grid or a ratio outside [0, 1].
    """
    ratios = sorted({float(r) for r in grid})
    if not ratios or not all(0 <= r <= 1 for r in ratios):
        raise ConfigError(f"method.grid must be a non-empty list of keep ratios in [0, 1], got {list(grid)}")
    return tuple(ratios)


CRITERIA = ("mean", "paired")


def greedy_search(objective: Objective, layers: int, grid: Sequence[float], tolerance: float,
                  start_layer: int = 2, criterion: str = "mean", confidence: float = 0.95,
                  resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> SearchResult:
    """Run G-Search.

    Args:
        objective: search-split accuracy of a schedule.
        layers: number of decoder layers.
        grid: candidate keep ratios.
        tolerance: accepted accuracy drop below the full model's (absolute, e.g. 0.01 = one point).
        start_layer: first layer that may drop tokens.
        criterion: ``mean`` or ``paired`` (see the module docstring).
        confidence, resamples, seed: of the paired criterion's one-sided bootstrap bound.

    Returns:
        The schedule found, its accuracy, the reference accuracy and every objective call.

    Raises:
        ConfigError: a bad grid, a negative tolerance, ``start_layer`` outside ``[0, layers)``, an unknown
            criterion, or ``paired`` on an objective without per-sample scores.
    """
    candidates = check_grid(grid)
    if criterion not in CRITERIA:
        raise ConfigError(f"method.criterion must be one of {CRITERIA}, got {criterion!r}")
    if tolerance < 0:
        raise ConfigError(f"method.tolerance must be >= 0, got {tolerance}")
    if not 0 <= start_layer < layers:
        raise ConfigError(f"method.start_layer must be in [0, {layers}) for a {layers}-layer decoder, "
                          f"got {start_layer}")
    recorder = Recorder(objective)
    reference = recorder(KeepSchedule.full(layers))
    threshold = reference - tolerance - _EPS
    bounds: list[dict] = []
    if criterion == "paired":
        reference_scores = _scores(objective, KeepSchedule.full(layers))

    def trial(schedule: KeepSchedule) -> tuple[bool, float | None]:
        if criterion == "mean":  # an objective that stops early may decide without the accuracy
            return recorder.decide(schedule, threshold)
        accuracy = recorder(schedule)
        diffs = [a - b for a, b in zip(_scores(objective, schedule), reference_scores, strict=True)]
        bound = lower_bound(diffs, resamples, seed, confidence)
        bounds.append({"ratios": list(schedule.ratios), "accuracy": accuracy, "lower_bound": bound})
        return bound >= -tolerance - _EPS, accuracy
    ratios, accuracy = [1.0] * layers, reference
    for layer in range(start_layer, layers):
        previous = ratios[layer - 1] if layer else 1.0
        below = [c for c in candidates if c < previous]
        lo, hi, passed = 0, len(below), {}
        while lo < hi:  # smallest index whose schedule passes; len(below) = keep the previous ratio
            mid = (lo + hi) // 2
            schedule = KeepSchedule(tuple(ratios[:layer]) + (below[mid],) * (layers - layer))
            ok, value = trial(schedule)
            if ok:
                hi, passed[mid] = mid, value
            else:
                lo = mid + 1
        if hi < len(below):
            ratios[layer:] = [below[hi]] * (layers - layer)
            accuracy = passed[hi]
    if accuracy is None:  # the schedule found passed early: its accuracy is computed now (one more evaluation)
        accuracy = recorder(KeepSchedule(tuple(ratios)))
    params = {"tolerance": tolerance, "grid": list(candidates), "start_layer": start_layer, "criterion": criterion}
    if criterion == "paired":
        params.update(confidence=confidence, resamples=int(resamples), bootstrap_seed=int(seed), bounds=bounds)
    return SearchResult(KeepSchedule(tuple(ratios)), accuracy, reference, recorder.history, params=params,
                        tag=f"tol{tolerance:g}" + ("-paired" if criterion == "paired" else ""))


def _scores(objective, schedule: KeepSchedule) -> list[float]:
    """The objective's per-sample scores of ``schedule`` (evaluated already: read from its cache)."""
    scores = getattr(objective, "scores", None)
    values = scores(schedule) if scores is not None else None
    if not values:
        raise ConfigError("method.criterion=paired needs per-sample scores of the search metric, which this "
                          "objective does not give (use criterion=mean)")
    return values

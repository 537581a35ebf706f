"""What a study's searcher optimises (`--objective`): accuracy alone (the study's), accuracy per
kilojoule (one number, energy-aware), or the accuracy / energy front (two objectives); the
ParEGO scalarisation a single-objective model searches a front with; and the front itself.
Pure numpy and pandas: no Ray."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

ACCURACY, PER_KJ, PARETO = "accuracy", "accuracy-per-kj", "pareto"
METRIC, MODE = "accuracy", "max"  # what the schedulers and the stopping levers watch
PER_KJ_KEY = "accuracy_per_kj"  # what with_energy(per_kj="accuracy") reports
RHO = 0.05  # ParEGO's weight of the sum beside the maximum (Knowles 2006)


def searcher_metric(objective: str, energy: str) -> tuple[str | list[str], str | list[str]]:
    """(metric, mode) for a study's searcher: one key and "max", or for `pareto` two keys
    (accuracy to maximise, `energy` to minimise), which Ray's searchers take as lists."""
    if objective == ACCURACY:
        return ACCURACY, "max"
    if objective == PER_KJ:
        return PER_KJ_KEY, "max"
    if objective == PARETO:
        return [ACCURACY, energy], ["max", "min"]
    raise ValueError(f"unknown objective {objective!r}: use accuracy, accuracy-per-kj or pareto")


def parego_targets(gains: np.ndarray, weights: np.ndarray, rho: float = RHO) -> np.ndarray:
    """ParEGO's augmented Tchebycheff scalarisation, as a target to maximise.

    Args:
        gains: (n, k) observations, each objective oriented so that larger is better.
        weights: (k,) non-negative weights summing to 1 (one random draw per suggestion).

    Each objective is scaled to [0, 1] over the observations and turned into a cost
    c = 1 - scaled; the target is -(max_j w_j c_j + rho sum_j w_j c_j), so the best points
    for these weights score highest and every point of the front is the best for some weights.
    """
    gains = np.asarray(gains, dtype=float)
    low, high = gains.min(axis=0), gains.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    costs = 1.0 - (gains - low) / span
    weighted = costs * np.asarray(weights, dtype=float)
    return -(weighted.max(axis=1) + rho * weighted.sum(axis=1))


def random_weights(rng: np.random.RandomState, k: int) -> np.ndarray:
    """A weight vector drawn uniformly from the simplex (ParEGO draws one per iteration)."""
    return rng.dirichlet(np.ones(k))


def non_dominated(values: np.ndarray) -> np.ndarray:
    """A boolean mask of the rows of `values` (larger is better in every column) that no other
    row dominates (at least as good in every column, better in one). Equal rows all stay."""
    values = np.asarray(values, dtype=float)
    keep = np.ones(len(values), dtype=bool)
    for i, point in enumerate(values):
        better_or_equal = (values >= point).all(axis=1)
        strictly = (values > point).any(axis=1)
        keep[i] = not (better_or_equal & strictly).any()
    return keep


def front(trials: pd.DataFrame, energy: str, accuracy: str = ACCURACY) -> pd.DataFrame:
    """The trials on the accuracy / energy front (higher accuracy, lower energy), by energy;
    rows without both numbers are left out."""
    both = trials.assign(
        _a=pd.to_numeric(trials[accuracy], errors="coerce"), _e=pd.to_numeric(trials[energy], errors="coerce")
    ).dropna(subset=["_a", "_e"])
    if both.empty:
        return both.drop(columns=["_a", "_e"])
    mask = non_dominated(np.column_stack([both["_a"], -both["_e"]]))
    return both[mask].sort_values(["_e", "_a"]).drop(columns=["_a", "_e"])


def hypervolume(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """The area a front of (accuracy, energy) points dominates up to `reference` (an accuracy
    below every point's, an energy above every point's): larger is a better front."""
    ref_a, ref_e = reference
    kept = sorted((a, e) for a, e in points if a > ref_a and e < ref_e)  # by accuracy, ascending
    area, best_e = 0.0, ref_e
    # Sweep from the most accurate down: each point adds the strip its energy improves on.
    for a, e in reversed(kept):
        if e < best_e:
            area += (a - ref_a) * (best_e - e)
            best_e = e
    return area

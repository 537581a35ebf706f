"""Fronts of several objectives, larger is better in each: which points are non-dominated, and
the area a two-objective front dominates. Pure numpy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def non_dominated(values: np.ndarray) -> np.ndarray:
    """A boolean mask of the rows of `values` (larger is better in every column) that no other
    row dominates (at least as good in every column, better in one). Equal rows all stay."""
    values = np.asarray(values, dtype=float)
    if not len(values):
        return np.zeros(0, dtype=bool)
    better_or_equal = (values[None, :, :] >= values[:, None, :]).all(axis=2)  # [i, j]: j >= i
    strictly = (values[None, :, :] > values[:, None, :]).any(axis=2)
    return ~(better_or_equal & strictly).any(axis=1)


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

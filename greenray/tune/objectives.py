"""What a study's searcher optimises (`--objective`): accuracy alone (the study's), accuracy per
kilojoule (one number, energy-aware), the accuracy / energy front (two objectives), or the least
energy at an accuracy of at least --target-accuracy (min-energy, constrained); and the front of a
study's trials. Pure numpy and pandas: no Ray."""

from __future__ import annotations

import numpy as np
import pandas as pd

from greenray.optim.pareto import hypervolume, non_dominated

__all__ = ["hypervolume", "non_dominated"]  # the front's arithmetic lives in greenray.optim.pareto

ACCURACY, PER_KJ, PARETO, MIN_ENERGY = "accuracy", "accuracy-per-kj", "pareto", "min-energy"
METRIC, MODE = "accuracy", "max"  # what the schedulers and the stopping levers watch
PER_KJ_KEY = "accuracy_per_kj"  # what with_energy(per_kj="accuracy") reports


def searcher_metric(objective: str, energy: str) -> tuple[str | list[str], str | list[str]]:
    """(metric, mode) for a study's searcher: one key and "max", or two keys, which Ray's
    searchers take as lists: for `pareto` accuracy to maximise and `energy` to minimise, for
    `min-energy` `energy` to minimise and accuracy, the constraint (searcher_options)."""
    if objective == ACCURACY:
        return ACCURACY, "max"
    if objective == PER_KJ:
        return PER_KJ_KEY, "max"
    if objective == PARETO:
        return [ACCURACY, energy], ["max", "min"]
    if objective == MIN_ENERGY:
        return [energy, ACCURACY], ["min", "max"]
    raise ValueError(f"unknown objective {objective!r}: use accuracy, accuracy-per-kj, pareto or min-energy")


def searcher_options(objective: str, strategy: str, target_accuracy: float | None) -> dict:
    """What a study's searcher takes beside metric and mode: for min-energy under bayes, the
    accuracy it must reach (grid and random do not read results)."""
    if objective == MIN_ENERGY and strategy == "bayes":
        return {"threshold": target_accuracy}
    return {}


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

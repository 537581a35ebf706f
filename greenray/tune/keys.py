"""What a study's trial config carries beside its hyperparameters (its round; Ray's Repeater adds
the repetition), a trial's seed from its place, and how a trial fails with what it spent."""

from __future__ import annotations

import numpy as np
from ray.tune.search.repeater import TRIAL_INDEX as REPETITION_KEY

ROUND_KEY = "__round__"
# Labels a searcher may put in a trial config beside its hyperparameters (greenray mutate names
# each configuration); rows carry them as columns without the underscores.
LABEL_KEYS = ("__mutation__", "__mutated__", "__step__")

__all__ = [
    "LABEL_KEYS",
    "REPETITION_KEY",
    "ROUND_KEY",
    "TrialFailed",
    "hyperparameters",
    "labels",
    "slot",
    "trial_seed",
]


class TrialFailed(RuntimeError):
    """A trial that cannot go on (NaN loss, out of GPU memory). `row` holds what it measured
    before failing (energy columns, epochs done), so the failure is recorded with its cost."""

    def __init__(self, message: str, row: dict | None = None) -> None:
        super().__init__(message)
        self.row = row or {}

    def __reduce__(self):  # Ray pickles the error to the driver: keep the row and attributes
        return (type(self), (str(self), self.row), self.__dict__)


def trial_seed(study_seed: int, round_: int, repetition: int) -> int:
    """A seed for torch from (study seed, round, repetition): the same trial trains the same."""
    return int(np.random.SeedSequence([study_seed, round_, repetition]).generate_state(1)[0])


def slot(config: dict) -> tuple[int, int]:
    """(round, repetition): a trial's place in the study's budget."""
    return int(config.get(ROUND_KEY, 0)), int(config.get(REPETITION_KEY, 0))


def hyperparameters(config: dict) -> dict:
    """A trial config without the keys the study adds."""
    return {k: v for k, v in config.items() if not k.startswith("__")}


def labels(config: dict) -> dict:
    """The labels (LABEL_KEYS) in a trial config, named without their underscores."""
    return {k.strip("_"): config[k] for k in LABEL_KEYS if k in config}

"""A study resumed in a fresh Tune experiment (its Tune state unusable: greenray.tune.tunestate)
goes on from greenray's stored rows: its searcher starts again with the study's seed and
proposes its configurations in the same order, and a trial whose slot (round, repetition)
already has a row, trained with the same hyperparameters, reports that row at once instead of
training again. So the searcher hears of every stored trial as it first did, no trial is trained
twice, and no row is written twice (TrialRecorder keeps one row per slot)."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable

import pandas as pd

from greenray.results import ENERGY_COLUMNS, FAILED
from greenray.results.schema import RESULT_COLUMNS
from greenray.tune.keys import TrialFailed, hyperparameters, slot
from greenray.tune.objectives import PER_KJ_KEY
from greenray.tune.space import trained_with


def stored_slots(rows: pd.DataFrame) -> dict[tuple[int, int], dict]:
    """The stored rows by slot, with plain values (NaN as None): what a replay reports."""
    slots = {}
    for row in rows.to_dict("records"):
        plain = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        slots[(int(row["round"]), int(row["repetition"]))] = plain
    return slots


def replaying(trainable: Callable, slots: dict[tuple[int, int], dict]) -> Callable:
    """`trainable` (a Tune function trainable) that reports a stored row instead of training
    where the trial's slot has one for the same hyperparameters."""

    @functools.wraps(trainable)
    def trial(config):
        row = slots.get(slot(config))
        if row is None or row.get("config") != json.dumps(
            trained_with(hyperparameters(config)), sort_keys=True
        ):
            return trainable(config)
        if row.get("status") == FAILED:
            raise TrialFailed(f"stored as failed: {row.get('error')}", row={})
        from ray import tune

        tune.report(stored_result(row))
        return None

    return trial


def stored_result(row: dict) -> dict:
    """The last result a stored trial reported, as its row keeps it: the metrics a searcher,
    the stoppers and the row writer read (accuracy, energy, epochs done of epochs)."""
    result = {k: row.get(k) for k in (*RESULT_COLUMNS, *ENERGY_COLUMNS) if row.get(k) is not None}
    result["epochs"] = row.get("epochs")
    joules = row.get("idle_free_energy_j")
    joules = row.get("energy_j") if joules is None else joules
    accuracy = row.get("accuracy")
    if isinstance(accuracy, int | float) and isinstance(joules, int | float) and joules > 0:
        result[PER_KJ_KEY] = float(accuracy) / (joules / 1000.0)
    return result

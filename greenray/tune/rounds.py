"""Rounds x repetitions on Ray Tune: each configuration a searcher proposes is trained several
times, and the searcher hears of a round once, with the mean of the repetitions that finished."""

from __future__ import annotations

import math

import numpy as np
from ray.tune.search import Repeater, Searcher
from ray.tune.search.repeater import TRIAL_INDEX

from greenray.tune.keys import ROUND_KEY


class RoundRepeater(Repeater):
    """Ray's Repeater (each configuration `repeat` times, `__trial_index__` = repetition) that
    also numbers rounds (`__round__`), and hands its searcher the mean of the repetitions that
    finished, or an error where none did (Repeater would pass on a NaN mean, which a Gaussian
    process cannot take). With `sequential`, a round starts only once the one before has
    ended, so a searcher that learns (bayes) has heard of every round before it proposes the
    next, as in the study; the repetitions of a round still run side by side."""

    def __init__(self, searcher: Searcher, repeat: int, sequential: bool = False) -> None:
        super().__init__(searcher, repeat=repeat, set_index=True)
        self.sequential = sequential
        self.rounds_started = 0

    def suggest(self, trial_id: str) -> dict | str | None:
        group = self._current_group
        if self.sequential and group is not None and group.full() and not group.finished_reporting():
            return None  # Tune asks again later
        config = super().suggest(trial_id)
        if isinstance(config, dict):  # not None (nothing now) nor Searcher.FINISHED
            if config[TRIAL_INDEX] == 0:
                self.rounds_started += 1
            config[ROUND_KEY] = self.rounds_started - 1
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False, **kwargs):
        group = self._trial_id_to_group[trial_id]
        score = (result or {}).get(self.searcher.metric)
        finite = isinstance(score, int | float) and math.isfinite(score) and not error
        group.report(trial_id, float(score) if finite else math.nan)
        if group.finished_reporting():
            scores = [s for s in group.scores() if math.isfinite(s)]
            if scores:
                self.searcher.on_trial_complete(
                    group.primary_trial_id, result={self.searcher.metric: float(np.mean(scores))}
                )
            else:
                self.searcher.on_trial_complete(group.primary_trial_id, result=None, error=True)

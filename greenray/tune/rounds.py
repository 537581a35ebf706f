"""Rounds x repetitions on Ray Tune: each configuration a searcher proposes is trained several
times, and the searcher hears of a round once, with the mean of the repetitions that finished."""

from __future__ import annotations

import numpy as np
from ray.tune.search import Repeater, Searcher
from ray.tune.search.repeater import TRIAL_INDEX

from greenray.tune.keys import ROUND_KEY
from greenray.tune.ledger import number, ran_to_end


def metric_names(metric: str | list[str] | None) -> list[str]:
    """A searcher's metric as a list (a multi-objective searcher has several)."""
    if metric is None:
        return []
    return list(metric) if isinstance(metric, list | tuple) else [metric]


class RoundRepeater(Repeater):
    """Ray's Repeater (each configuration `repeat` times, `__trial_index__` = repetition) that
    also numbers rounds (`__round__`), and hands its searcher the mean of the repetitions that
    ran to the end (each of its metrics: a multi-objective searcher has several), or an error
    where none did (Repeater would pass on a NaN mean, which a Gaussian process cannot take).

    A round whose repetitions a scheduler all stopped early is, with `partial`, handed on with
    the mean of their last results (for an accuracy, what the configuration had reached when it
    was judged worse than others: a lower bound, from which a learning searcher still learns
    that the region is poor), else as an error. Leave `partial` off where a metric flatters an
    early stop (energy, accuracy per kJ: fewer epochs cost less).

    With `sequential`, a round starts only once the one before has ended, so a searcher that
    learns (bayes) has heard of every round before it proposes the next, as in the study; the
    repetitions of a round still run side by side."""

    def __init__(
        self, searcher: Searcher, repeat: int, sequential: bool = False, partial: bool = False
    ) -> None:
        super().__init__(searcher, repeat=repeat, set_index=True)
        self.sequential = sequential
        self.partial = partial
        self.rounds_started = 0
        self._finished: dict[str, list[dict[str, float]]] = {}  # round's first trial -> metrics
        self._stopped: dict[str, list[dict[str, float]]] = {}  # the same, of early-stopped ones

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
        names = metric_names(self.searcher.metric)
        values = {name: number((result or {}).get(name)) for name in names}
        usable = not error and all(v is not None for v in values.values())
        counts = usable and ran_to_end(result)
        # (absent in a state saved before they existed)
        finished = self.__dict__.setdefault("_finished", {})
        stopped = self.__dict__.setdefault("_stopped", {})
        kept = finished.setdefault(group.primary_trial_id, [])
        early = stopped.setdefault(group.primary_trial_id, [])
        if counts:
            kept.append(values)
        elif usable:
            early.append(values)
        group.report(trial_id, values[names[0]] if counts else np.nan)
        if not group.finished_reporting():
            return
        finished.pop(group.primary_trial_id, None)
        stopped.pop(group.primary_trial_id, None)
        if not kept and early and getattr(self, "partial", False):
            kept = early
        if kept:
            means = {name: float(np.mean([v[name] for v in kept])) for name in names}
            self.searcher.on_trial_complete(group.primary_trial_id, result=means)
        else:
            self.searcher.on_trial_complete(group.primary_trial_id, result=None, error=True)

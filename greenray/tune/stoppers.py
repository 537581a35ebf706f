"""Green levers as Ray Tune stoppers, for any Tuner whose trials report `energy_j` (any
`with_energy` trainable does) and an accuracy: stop the experiment once the trials together
have spent an energy budget, once a round reaches a target accuracy, or once the best round
has not improved for some rounds.

Each is a `ray.tune.Stopper` (give it, or several in Ray's own `CombinedStopper`, as
`RunConfig(stop=...)`) and a `ray.tune.Callback` (give the same object in
`RunConfig(callbacks=[...])`): the callback side hears of trials that fail or that a scheduler
stops, which a stopper alone never does, and counts the trials of a run restored with
`Tuner.restore`. Ray's own stoppers act on one trial's results (a dict `stop`, a plateau of one
trial) or on a plateau of the top trials; none counts energy across trials or knows rounds of
repeated trainings, so these are written here.

Rounds are those of greenray's RoundRepeater (`__round__` in the trial config); without it,
every trial is a round of its own. A round's accuracy is the mean of its repetitions that ran
to the end (greenray.tune.ledger.ran_to_end), as the study's searcher hears it.

Example:
    >>> from ray import tune
    >>> from ray.tune.stopper import CombinedStopper
    >>> from greenray.tune import EnergyBudgetStopper, PatienceStopper
    >>> levers = [EnergyBudgetStopper(50_000), PatienceStopper(patience=8)]
    >>> run_config = tune.RunConfig(stop=CombinedStopper(*levers), callbacks=levers)
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

from ray.tune import Callback
from ray.tune.stopper import Stopper

from greenray.tune.keys import ROUND_KEY
from greenray.tune.ledger import RoundBook, number, ran_to_end, target_reached

log = logging.getLogger("greenray.tune")

FINISHED = ("TERMINATED", "ERROR")  # Tune's statuses of trials that will not run again


def _failure_energy(trial, metric: str) -> float | None:
    """What a failed with_energy trial spent until it failed (carried on its error)."""
    from greenray.tune.callbacks import trial_error

    exc = trial_error(trial)
    cause = getattr(exc, "cause", None) or exc
    return number((getattr(cause, "greenray_energy", None) or {}).get(metric))


class EnergyBudgetStopper(Stopper, Callback):
    """Stops the experiment once the trials together have spent `budget_j` Joules.

    The sum counts every trial's latest report of `metric`, the running ones included, and
    failed trials with what they spent until they failed (heard as a callback). Once the
    budget is reached every trial still running is stopped (Tune marks it TERMINATED and keeps
    its last result, so what it spent stays recorded) and no new trial starts. The sum may
    therefore pass the budget by at most what the trials running at that moment had spent.

    Args:
        budget_j: the budget, Joules (> 0).
        metric: the reported energy to sum: `energy_j` (idle included: what the devices drew
            during the trials) or `idle_free_energy_j`.
    """

    def __init__(self, budget_j: float, metric: str = "energy_j") -> None:
        if number(budget_j) is None or budget_j <= 0:
            raise ValueError(f"budget_j must be a positive number of Joules, not {budget_j!r}")
        self.budget_j = float(budget_j)
        self.metric = metric
        self._spent: dict[str, float] = {}  # trial id -> Joules at its latest report
        self._seeded = False

    @property
    def spent_j(self) -> float:
        """Joules spent so far by the trials this stopper has heard of."""
        return sum(self._spent.values())

    def __call__(self, trial_id: str, result: dict) -> bool:
        joules = number(result.get(self.metric))
        if joules is not None:
            self._spent[trial_id] = joules  # since the trial started: its latest report is its total
        return self.stop_all()

    def stop_all(self) -> bool:
        return self.spent_j >= self.budget_j

    def on_step_begin(self, iteration, trials, **info) -> None:
        if self._seeded:
            return
        self._seeded = True  # a restored run: what its finished trials spent counts too
        for trial in trials:
            joules = number((trial.last_result or {}).get(self.metric))
            if trial.status in FINISHED and joules is not None:
                self._spent.setdefault(trial.trial_id, joules)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        spent = _failure_energy(trial, self.metric)
        if spent is not None:
            self._spent[trial.trial_id] = max(spent, self._spent.get(trial.trial_id, 0.0))


class _RoundStopper(Stopper, Callback):
    """What the round levers share: a RoundBook fed by the trials as they end (complete,
    stopped by a scheduler, or failed), and the experiment stopped once `_reached()`."""

    def __init__(self, metric: str, mode: str, repetitions: int) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
        if repetitions < 1:
            raise ValueError("repetitions must be at least 1")
        self.metric, self.mode, self.repetitions = metric, mode, repetitions
        self.book = RoundBook(repetitions, mode)
        self._ended: set[str] = set()
        self._stop = False
        self._heard = False  # the callback side was registered (Tune calls setup)

    def setup(self, **info) -> None:
        self._heard = True

    def __call__(self, trial_id: str, result: dict) -> bool:
        if not self._heard:
            raise ValueError(
                f"{type(self).__name__} must also be in RunConfig(callbacks=[...]): it learns of the "
                "trials that end from there"
            )
        return self._stop  # once reached, every trial that reports again stops too

    def stop_all(self) -> bool:
        return self._stop

    def on_step_begin(self, iteration, trials, **info) -> None:
        if not self._ended:  # a restored run: the trials that ended before count, in order
            for trial in trials:
                if trial.status in FINISHED:
                    failed = trial.status == "ERROR"
                    self._end(trial, None if failed else trial.last_result)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._end(trial, trial.last_result)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._end(trial, None)

    def _end(self, trial, result: dict | None) -> None:
        if trial.trial_id in self._ended:
            return
        self._ended.add(trial.trial_id)
        value = result.get(self.metric) if ran_to_end(result) else None
        config = trial.config or {}
        # Trials without rounds (no RoundRepeater) are each a round of their own.
        key: Hashable = config.get(ROUND_KEY, trial.trial_id)
        repetitions = self.repetitions if ROUND_KEY in config else 1
        if self.book.end_trial(key, value, repetitions) is not None and not self._stop and self._reached():
            self._stop = True
            log.info("%s: %s", type(self).__name__, self.reason())

    def _reached(self) -> bool:
        raise NotImplementedError

    def reason(self) -> str:
        raise NotImplementedError


class PatienceStopper(_RoundStopper):
    """Stops the experiment once `patience` rounds in a row have ended without a round better
    than the best so far (rounds whose repetitions all failed or were stopped early count as
    rounds without improvement).

    Args:
        patience: rounds without improvement (>= 1).
        metric, mode: the reported key and its direction ("max" for accuracy).
        repetitions: trials per round (greenray's RoundRepeater `repeat`).
    """

    def __init__(self, patience: int, metric: str = "accuracy", mode: str = "max", repetitions: int = 1):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be a whole number of rounds of at least 1, not {patience!r}")
        super().__init__(metric, mode, repetitions)
        self.patience = patience

    def _reached(self) -> bool:
        return self.book.rounds_since_best >= self.patience

    def reason(self) -> str:
        return f"{self.patience} rounds without a better round than {self.book.best}"


class TargetAccuracyStopper(_RoundStopper):
    """Stops the experiment once a round's mean `metric` over its repetitions that ran to the
    end reaches `target` (at least it for mode "max", at most for "min").

    Args:
        target: the value to reach, e.g. an accuracy of 0.9.
        metric, mode: the reported key and its direction.
        repetitions: trials per round (greenray's RoundRepeater `repeat`).
    """

    def __init__(self, target: float, metric: str = "accuracy", mode: str = "max", repetitions: int = 1):
        if number(target) is None:
            raise ValueError(f"target must be a number, not {target!r}")
        super().__init__(metric, mode, repetitions)
        self.target = float(target)

    def _reached(self) -> bool:
        return target_reached(self.book, self.target)

    def reason(self) -> str:
        return f"round {self.book.best} reached {self.metric} {self.target:g}"

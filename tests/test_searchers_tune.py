"""The three searchers driving a real ray.tune.Tuner on the session's local Ray: under Repeater and
ConcurrencyLimiter, with trials that fail, and resumed with Tuner.restore after an interruption."""

import math
import os
import signal
import sys
from pathlib import Path

import pytest
from ray import cloudpickle, tune
from ray.tune.search import ConcurrencyLimiter, Repeater

from greenray.tune.searchers import PartialGridSearch, PIBayesSearch, RandomSearch

SPACE = {"lr": tune.loguniform(1e-5, 1e-1), "beta1": tune.uniform(0.1, 1.0)}


def bowl(config: dict) -> float:
    return ((math.log10(config["lr"]) + 3) / 2) ** 2 + ((config["beta1"] - 0.8) / 0.45) ** 2


def objective(config: dict) -> None:
    tune.report({"loss": bowl(config)})


def fragile_objective(config: dict) -> None:
    """Fails where lr > 1e-3."""
    if config["lr"] > 1e-3:
        raise RuntimeError("diverged")
    tune.report({"loss": bowl(config)})


class InterruptOnce(tune.Callback):
    """Sends the driver SIGUSR1 (Tune stops and saves, as on Ctrl+C) once `after` trials have ended;
    the marker file keeps the restored run, which unpickles this callback, from doing it again."""

    def __init__(self, after: int, marker: Path) -> None:
        self.after, self.marker, self.ended = after, marker, 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ended += 1
        if self.ended == self.after and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGUSR1)


@pytest.fixture
def quiet_tune(ray_local, monkeypatch):
    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "0")  # the legacy console output is silent at verbose=0
    # Tune's workers cannot import this test module: ship its trainables by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return ray_local


def tuner(trainable, search_alg, num_samples: int, path: Path, callbacks=()) -> tune.Tuner:
    # No param_space: the searcher holds space, metric and mode, as in the study.
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=search_alg, num_samples=num_samples, reuse_actors=True),
        run_config=tune.RunConfig(
            name=path.name, storage_path=str(path.parent), verbose=0, callbacks=list(callbacks)
        ),
    )


def rounds(results) -> dict[tuple[float, float], list[int]]:
    """Repetition indices per configuration."""
    seen: dict[tuple[float, float], list[int]] = {}
    for result in results:
        seen.setdefault((result.config["lr"], result.config["beta1"]), []).append(
            result.config["__trial_index__"]
        )
    return seen


def saved_bayes(path: Path) -> PIBayesSearch:
    """The PI-Bayes searcher as Tune last saved it in the experiment folder."""
    searcher = PIBayesSearch(SPACE, metric="loss", mode="min", seed=123)
    searcher.restore_from_dir(str(path))
    return searcher


def test_grid_under_repeater_stops_when_the_grid_is_used_up(quiet_tune, tmp_path):
    grid = PartialGridSearch(SPACE, metric="loss", mode="min", seed=0, points_per_dim=2)
    results = tuner(objective, Repeater(grid, repeat=2), 20, tmp_path / "grid").fit()
    assert len(results) == 8 and results.num_errors == 0  # 4 grid points x 2, not the 20 allowed
    seen = rounds(results)
    expected = {(lr, b1) for lr in (1e-5, 10**-3) for b1 in (0.1, 0.55)}
    assert {(round(lr, 12), round(b1, 12)) for lr, b1 in seen} == {(round(lr, 12), b1) for lr, b1 in expected}
    assert all(sorted(indices) == [0, 1] for indices in seen.values())


def test_random_under_a_concurrency_limit_runs_its_seeded_draws(quiet_tune, tmp_path):
    searcher = ConcurrencyLimiter(
        Repeater(RandomSearch(SPACE, metric="loss", mode="min", seed=4), repeat=2), max_concurrent=2
    )
    results = tuner(objective, searcher, 4, tmp_path / "random").fit()
    fresh = RandomSearch(SPACE, metric="loss", mode="min", seed=4)
    draws = [fresh.suggest(f"t{i}") for i in range(2)]
    assert len(results) == 4 and results.num_errors == 0
    assert set(rounds(results)) == {(d["lr"], d["beta1"]) for d in draws}


def test_bayes_goes_on_through_failing_trials(quiet_tune, tmp_path):
    # Seed 2's two random starts: lr = 1e-5 (runs) and 0.013 (fails), so both cases happen.
    searcher = PIBayesSearch(SPACE, metric="loss", mode="min", seed=2, n_initial=2)
    results = tuner(fragile_objective, searcher, 4, tmp_path / "bayes").fit()
    configs = {(r.config["lr"], r.config["beta1"]) for r in results}
    assert len(results) == 4 and len(configs) == 4  # the search went on, with new configurations
    failed = sum(lr > 1e-3 for lr, _ in configs)
    assert failed >= 1 and results.num_errors == failed
    assert saved_bayes(tmp_path / "bayes").n_observations == 4 - failed  # failed trials not learnt


def test_bayes_resumes_with_tuner_restore(quiet_tune, tmp_path):
    path = tmp_path / "resumed"
    searcher = PIBayesSearch(SPACE, metric="loss", mode="min", seed=1, n_initial=2)
    first = tuner(
        objective, Repeater(searcher, repeat=2), 6, path, [InterruptOnce(3, tmp_path / "fired")]
    ).fit()
    assert len(first) < 6  # it was interrupted
    before = saved_bayes(path)
    assert before.n_observations >= 1
    results = tune.Tuner.restore(str(path), trainable=objective).fit()
    seen = rounds(results)
    assert len(results) == 6 and results.num_errors == 0
    assert len(seen) == 3 and all(sorted(indices) == [0, 1] for indices in seen.values())
    after = saved_bayes(path)
    assert after.n_observations == 3  # rounds from before the interruption were not forgotten

"""greenray's one Bayesian-optimisation core (greenray.optim) through its searcher: the exact
expected hypervolume improvement against a Monte Carlo estimate, the accuracy / energy front a
two-metric search finds (non-dominated, holding the best-accuracy trial, the same after a save
and restore, and as pareto.csv), a restore of a broken state, and `--objective min-energy`
(accuracy as a constraint, not a stopping lever)."""

import math

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from greenray.config import StudyConfig
from greenray.errors import UsageError
from greenray.optim.acquisition import expected_hypervolume_improvement
from greenray.optim.bo import RESTART_EVERY, TUNE_EVERY, GaussianProcess, ard_kernel, polish, quiet_numerics
from greenray.optim.pareto import hypervolume, non_dominated
from greenray.optim.propose import propose_constrained
from greenray.tune.objectives import front, searcher_metric, searcher_options
from greenray.tune.searchers import PIBayesSearch, RandomSearch
from greenray.tune.space import search_space
from greenray.tune.stoppers import TargetAccuracyStopper
from greenray.tune.study import study_levers, write_front

SPACE = search_space("3+batch", max_epochs=4)
FRONT_METRICS = {"metric": ["accuracy", "energy_j"], "mode": ["max", "min"]}


def trial(config: dict) -> dict:
    """Accuracy peaks at lr = 1e-3 and falls with the batch size; Joules fall with it."""
    accuracy = 1 - abs(math.log10(config["lr"]) + 3) / 4 - 0.1 * math.log2(config["batch_size"] / 16) / 6
    return {"accuracy": accuracy, "energy_j": 1e4 / config["batch_size"]}


def run(searcher, n: int, start: int = 0) -> list[dict]:
    rows = []
    for i in range(start, start + n):
        config = searcher.suggest(f"t{i}")
        result = trial(config)
        searcher.on_trial_complete(f"t{i}", result)
        rows.append({"trial_id": f"t{i}", "config": str(config), **result})
    return rows


def test_the_exact_expected_hypervolume_improvement_matches_monte_carlo():
    rng = np.random.default_rng(0)
    points = rng.uniform(size=(8, 2))
    on = points[non_dominated(points)]
    reference = np.array([-0.1, -0.1])
    mean, std = rng.uniform(size=(3, 2)), rng.uniform(0.05, 0.3, size=(3, 2))
    exact = expected_hypervolume_improvement(mean, std, on, reference)

    def volume(gains: np.ndarray) -> float:  # (accuracy, -energy) as hypervolume takes them
        return hypervolume([(a, -b) for a, b in gains], (reference[0], -reference[1]))

    base = volume(on)
    for i in range(3):
        draws = mean[i] + std[i] * rng.standard_normal((4000, 2))
        estimate = np.mean([volume(np.vstack([on, d])) - base for d in draws])
        assert exact[i] == pytest.approx(estimate, rel=0.1, abs=2e-4)
    assert (exact >= 0).all() and exact[np.argmax(mean.sum(axis=1))] > 0


def test_the_front_is_non_dominated_holds_the_best_accuracy_and_survives_save_and_restore(tmp_path):
    searcher = PIBayesSearch(SPACE, seed=3, n_initial=4, **FRONT_METRICS)
    rows = pd.DataFrame(run(searcher, 14))
    on = front(rows, "energy_j")
    gains = np.column_stack([on["accuracy"], -on["energy_j"]])
    assert non_dominated(gains).all() and len(on) >= 2
    assert rows["accuracy"].idxmax() in on.index
    path = str(tmp_path / "searcher.pkl")
    searcher.save(path)
    restored = PIBayesSearch(SPACE, seed=99, **FRONT_METRICS)
    restored.restore(path)
    assert restored.n_observations == 14
    assert run(restored, 3, start=14) == run(searcher, 3, start=14)  # the same next suggestions
    # pareto.csv, as a study writes it: the same front
    table = rows.assign(status="ok", round=range(len(rows)), repetition=0)
    written = pd.read_csv(write_front(tmp_path, table))
    assert sorted(written["trial_id"]) == sorted(on["trial_id"])


def test_a_front_search_beats_random_search_on_hypervolume():
    """5 seeds x 14 trials; the hypervolume (accuracy above 0.4, Joules under 700) of the
    front each finds: the model's is larger in at least 4 of 5 seeds."""
    wins = 0
    for seed in range(5):
        fronts = []
        for searcher in (PIBayesSearch(SPACE, seed=seed, **FRONT_METRICS), RandomSearch(SPACE, seed=seed)):
            rows = run(searcher, 14)
            fronts.append(hypervolume([(r["accuracy"], r["energy_j"]) for r in rows], (0.4, 700.0)))
        wins += fronts[0] > fronts[1]
    assert wins >= 4


def test_a_restore_of_a_broken_state_fails_at_once(tmp_path):
    searcher = PIBayesSearch(SPACE, seed=0, n_initial=2, **FRONT_METRICS)
    run(searcher, 3)
    path = tmp_path / "searcher.pkl"
    searcher.save(str(path))
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # a truncated file
    with pytest.raises(ValueError, match="not a saved PIBayesSearch state"):
        PIBayesSearch(SPACE, seed=0, **FRONT_METRICS).restore(str(path))
    with pytest.raises(ValueError, match="not a saved PIBayesSearch state"):
        PIBayesSearch(SPACE, seed=0, **FRONT_METRICS).set_state({"_seed": 0})


def test_min_energy_finds_a_cheap_configuration_that_meets_the_accuracy():
    metric, mode = searcher_metric("min-energy", "energy_j")
    assert (metric, mode) == (["energy_j", "accuracy"], ["min", "max"])
    options = searcher_options("min-energy", "bayes", 0.8)
    assert options == {"threshold": 0.8} and searcher_options("min-energy", "random", 0.8) == {}
    searcher = PIBayesSearch(SPACE, metric=metric, mode=mode, seed=0, **options)
    rows = pd.DataFrame(run(searcher, 16))
    feasible = rows[rows["accuracy"] >= 0.8]
    # the least energy at accuracy 0.8: the largest batch (1024, accuracy 0.9 at lr = 1e-3)
    assert trial({"lr": 1e-3, "batch_size": 1024.0})["accuracy"] >= 0.8
    assert not feasible.empty and feasible["energy_j"].min() <= 1.5 * 1e4 / 1024


def test_min_energy_needs_a_target_and_the_target_then_stops_nothing():
    with pytest.raises(UsageError, match="give --target-accuracy"):
        StudyConfig.from_flat({"objective": "min-energy", "energy": "simulated"})
    config = StudyConfig.from_flat({"objective": "min-energy", "target_accuracy": 0.9, "energy": "simulated"})
    assert config.levers.stop_accuracy is None and not config.levers.stopping
    assert not any(isinstance(s, TargetAccuracyStopper) for s in study_levers(config, {}))
    stopping = StudyConfig.from_flat({"target_accuracy": 0.9, "energy": "simulated"})
    assert stopping.levers.stopping
    assert any(isinstance(s, TargetAccuracyStopper) for s in study_levers(stopping, {}))


def _infeasible_history(constraint_of) -> tuple:
    """Nine 1-D observations, none feasible: costs 10 + 90 x (objective = -cost) and the
    constraint `constraint_of(x)` (met where at most 0)."""
    points = np.linspace(0.0, 1.0, 9)[:, None]
    values = -(10 + 90 * points[:, 0])
    return points, values, np.array([constraint_of(x) for x in points[:, 0]])


def _first_feasible_pick(points, values, constraints, costs: bool) -> float:
    models = [GaussianProcess(ard_kernel(1), seed=0, prior=True) for _ in range(2)]
    lattice = np.linspace(0.05, 0.95, 19)[:, None]
    pick = propose_constrained(
        *models, points, values, constraints, np.zeros((0, 1)), np.random.RandomState(0), lattice, costs=costs
    )
    return float(pick[0])


def test_before_a_feasible_point_a_cost_is_weighed_against_the_chance_of_meeting_the_constraint():
    # The constraint is equally far from holding everywhere: the cheapest end wins on cost.
    flat = _infeasible_history(lambda x: 0.2 + 0.01 * math.sin(7 * x))
    assert _first_feasible_pick(*flat, costs=True) < 0.3
    # It nearly holds at the expensive end only: there, however dear, since chance outweighs cost.
    steep = _infeasible_history(lambda x: 1.0 - 0.95 * x)
    assert _first_feasible_pick(*steep, costs=True) > 0.7
    # Without costs (an objective that is not one), the most plausible point, whatever it costs.
    assert _first_feasible_pick(*steep, costs=False) > 0.7
    with pytest.raises(ValueError, match="negated positive costs"):
        _first_feasible_pick(flat[0], -flat[1], flat[2], costs=True)


def test_the_two_models_of_a_front_never_restart_or_tune_at_the_same_suggestion():
    searcher = PIBayesSearch(SPACE, seed=0, **FRONT_METRICS)
    run(searcher, 5)
    turns = []
    for model in searcher._models:  # which of the next 24 fits restart, which tune
        fits = [model.fits + model.phase + i for i in range(24)]
        turns.append({f for f in range(24) if fits[f] % RESTART_EVERY == 0 or fits[f] % TUNE_EVERY == 0})
    assert turns[0] and turns[1] and not turns[0] & turns[1]


def test_polish_climbs_towards_a_smooth_optimum_and_never_leaves_the_cube_or_gets_worse():
    peak = np.array([0.3, 0.95, 0.5])

    def score(x: np.ndarray) -> np.ndarray:
        return -(((x - peak) * [1.0, 1.0, 10.0]) ** 2).sum(axis=1)  # one steep input, as ARD finds

    starts = np.array([[0.6, 0.6, 0.2], [0.1, 0.99, 0.9], [0.3, 0.95, 0.5]])
    polished, values = polish(score, starts, score(starts))
    assert ((polished >= 0) & (polished <= 1)).all()
    assert (values >= score(starts)).all() and np.allclose(values, score(polished))
    assert (values[:2] > score(starts)[:2] / 10).all()  # a local climb: most of the way up
    assert (np.linalg.norm(polished - peak, axis=1)[:2] < np.linalg.norm(starts - peak, axis=1)[:2]).all()
    assert np.allclose(polished[2], peak)  # already at the top: stays


def test_a_model_is_fitted_and_asked_on_one_blas_thread_and_the_pools_are_restored_after():
    with threadpool_limits(limits=2):  # as on a 2-core machine, whatever this one has
        with quiet_numerics():
            inside = [pool["num_threads"] for pool in threadpool_info()]
        after = [pool["num_threads"] for pool in threadpool_info()]
    assert inside and all(n == 1 for n in inside)
    assert after and all(n == 2 for n in after)


def test_a_gp_pickled_before_phases_existed_fits_after_its_restore():
    """A study's searcher state from before `phase`: the GP restores and goes on fitting."""
    import pickle

    points = np.random.default_rng(0).random((8, 2))
    gp = GaussianProcess(ard_kernel(2)).fit(points, points.sum(axis=1))
    del gp.__dict__["phase"]  # as such a GP was pickled
    restored = pickle.loads(pickle.dumps(gp))
    mean = restored.fit(points, points.sum(axis=1)).model.predict(points[:1])
    assert restored.phase == 0 and abs(mean[0] - points[0].sum()) < 0.1

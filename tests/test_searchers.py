"""The three searchers called directly (suggest / on_trial_complete / save / restore), without Ray Tune
running: grid values, determinism, failed trials, pending trials, and PI-Bayes against random search."""

import math
from itertools import product

import numpy as np
import pytest
from ray import tune
from ray.tune.search import Searcher
from scipy.stats import binomtest

from greenray.tune.searchers import (
    SEARCHERS,
    PartialGridSearch,
    PIBayesSearch,
    RandomSearch,
    make_searcher,
)
from greenray.tune.space import adam_space

SPACE_2D = {"lr": tune.loguniform(1e-5, 1e-1), "beta1": tune.uniform(0.1, 1.0)}


def bowl(config: dict) -> float:
    """A smooth 2-D loss with its minimum 0 at lr = 1e-3, beta1 = 0.8."""
    return ((math.log10(config["lr"]) + 3) / 2) ** 2 + ((config["beta1"] - 0.8) / 0.45) ** 2


def suggestions(searcher: Searcher, n: int, loss=bowl, start: int = 0) -> list[dict]:
    """n suggestions, each completed with its loss before the next is asked for."""
    configs = []
    for i in range(start, start + n):
        config = searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", {"loss": loss(config)})
        configs.append(config)
    return configs


def test_grid_has_the_studys_125_points_for_3_parameters():
    grid = PartialGridSearch(adam_space(3), metric="loss", mode="min", seed=0)
    points = [grid.suggest(f"t{i}") for i in range(125)]
    as_tuples = {(p["lr"], p["beta1"], p["beta2"]) for p in points}
    assert grid.size == 125 and len(as_tuples) == 125
    lrs = sorted({p["lr"] for p in points})
    expected_lr = [10 ** (-5 + i * 4 / 5) for i in range(5)]  # log(lower) + i (log(upper) - log(lower)) / 5
    assert lrs == pytest.approx(expected_lr, rel=1e-9)
    assert sorted({p["beta1"] for p in points}) == pytest.approx([0.1 + i * 0.9 / 5 for i in range(5)])
    assert sorted({p["beta2"] for p in points}) == pytest.approx([0.8 + i * 0.2 / 5 for i in range(5)])
    assert max(lrs) < 1e-1 and max(p["beta1"] for p in points) < 1.0  # the upper bound is never used
    expected = set(
        product(expected_lr, [0.1 + i * 0.18 for i in range(5)], [0.8 + i * 0.04 for i in range(5)])
    )
    assert len(expected) == 125 and all(
        any(np.allclose(point, e, rtol=1e-9) for e in expected) for point in list(as_tuples)[:10]
    )


def test_grid_has_3125_points_for_5_parameters():
    grid = PartialGridSearch(adam_space(5), metric="loss", mode="min", seed=0)
    points = [grid.suggest(f"t{i}") for i in range(grid.size)]
    assert grid.size == 3125
    assert len({tuple(p.values()) for p in points}) == 3125
    assert sorted({p["eps"] for p in points}) == pytest.approx(
        [1e-9 + i * (1e-7 - 1e-9) / 5 for i in range(5)]
    )
    assert sorted({p["weight_decay"] for p in points}) == pytest.approx([0.0, 0.02, 0.04, 0.06, 0.08])


def test_grid_says_finished_once_used_up(caplog):
    grid = PartialGridSearch(SPACE_2D, metric="loss", mode="min", seed=3, points_per_dim=3)
    points = [grid.suggest(f"t{i}") for i in range(9)]
    assert len({tuple(p.values()) for p in points}) == 9
    with caplog.at_level("WARNING", logger="greenray.tune.searchers"):
        assert grid.suggest("t9") == Searcher.FINISHED
        assert grid.suggest("t10") == Searcher.FINISHED
    assert sum("finished" in record.getMessage() for record in caplog.records) == 1


def test_grid_order_is_random_but_seeded():
    a, again, b = (
        [grid.suggest(f"t{i}") for i in range(20)]
        for grid in (
            PartialGridSearch(adam_space(3), seed=7),
            PartialGridSearch(adam_space(3), seed=7),
            PartialGridSearch(adam_space(3), seed=8),
        )
    )
    assert a == again and a != b
    lr_order = [p["lr"] for p in a]
    assert lr_order != sorted(lr_order)  # not walked in grid order


@pytest.mark.parametrize("strategy", ["random", "bayes"])
def test_same_seed_same_suggestions(strategy):
    runs = [
        suggestions(make_searcher(strategy, SPACE_2D, metric="loss", mode="min", seed=11), 8)
        for _ in range(2)
    ]
    other = suggestions(make_searcher(strategy, SPACE_2D, metric="loss", mode="min", seed=12), 8)
    assert runs[0] == runs[1]
    assert runs[0] != other


def test_random_draws_cover_the_log_range():
    searcher = RandomSearch(adam_space(3), seed=2)
    configs = [searcher.suggest(f"t{i}") for i in range(400)]
    log_lr = np.log10([c["lr"] for c in configs])
    assert log_lr.min() >= -5 and log_lr.max() <= -1
    # log-uniform: about a quarter of the draws in each decade
    assert np.histogram(log_lr, bins=4, range=(-5, -1))[0] == pytest.approx([100] * 4, abs=35)
    assert all(0.8 <= c["beta2"] <= 1.0 for c in configs)


@pytest.mark.parametrize("strategy", ["grid", "random", "bayes"])
def test_save_restore_gives_the_same_next_suggestions(strategy, tmp_path):
    searcher = make_searcher(strategy, SPACE_2D, metric="loss", mode="min", seed=5, **_small(strategy))
    suggestions(searcher, 6)
    pending = searcher.suggest("in-flight")  # saved while a trial is still running
    path = str(tmp_path / "searcher.pkl")
    searcher.save(path)
    restored = make_searcher(strategy, SPACE_2D, metric="loss", mode="min", seed=99, **_small(strategy))
    restored.restore(path)
    for s in (searcher, restored):
        s.on_trial_complete("in-flight", {"loss": bowl(pending)})
    assert suggestions(restored, 3, start=10) == suggestions(searcher, 3, start=10)


def _small(strategy: str) -> dict:
    return {"n_initial": 3} if strategy == "bayes" else {}


def test_bayes_learns_nothing_from_a_failed_trial():
    searcher = PIBayesSearch(SPACE_2D, metric="loss", mode="min", seed=0, n_initial=2)
    suggestions(searcher, 3)
    failures = [
        (None, True),
        (None, False),
        ({"other": 1.0}, False),
        ({"loss": float("nan")}, False),
        ({"loss": 1.0}, True),
    ]
    for i, (result, error) in enumerate(failures):
        searcher.suggest(f"failed{i}")
        searcher.on_trial_complete(f"failed{i}", result, error=error)
        assert searcher.n_observations == 3, (result, error)
    assert len(suggestions(searcher, 1, start=3)) == 1  # and it goes on suggesting
    assert searcher.n_observations == 4


def test_bayes_keeps_suggesting_when_every_trial_fails():
    searcher = PIBayesSearch(SPACE_2D, metric="loss", mode="min", seed=0, n_initial=2)
    for i in range(5):
        config = searcher.suggest(f"t{i}")
        assert 1e-5 <= config["lr"] <= 1e-1
        searcher.on_trial_complete(f"t{i}", None, error=True)
    assert searcher.n_observations == 0


def test_bayes_suggestions_differ_while_trials_are_pending():
    searcher = PIBayesSearch(SPACE_2D, metric="loss", mode="min", seed=1, n_initial=3)
    suggestions(searcher, 4)
    in_flight = [searcher.suggest(f"p{i}") for i in range(6)]  # six trials running at once
    points = [(c["lr"], c["beta1"]) for c in in_flight]
    gaps = [
        np.hypot(np.log10(a[0] / b[0]) / 4, (a[1] - b[1]) / 0.9)
        for i, a in enumerate(points)
        for b in points[:i]
    ]
    assert min(gaps) > 1e-3  # distinct points, not the same optimum six times
    for i, config in enumerate(in_flight):
        searcher.on_trial_complete(f"p{i}", {"loss": bowl(config)})
    assert searcher.n_observations == 10


def test_bayes_mode_min_is_mode_max_of_the_negated_metric():
    as_min = suggestions(PIBayesSearch(SPACE_2D, metric="loss", mode="min", seed=4, n_initial=3), 6)
    as_max = suggestions(
        PIBayesSearch(SPACE_2D, metric="loss", mode="max", seed=4, n_initial=3), 6, loss=lambda c: -bowl(c)
    )
    values = [[list(c.values()) for c in run] for run in (as_min, as_max)]
    np.testing.assert_allclose(values[0], values[1], rtol=1e-9)


def test_bayes_beats_random_search_on_a_smooth_function():
    """Same budget (12 rounds; PI-Bayes's defaults: the first 5 random), 6 seeds: PI-Bayes must find a
    lower loss than random search in all 6 (one-sided sign test p = 1/64) with a median 5x lower."""
    seeds, budget = range(6), 12
    bayes = [min(map(bowl, suggestions(PIBayesSearch(SPACE_2D, "loss", "min", s), budget))) for s in seeds]
    random = [min(map(bowl, suggestions(RandomSearch(SPACE_2D, "loss", "min", s), budget))) for s in seeds]
    wins = sum(b < r for b, r in zip(bayes, random, strict=True))
    assert binomtest(wins, len(seeds), alternative="greater").pvalue < 0.02
    assert np.median(bayes) < np.median(random) / 5


def test_make_searcher_names_the_strategies():
    assert set(SEARCHERS) == {"grid", "random", "bayes"}
    assert isinstance(
        make_searcher("grid", SPACE_2D, metric="acc", mode="max", points_per_dim=2), PartialGridSearch
    )
    with pytest.raises(ValueError, match="grid, random, bayes"):
        make_searcher("hyperband", SPACE_2D, metric="acc", mode="max")
    with pytest.raises(ValueError, match="tune.uniform or tune.loguniform"):
        make_searcher("random", {"layers": tune.choice([1, 2])}, metric="acc", mode="max")

"""The study's three searchers as Ray Tune Searchers: partial grid, random, and Bayesian
optimisation with Probability of Improvement.

Each is built like Ray's own: Cls(space=..., metric=..., mode=..., seed=...), where space maps
names to tune.uniform / tune.loguniform domains. (Work in progress: RandomSearch first.)
"""

from __future__ import annotations

import pickle

import numpy as np
from ray.tune.search import Searcher
from ray.tune.search.sample import Float, LogUniform, Uniform


def _bounds(space: dict) -> dict[str, tuple[float, float, bool]]:
    """(low, high, log) per parameter; only continuous uniform and log-uniform domains."""
    bounds = {}
    for name, domain in space.items():
        sampler = getattr(domain, "sampler", None)
        if not isinstance(domain, Float) or not isinstance(sampler, Uniform | LogUniform):
            raise ValueError(f"{name}: greenray's searchers take tune.uniform or tune.loguniform domains")
        bounds[name] = (float(domain.lower), float(domain.upper), isinstance(sampler, LogUniform))
    return bounds


class RandomSearch(Searcher):
    """Each value drawn independently from its range (log-uniform where the domain is)."""

    def __init__(self, space: dict, metric: str | None = None, mode: str | None = None, seed: int | None = None):
        super().__init__(metric=metric, mode=mode)
        self._bounds = _bounds(space)
        self._rng = np.random.default_rng(seed)

    def suggest(self, trial_id: str) -> dict:
        config = {}
        for name, (low, high, log) in self._bounds.items():
            if log:
                config[name] = float(np.exp(self._rng.uniform(np.log(low), np.log(high))))
            else:
                config[name] = float(self._rng.uniform(low, high))
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.__dict__, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.__dict__.update(pickle.load(handle))


SEARCHERS = {"random": RandomSearch}


def make_searcher(strategy: str, space: dict, *, metric: str, mode: str, seed: int | None = None, **options) -> Searcher:
    """The searcher for a strategy name (grid, random, bayes)."""
    return SEARCHERS[strategy](space=space, metric=metric, mode=mode, seed=seed, **options)

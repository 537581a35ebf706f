"""The study's three searchers as Ray Tune Searchers: partial grid, random, and Bayesian
optimisation with Probability of Improvement (PI).

Each is built like Ray's own, Cls(space, metric=..., mode=..., seed=...), where space maps names to
tune.uniform / tune.loguniform domains; or without a space, which the Tuner's param_space then
gives (Tune calls set_search_properties), with metric and mode from the TuneConfig. Any reported
key can be the metric: `accuracy`, or the energy keys `with_energy` adds (`energy_j` with mode
"min"). All three work with several trials in flight, under Repeater (which adds
`__trial_index__` to the configs it hands out; the searchers never read configs back) and
ConcurrencyLimiter, save/restore through Tuner.restore, and ignore failed trials (error=True, no
result, or a missing or non-finite metric): a failure is never turned into a made-up observation.

Every searcher works in the unit cube: a value u in [0, 1] per parameter, mapped linearly onto the
range, or onto log(range) where the domain is log-uniform.

- PartialGridSearch: `points_per_dim` values per parameter, lower + i (upper - lower) / n for
  i = 0..n-1 on the parameter's own scale (the study's formula: the upper bound is never used), so
  3 parameters give 125 points and 5 give 3,125; points come in a seeded random order without
  replacement, and when the grid is used up the searcher says so once and returns FINISHED.
- RandomSearch: independent uniform draws in the unit cube.
- PIBayesSearch: Bayesian optimisation on greenray's one core (greenray.optim, also behind the
  serving policy search), with these choices (docs/BENCHMARKS.md, "Searchers" and "Pareto",
  compares them with Optuna's samplers on the same budget):
  * a Gaussian process per metric, amplitude x ARD Matern 5/2 (one length scale per input,
    fitted; a parameter that does not matter gets a long one) + fitted white noise, targets
    normalised, each fit warm-started from the last;
  * one metric: Probability of Improvement (the study's acquisition), xi in units of the observed
    targets' standard deviation (default 0.01), so it means the same for an accuracy and a loss;
    optional exploration_decay; maximised over candidates (random points and perturbations of
    the best ones), the best few then polished by gradient steps;
  * two metrics (metric=["accuracy", "energy_j"], mode=["max", "min"], as OptunaSearch takes
    them): their Pareto front, by exact expected hypervolume improvement over a GP per metric
    (the method of Optuna's GPSampler and BoTorch; it replaced ParEGO's random scalarisation,
    which found smaller fronts than Optuna's TPE);
  * two metrics and a `threshold`: the first optimised among the configurations whose second
    meets the threshold (`--objective min-energy --target-accuracy A`): expected improvement
    times the probability of meeting it, and until one does, the configuration that most
    plausibly does, or, when the first metric is a positive quantity minimised (Joules), the
    one most likely to meet it per predicted Joule (so that the first feasible trial, and the
    search up to it, are cheap too);
  * the first `n_initial` points (default 5) are a seeded Latin hypercube, and suggestions stay
    random until at least one trial has succeeded;
  * pending trials join the model with a constant liar (each metric's mean), so concurrent
    suggestions differ; a suggestion that still lands on a pending or observed point is
    replaced by a random one;
  * mode "min" is handled by modelling -metric.

PartialGridSearch and RandomSearch take several metrics too: they never read results.
"""

from __future__ import annotations

import logging
import math
import pickle
from typing import Any

import numpy as np
from ray.tune.search import Searcher
from ray.tune.search.sample import Domain, Float, LogUniform, Uniform
from sklearn.gaussian_process.kernels import Kernel, Matern

from greenray.optim.bo import RESTART_EVERY, GaussianProcess, UnitCube, ard_kernel, space_filling
from greenray.optim.propose import propose_constrained, propose_front, propose_improvement

logger = logging.getLogger(__name__)


def cube_of(space: dict) -> UnitCube:
    """The unit cube of a space of tune.uniform / tune.loguniform domains."""
    bounds = {}
    for name, domain in space.items():
        sampler = getattr(domain, "sampler", None)
        if not isinstance(domain, Float) or not isinstance(sampler, Uniform | LogUniform):
            raise ValueError(f"{name}: greenray's searchers take tune.uniform or tune.loguniform domains")
        bounds[name] = (float(domain.lower), float(domain.upper), isinstance(sampler, LogUniform))
    return UnitCube.from_bounds(bounds)


class _CubeSearcher(Searcher):
    """What the three share: a space in the unit cube, given to the constructor or by the
    Tuner's param_space (set_search_properties), and save/restore through get_state/set_state
    (the searcher's own attributes pickled, numpy generators included)."""

    def __init__(self, space: dict | None, metric: str | None, mode: str | None) -> None:
        super().__init__(metric=metric, mode=mode)
        self._cube: UnitCube | None = None
        if space is not None:
            self._set_space(space)

    def _set_space(self, space: dict) -> None:
        """Build what depends on the space (subclasses extend it)."""
        self._cube = cube_of(space)

    @property
    def cube(self) -> UnitCube:
        if self._cube is None:
            raise ValueError(
                f"{type(self).__name__} has no search space: give one to its constructor or a "
                "param_space of tune.uniform / tune.loguniform domains to the Tuner"
            )
        return self._cube

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        """Take metric and mode where the constructor gave none, and the Tuner's param_space
        (its tune.uniform / tune.loguniform entries; constants pass through Tune) where the
        constructor gave no space. False when a space was given twice."""
        domains = {k: v for k, v in (config or {}).items() if isinstance(v, Domain)}
        if domains and self._cube is not None:
            return False
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        if domains:
            self._set_space(domains)
        return True

    def get_state(self) -> dict:
        return dict(self.__dict__)

    def set_state(self, state: dict) -> None:
        missing = set(self.__dict__) - set(state) if isinstance(state, dict) else {"a dict"}
        if missing:
            raise ValueError(
                f"not a saved {type(self).__name__} state (no {', '.join(sorted(missing))}): saved by "
                "another searcher or another greenray version"
            )
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.get_state(), handle)

    def restore(self, checkpoint_path: str) -> None:
        """Load what save wrote; a file that is not one (truncated, another class's, another
        greenray's) raises ValueError at once."""
        try:
            with open(checkpoint_path, "rb") as handle:
                state = pickle.load(handle)
        except (EOFError, pickle.UnpicklingError, AttributeError, ImportError, IndexError) as error:
            raise ValueError(
                f"{checkpoint_path}: not a saved {type(self).__name__} state "
                f"({type(error).__name__}: {error})"
            ) from error
        self.set_state(state)


def _objective(result: dict | None, error: bool, metric: str | None) -> float | None:
    """The finished trial's metric, or None when it failed or reported nothing usable."""
    if error or not result or metric is None or metric not in result:
        return None
    try:
        value = float(result[metric])
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _gains(result: dict | None, error: bool, metrics: list, modes: list) -> np.ndarray | None:
    """A finished trial's metrics, each oriented so that larger is better, or None when any is
    missing or not finite."""
    values = [_objective(result, error, metric) for metric in metrics]
    if any(v is None for v in values):
        return None
    return np.array([v if mode == "max" else -v for v, mode in zip(values, modes, strict=True)])


class PartialGridSearch(_CubeSearcher):
    """The study's partial grid: `points_per_dim` values per parameter (lower + i (upper - lower) / n,
    i = 0..n-1, on the parameter's own scale), grid points drawn at random without replacement,
    FINISHED once all have been handed out."""

    def __init__(
        self,
        space: dict | None = None,
        metric: str | None = None,
        mode: str | None = None,
        seed: int | None = None,
        points_per_dim: int = 5,
    ):
        if points_per_dim < 1:
            raise ValueError("points_per_dim must be at least 1")
        self._levels = np.arange(points_per_dim) / points_per_dim
        self._seed = seed
        self._next = 0
        self._told_finished = False
        super().__init__(space, metric, mode)

    def _set_space(self, space: dict) -> None:
        super()._set_space(space)
        self._order = np.random.default_rng(self._seed).permutation(len(self._levels) ** self.cube.dim)

    @property
    def size(self) -> int:
        """How many points the grid has."""
        return len(self._levels) ** self.cube.dim

    def suggest(self, trial_id: str) -> dict | str:
        if self._next >= self.size:
            if not self._told_finished:
                logger.warning(
                    "partial grid: all %d points have been suggested; the search is finished", self.size
                )
                self._told_finished = True
            return Searcher.FINISHED
        index = np.unravel_index(self._order[self._next], (len(self._levels),) * self.cube.dim)
        self._next += 1
        return self.cube.to_config(self._levels[list(index)])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass  # the grid does not learn from results


class RandomSearch(_CubeSearcher):
    """Each value drawn independently from its range (log-uniform where the domain is)."""

    def __init__(
        self,
        space: dict | None = None,
        metric: str | None = None,
        mode: str | None = None,
        seed: int | None = None,
    ):
        self._rng = np.random.default_rng(seed)
        super().__init__(space, metric, mode)

    def suggest(self, trial_id: str) -> dict:
        return self.cube.to_config(self._rng.uniform(size=self.cube.dim))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass  # independent draws: results change nothing


def _kernel(kernel: Any, dim: int) -> Kernel:
    """ "ard" (greenray.optim.bo.ard_kernel), None (one length scale for every input, Matern
    5/2: what bayesian-optimization's defaults gave), or a scikit-learn kernel."""
    if isinstance(kernel, str) and kernel == "ard":
        return ard_kernel(dim)
    return Matern(nu=2.5) if kernel is None else kernel


class PIBayesSearch(_CubeSearcher):
    """Bayesian optimisation on greenray's core (greenray.optim): a Gaussian process per metric
    on the unit cube, Probability of Improvement for one metric, expected hypervolume
    improvement for two, constrained expected improvement with a threshold (see the module
    docstring).

    n_initial: Latin-hypercube points before the model; xi: PI's margin, in units of the observed
    targets' standard deviation; exploration_decay: xi's factor per model suggestion (None:
    constant); kernel: "ard" (the default), any scikit-learn kernel, or None for one length
    scale; n_restarts_optimizer: extra starts of a cold GP fit; threshold: with two metrics, the
    second is a constraint (at least this for mode "max", at most for "min") and the first is
    optimised among the configurations that meet it."""

    def __init__(
        self,
        space: dict | None = None,
        metric: str | list[str] | None = None,
        mode: str | list[str] | None = None,
        seed: int | None = None,
        n_initial: int = 5,
        xi: float = 0.01,
        exploration_decay: float | None = None,
        kernel: Any = "ard",
        n_restarts_optimizer: int = 1,
        threshold: float | None = None,
    ):
        if n_initial < 1:
            raise ValueError("n_initial must be at least 1")
        if xi < 0:
            raise ValueError("xi must be at least 0")
        self._n_initial = n_initial
        self._seed = seed
        self._xi = xi
        self._exploration_decay = exploration_decay
        self._kernel = kernel
        self._restarts = n_restarts_optimizer
        self._threshold = threshold
        self._random_state = np.random.RandomState(seed)
        self._points: list[np.ndarray] = []  # unit points of the finished trials
        self._values: list[np.ndarray] = []  # their metrics, each oriented so that larger is better
        self._pending: dict[str, np.ndarray] = {}  # trial id -> unit point in flight
        self._n_suggested = 0
        super().__init__(space, metric, mode)

    def _set_space(self, space: dict) -> None:
        super()._set_space(space)
        self._initial = space_filling(self._n_initial, self.cube.dim, self._seed)
        seed = 0 if self._seed is None else self._seed
        prior = isinstance(self._kernel, str)  # ard_kernel: fitted under its prior
        # The second model restarts half a cycle after the first and tunes a turn later: no
        # suggestion pays for both (greenray.optim.bo.GaussianProcess, phase).
        self._models = tuple(
            GaussianProcess(
                _kernel(self._kernel, self.cube.dim),
                restarts=self._restarts,
                seed=seed + i,
                prior=prior,
                phase=i * (RESTART_EVERY // 2 + 1),
            )
            for i in range(2)
        )

    @property
    def n_observations(self) -> int:
        """How many finished trials the model has learnt from."""
        return len(self._points)

    @property
    def multi_objective(self) -> bool:
        """Whether several metrics are searched (their front, or one under a threshold on the other)."""
        return isinstance(self._metric, list | tuple)

    def _metrics(self) -> tuple[list, list]:
        modes = list(self._mode) if isinstance(self._mode, list | tuple) else [self._mode]
        metrics = list(self._metric) if self.multi_objective else [self._metric]
        if not all(metrics) or any(m not in ("min", "max") for m in modes) or len(modes) != len(metrics):
            raise ValueError(
                "PIBayesSearch needs metric and mode ('min' or 'max'; or lists of both, one mode per "
                "metric) in its constructor"
            )
        if len(metrics) > 2 or (self._threshold is not None and len(metrics) != 2):
            raise ValueError(
                "PIBayesSearch searches one metric, the front of two, or the first of two under a "
                "threshold on the second"
            )
        return metrics, modes

    def suggest(self, trial_id: str) -> dict:
        self._metrics()
        if self._n_suggested < len(self._initial):
            point = self._initial[self._n_suggested]
        elif not self._points:
            point = self._random_state.uniform(size=self.cube.dim)
        else:
            point = self._model_suggestion()
        self._n_suggested += 1
        self._pending[trial_id] = point
        return self.cube.to_config(point)

    def _model_suggestion(self) -> np.ndarray:
        points, values = np.array(self._points), np.array(self._values)
        pending = np.array(list(self._pending.values())).reshape(-1, self.cube.dim)
        rng = self._random_state
        if self._threshold is not None:
            _, modes = self._metrics()
            bound = self._threshold if modes[1] == "max" else -self._threshold
            constraints = bound - values[:, 1]
            # A positive quantity minimised (Joules) is a cost: the first feasible trial is sought
            # per unit of it (greenray.optim.propose.first_feasible).
            costs = modes[0] == "min" and bool((values[:, 0] < 0).all())
            point = propose_constrained(
                *self._models, points, values[:, 0], constraints, pending, rng, costs=costs
            )
        elif values.shape[1] == 2:
            point = propose_front(self._models, points, values, pending, rng)
        else:
            point = propose_improvement(self._models[0], points, values[:, 0], pending, rng, self._xi)
            self._xi *= self._exploration_decay or 1.0
        taken = np.concatenate([points, pending])
        if np.isclose(point, taken, atol=1e-6).all(axis=1).any():
            logger.debug("the model suggested a point already taken; drawing a random one instead")
            point = rng.uniform(size=self.cube.dim)
        return point

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        point = self._pending.pop(trial_id, None)
        if point is None:
            return
        metrics, modes = self._metrics()
        gains = _gains(result, error, metrics, modes)
        if gains is None:
            logger.warning(
                "trial %s failed or reported no finite %s; not learnt from", trial_id, self._metric
            )
            return
        self._points.append(point)
        self._values.append(gains)


SEARCHERS = {"grid": PartialGridSearch, "random": RandomSearch, "bayes": PIBayesSearch}


def make_searcher(
    strategy: str, space: dict, *, metric: str, mode: str, seed: int | None = None, **options
) -> Searcher:
    """The searcher for a strategy name (grid, random, bayes); options go to its constructor."""
    if strategy not in SEARCHERS:
        raise ValueError(f"unknown search strategy {strategy!r}: use one of {', '.join(SEARCHERS)}")
    return SEARCHERS[strategy](space=space, metric=metric, mode=mode, seed=seed, **options)

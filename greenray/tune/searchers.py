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
- PIBayesSearch: bayesian-optimization's GP and its ProbabilityOfImprovement acquisition, with
  these choices (the package's default GP, one length scale for all inputs, falls well short of
  Optuna's TPE; docs/BENCHMARKS.md, "Searchers", compares them on the same budget):
  * kernel: amplitude x ARD Matern 5/2 (one length scale per input, fitted; a parameter that does
    not matter gets a long one) + a fitted white-noise term for noisy metrics; targets normalised
    (normalize_y); set through the optimizer's own set_gp_params;
  * xi is given in units of the observed targets' standard deviation (default 0.01), so it means
    the same whether the metric is an accuracy or a loss; optional exploration_decay as in the package;
  * the first `n_initial` points (default 5) are a seeded Latin hypercube, and suggestions stay random
    until at least one trial has succeeded;
  * pending trials: the package's ConstantLiar registers every point still in flight with the mean
    observed target (a trial that fails or finishes leaves the liar set), so concurrent suggestions
    differ; a suggestion that still lands on a pending or observed point is replaced by a random one;
  * mode "min" is handled by registering -metric (the package maximises);
  * several metrics (metric=["accuracy", "energy_j"], mode=["max", "min"], as OptunaSearch takes
    them) search their Pareto front as ParEGO does (Knowles 2006): before each model suggestion a
    weight vector is drawn at random from the simplex, every observation is scalarised with
    those weights (augmented Tchebycheff over objectives scaled to [0, 1];
    greenray.tune.objectives.parego_targets), and the GP is refitted on those targets, so each
    suggestion aims at another part of the front.

PartialGridSearch and RandomSearch take several metrics too: they never read results.
"""

from __future__ import annotations

import logging
import math
import pickle
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from bayes_opt import BayesianOptimization, acquisition
from ray.tune.search import Searcher
from ray.tune.search.sample import Domain, Float, LogUniform, Uniform
from scipy.stats import qmc
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
from threadpoolctl import threadpool_limits

from greenray.tune.objectives import parego_targets, random_weights

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnitCube:
    """Maps points of [0, 1]^d onto a search space's values and back (log where the domain is log)."""

    names: tuple[str, ...]
    lows: np.ndarray
    highs: np.ndarray
    logs: np.ndarray

    @classmethod
    def from_space(cls, space: dict) -> UnitCube:
        names, lows, highs, logs = [], [], [], []
        for name, domain in space.items():
            sampler = getattr(domain, "sampler", None)
            if not isinstance(domain, Float) or not isinstance(sampler, Uniform | LogUniform):
                raise ValueError(f"{name}: greenray's searchers take tune.uniform or tune.loguniform domains")
            log = isinstance(sampler, LogUniform)
            low, high = float(domain.lower), float(domain.upper)
            names.append(name)
            lows.append(math.log(low) if log else low)
            highs.append(math.log(high) if log else high)
            logs.append(log)
        if not names:
            raise ValueError("the search space is empty")
        return cls(tuple(names), np.array(lows), np.array(highs), np.array(logs, dtype=bool))

    @property
    def dim(self) -> int:
        return len(self.names)

    def to_config(self, unit: np.ndarray) -> dict[str, float]:
        scaled = self.lows + np.asarray(unit, dtype=float) * (self.highs - self.lows)
        values = np.where(self.logs, np.exp(scaled), scaled)
        return {name: float(value) for name, value in zip(self.names, values, strict=True)}


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
        self._cube = UnitCube.from_space(space)

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
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.get_state(), handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.set_state(pickle.load(handle))


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


def default_kernel(dim: int, length_scale_bounds: tuple[float, float] = (1e-2, 1e2)):
    """Amplitude x ARD Matern 5/2 + white noise, for inputs in the unit cube and normalised targets."""
    matern = Matern(length_scale=np.full(dim, 0.5), length_scale_bounds=length_scale_bounds, nu=2.5)
    return ConstantKernel(1.0, (1e-2, 1e2)) * matern + WhiteKernel(1e-4, (1e-8, 1e-1))


@contextmanager
def _xi_in_target_units(pi: acquisition.ProbabilityOfImprovement, scale: float) -> Iterator[None]:
    """Lets PI see xi in target units for one suggestion while it is kept (and decayed by the
    package) in units of the targets' standard deviation."""
    pi.xi *= scale
    try:
        yield
    finally:
        pi.xi /= scale


class PIBayesSearch(_CubeSearcher):
    """Bayesian optimisation: bayesian-optimization's GP with an ARD Matern kernel on the unit cube and
    its Probability of Improvement acquisition (see the module docstring for the choices).

    n_initial: random (Latin hypercube) points before the GP; xi: PI's margin, in units of the
    observed targets' standard deviation; exploration_decay: xi's factor per model suggestion
    (None: constant); liar: the value pending points are registered with ("min", "mean", "max" of
    the targets, or a number); kernel: "ard" (the default above), any scikit-learn kernel, or None
    for the package's own GP; n_restarts_optimizer: extra starts of the GP's hyperparameter fit."""

    def __init__(
        self,
        space: dict | None = None,
        metric: str | None = None,
        mode: str | None = None,
        seed: int | None = None,
        n_initial: int = 5,
        xi: float = 0.01,
        exploration_decay: float | None = None,
        liar: str = "mean",
        kernel: Any = "ard",
        n_restarts_optimizer: int = 3,
    ):
        if n_initial < 1:
            raise ValueError("n_initial must be at least 1")
        if xi < 0:
            raise ValueError("xi must be at least 0")
        self._n_initial = n_initial
        self._seed = seed
        self._options = {
            "xi": xi,
            "exploration_decay": exploration_decay,
            "liar": liar,
            "kernel": kernel,
            "n_restarts_optimizer": n_restarts_optimizer,
        }
        self._random_state = np.random.RandomState(seed)
        self._observed: list[tuple[np.ndarray, float]] = []  # (unit point, target to maximise)
        self._gains: list[np.ndarray] = []  # several metrics: each observation's, larger is better
        self._pending: dict[str, np.ndarray] = {}  # trial id -> unit point in flight
        self._n_suggested = 0
        super().__init__(space, metric, mode)

    def _set_space(self, space: dict) -> None:
        super()._set_space(space)
        sampler = qmc.LatinHypercube(d=self.cube.dim, rng=np.random.default_rng(self._seed))
        self._initial = sampler.random(self._n_initial)
        self._build_optimizer()

    def _build_optimizer(self) -> None:
        options = self._options
        self._pi = acquisition.ProbabilityOfImprovement(
            xi=options["xi"], exploration_decay=options["exploration_decay"]
        )
        self._liar = acquisition.ConstantLiar(self._pi, strategy=options["liar"])
        self._optimizer = BayesianOptimization(
            f=None,
            pbounds={name: (0.0, 1.0) for name in self.cube.names},
            acquisition_function=self._liar,
            random_state=self._random_state,
            allow_duplicate_points=True,
            verbose=0,
        )
        kernel = default_kernel(self.cube.dim) if options["kernel"] == "ard" else options["kernel"]
        if kernel is not None:  # None keeps the package's default GP
            self._optimizer.set_gp_params(
                kernel=kernel, normalize_y=True, n_restarts_optimizer=options["n_restarts_optimizer"]
            )
        for point, target in self._observed:
            self._optimizer.register(self._as_params(point), target)

    def _as_params(self, point: np.ndarray) -> dict[str, float]:
        return {name: float(value) for name, value in zip(self.cube.names, point, strict=True)}

    @property
    def n_observations(self) -> int:
        """How many finished trials the GP has learnt from."""
        return len(self._observed)

    @property
    def multi_objective(self) -> bool:
        """Whether several metrics are searched (their front, through ParEGO)."""
        return isinstance(self._metric, list | tuple)

    def _check_metric(self) -> None:
        modes = self._mode if isinstance(self._mode, list | tuple) else [self._mode]
        metrics = self._metric if self.multi_objective else [self._metric]
        if not all(metrics) or any(m not in ("min", "max") for m in modes) or len(modes) != len(metrics):
            raise ValueError(
                "PIBayesSearch needs metric and mode ('min' or 'max'; or lists of both, one mode per "
                "metric) in its constructor"
            )

    def suggest(self, trial_id: str) -> dict:
        self._check_metric()
        if self._n_suggested < len(self._initial):
            point = self._initial[self._n_suggested]
        elif not self._observed:
            point = self._random_state.uniform(size=self.cube.dim)
        else:
            point = self._model_suggestion()
        self._n_suggested += 1
        self._pending[trial_id] = point
        return self.cube.to_config(point)

    def _scalarise(self) -> None:
        """ParEGO: this suggestion's random weights turn every observation into one target."""
        weights = random_weights(self._random_state, len(self._metric))
        targets = parego_targets(np.array(self._gains), weights)
        points = [point for point, _ in self._observed]
        self._observed = [(p, float(t)) for p, t in zip(points, targets, strict=True)]
        xi_now = self._pi.xi
        self._build_optimizer()
        self._pi.xi = xi_now

    def _model_suggestion(self) -> np.ndarray:
        if self.multi_objective:
            self._scalarise()
        targets = np.array([target for _, target in self._observed])
        scale = float(targets.std()) or 1.0
        keys = list(self._optimizer.space.keys)
        # The liar set is exactly what is in flight now (the package's own list would keep points of
        # failed trials forever).
        self._liar.dummies = [
            self._optimizer.space.params_to_array(self._as_params(p)) for p in self._pending.values()
        ]
        # One BLAS thread: the GP's matrices have a few dozen rows, and more threads only spin against
        # the trials for the CPU (2.5x the CPU time on a busy 2-core machine).
        with warnings.catch_warnings(), _xi_in_target_units(self._pi, scale), threadpool_limits(1):
            warnings.simplefilter("ignore")  # sklearn's convergence warnings on tiny data sets
            suggestion = self._optimizer.suggest()
        point = np.clip(np.array([suggestion[key] for key in keys]), 0.0, 1.0)
        taken = [p for p, _ in self._observed] + list(self._pending.values())
        if any(np.allclose(point, other, atol=1e-6) for other in taken):
            logger.debug("PI suggested a point already taken; drawing a random one instead")
            point = self._random_state.uniform(size=self.cube.dim)
        return point

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        point = self._pending.pop(trial_id, None)
        if point is None:
            return
        if self.multi_objective:
            gains = _gains(result, error, list(self._metric), list(self._mode))
            if gains is None:
                logger.warning(
                    "trial %s failed or reported no finite %s; not learnt from",
                    trial_id,
                    self._metric,
                )
                return
            self._gains.append(gains)
            self._observed.append((point, 0.0))  # its target is set per suggestion (_scalarise)
            return
        value = _objective(result, error, self._metric)
        if value is None:
            logger.warning(
                "trial %s failed or reported no finite %s; not learnt from", trial_id, self._metric
            )
            return
        target = value if self._mode == "max" else -value
        self._observed.append((point, target))
        self._optimizer.register(self._as_params(point), target)

    def get_state(self) -> dict:
        state = dict(self.__dict__)
        if self._cube is None:  # nothing built yet
            return state
        for rebuilt in ("_optimizer", "_pi", "_liar"):
            del state[rebuilt]
        state["xi_now"] = self._pi.xi
        return state

    def set_state(self, state: dict) -> None:
        state = dict(state)
        xi_now = state.pop("xi_now", None)
        self.__dict__.update(state)
        if self._cube is not None:
            self._build_optimizer()
            self._pi.xi = xi_now


SEARCHERS = {"grid": PartialGridSearch, "random": RandomSearch, "bayes": PIBayesSearch}


def make_searcher(
    strategy: str, space: dict, *, metric: str, mode: str, seed: int | None = None, **options
) -> Searcher:
    """The searcher for a strategy name (grid, random, bayes); options go to its constructor."""
    if strategy not in SEARCHERS:
        raise ValueError(f"unknown search strategy {strategy!r}: use one of {', '.join(SEARCHERS)}")
    return SEARCHERS[strategy](space=space, metric=metric, mode=mode, seed=seed, **options)

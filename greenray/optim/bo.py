"""The Bayesian-optimisation core: points of the unit cube (log where a range is), a space-filling
start, one Gaussian process per modelled quantity (scikit-learn's, ARD Matern kernel, warm-started
from its last fit), and the search of an acquisition function over candidate points.

Why these choices (docs/BENCHMARKS.md, "Searchers" and "Pareto", measures them):
- one length scale per input, fitted: a hyperparameter that does not matter gets a long one; the
  package defaults of bayesian-optimization (one length scale) fall well short of Optuna's TPE;
  fitted under Optuna's prior (log_prior): by maximum likelihood alone, on a few dozen points,
  length scales collapse to the bound (the model memorises) or run to it (an input is ignored);
- targets normalised, a fitted white-noise term: accuracies and Joules are noisy;
- the hyperparameters of each fit start from the last fit's (restarts only on the first fit and
  every RESTART_EVERY-th), and past a few dozen points they are fitted only every TUNE_EVERY-th
  fit (the others keep them and only solve): a model changes little between two observations,
  and the fit of an ARD kernel's hyperparameters costs most of a suggestion; the models of one
  search take these turns at different suggestions (`phase`), so that no suggestion pays for
  two restarts (the largest cost of one suggestion is what issue 22 bounds);
- the acquisition is maximised over candidates (random points plus perturbations of the best
  ones, then a finer round around the best candidates), vectorised, and the best few are then
  polished by gradient steps (forward differences, one vectorised call a step), as BoTorch and
  Optuna polish theirs with L-BFGS-B: the candidates find the basin, the steps its top (ZDT1's
  front lies on a face of the cube, where a candidate is rarely exactly);
- one BLAS thread: the matrices have a few dozen rows, and more threads only spin against the
  trials for the CPU (2.5x the CPU time on a busy 2-core machine); the thread pools are found
  once per process (_thread_pools);
- points still in flight join the data with a constant liar (the mean observed value of each
  quantity), so concurrent suggestions differ."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.stats import qmc
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Kernel, Matern, WhiteKernel
from threadpoolctl import ThreadpoolController

RESTART_EVERY = 12  # a fit with restarts every this many fits (the others warm-start)
TUNE_EVERY = 3  # past TUNE_ALWAYS_BELOW points, hyperparameters are fitted every this many fits
TUNE_ALWAYS_BELOW = 24  # points: below this many, every fit fits the hyperparameters
N_RANDOM = 1024  # candidates drawn uniformly per suggestion
N_AROUND = 64  # candidates around each of the best points so far
N_ANCHORS = 16  # at most this many best points are perturbed
N_REFINE = 4  # the best candidates perturbed again, finer
LOCAL_SCALE = 0.08  # the perturbations' standard deviation in the unit cube (then a quarter of it)
N_POLISH = 4  # the best candidates then climbed by gradient steps (polish)
POLISH_ITERATIONS = 6  # gradient steps per climb
POLISH_DELTA = 1e-4  # the forward difference's step, in the unit cube
POLISH_STEPS = (0.1, 0.03, 0.01, 0.003)  # step lengths tried along each gradient, in the unit cube


@dataclass(frozen=True)
class UnitCube:
    """Maps points of [0, 1]^d onto named values and back: linear over a range, or over
    log(range) where the range is log-scaled."""

    names: tuple[str, ...]
    lows: np.ndarray
    highs: np.ndarray
    logs: np.ndarray

    @classmethod
    def from_bounds(cls, bounds: dict[str, tuple[float, float, bool]]) -> UnitCube:
        """bounds: name -> (low, high, log)."""
        if not bounds:
            raise ValueError("the search space is empty")
        names, lows, highs, logs = [], [], [], []
        for name, (low, high, log) in bounds.items():
            names.append(name)
            lows.append(math.log(low) if log else float(low))
            highs.append(math.log(high) if log else float(high))
            logs.append(bool(log))
        return cls(tuple(names), np.array(lows), np.array(highs), np.array(logs, dtype=bool))

    @property
    def dim(self) -> int:
        return len(self.names)

    def to_config(self, unit: np.ndarray) -> dict[str, float]:
        scaled = self.lows + np.asarray(unit, dtype=float) * (self.highs - self.lows)
        values = np.where(self.logs, np.exp(scaled), scaled)
        return {name: float(value) for name, value in zip(self.names, values, strict=True)}


def space_filling(n: int, dim: int, seed: int | None) -> np.ndarray:
    """n seeded Latin-hypercube points of the unit cube (rows)."""
    return qmc.LatinHypercube(d=dim, rng=np.random.default_rng(seed)).random(n)


def ard_kernel(dim: int, length_scale_bounds: tuple[float, float] = (1e-2, 1e2)) -> Kernel:
    """Amplitude x ARD Matern 5/2 + white noise, for inputs in the unit cube and normalised
    targets (GaussianProcess fits it with log_prior when asked)."""
    matern = Matern(length_scale=np.full(dim, 0.5), length_scale_bounds=length_scale_bounds, nu=2.5)
    return ConstantKernel(1.0, (1e-2, 1e2)) * matern + WhiteKernel(1e-4, (1e-6, 1e-1))


def log_prior(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Optuna's GPSampler prior (optuna/_gp/prior.py) on ard_kernel's log hyperparameters
    [amplitude, length scales..., noise], and its gradient: a length scale l is penalised by
    0.1 (l^2 + 1 / l^2) (neither collapsing onto the data nor ignoring an input on a few dozen
    points, which maximum likelihood alone does), the amplitude has a Gamma(2, 1) prior, the
    noise a Gamma(1.1, 30) one."""
    scale, lengths, noise = theta[0], theta[1:-1], theta[-1]
    value = (scale - math.exp(scale)) + (0.1 * noise - 30 * math.exp(noise))
    value -= 0.1 * float(np.sum(np.exp(2 * lengths) + np.exp(-2 * lengths)))
    lengths_grad = -0.2 * (np.exp(2 * lengths) - np.exp(-2 * lengths))
    grad = np.concatenate([[1 - math.exp(scale)], lengths_grad, [0.1 - 30 * math.exp(noise)]])
    return np.asarray(value), grad


def _maximise_posterior(obj_func: Callable, initial_theta: np.ndarray, bounds: np.ndarray):
    """scikit-learn's optimizer hook: L-BFGS-B on -(log marginal likelihood + log_prior)."""

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = obj_func(theta, eval_gradient=True)
        prior, prior_grad = log_prior(theta)
        return float(value - prior), grad - prior_grad

    result = minimize(loss, initial_theta, method="L-BFGS-B", jac=True, bounds=bounds)
    return result.x, result.fun


@functools.cache
def _thread_pools() -> ThreadpoolController:
    """The process's BLAS and OpenMP pools, found once: threadpool_limits finds them anew on
    every call (reading the process's loaded libraries, ~4 ms beside scikit-learn and scipy),
    which a suggestion that asks its models a few hundred times cannot afford."""
    return ThreadpoolController()


@contextmanager
def quiet_numerics() -> Iterator[None]:
    """One BLAS thread and no convergence warnings (tiny data sets) while a model is fitted or asked."""
    with warnings.catch_warnings(), _thread_pools().limit(limits=1):
        warnings.simplefilter("ignore")
        yield


class GaussianProcess:
    """A Gaussian process of one quantity over the unit cube, warm-started from its last fit.

    kernel: a scikit-learn kernel; alpha: added to the diagonal (noise the kernel does not
    model); restarts: extra random starts of a cold fit; prior: fit ard_kernel's hyperparameters
    under log_prior (maximum a posteriori) rather than by maximum likelihood; phase: shifts
    which fits restart and which tune the hyperparameters (the first fit always does both), so
    that several models of one search take these turns at different suggestions. Picklable:
    its state is the kernel's fitted hyperparameters and the last fitted model."""

    phase = 0  # what a GP pickled before phases existed (a study's searcher state) resumes with

    def __init__(
        self,
        kernel: Kernel,
        *,
        alpha: float = 1e-6,
        restarts: int = 1,
        seed: int = 0,
        prior: bool = False,
        phase: int = 0,
    ) -> None:
        self.kernel = kernel
        self.prior = prior
        self.alpha = alpha
        self.restarts = restarts
        self.seed = seed
        self.phase = phase
        self.fits = 0
        self.model: GaussianProcessRegressor | None = None

    def fit(self, points: np.ndarray, values: np.ndarray) -> GaussianProcess:
        turn = self.fits + self.phase
        cold = self.fits == 0 or turn % RESTART_EVERY == 0
        tune = cold or len(points) < TUNE_ALWAYS_BELOW or turn % TUNE_EVERY == 0
        model = GaussianProcessRegressor(
            kernel=self.kernel,
            alpha=self.alpha,
            normalize_y=True,
            optimizer=(_maximise_posterior if self.prior else "fmin_l_bfgs_b") if tune else None,
            n_restarts_optimizer=self.restarts if cold else 0,
            random_state=self.seed + self.fits,
        )
        with quiet_numerics():
            model.fit(np.asarray(points, float), np.asarray(values, float))
        self.kernel = model.kernel_  # the next fit starts here
        self.model = model
        self.fits += 1
        return self

    def predict(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation at each row of `points`."""
        if self.model is None:
            raise ValueError("the Gaussian process has not been fitted")
        with quiet_numerics():
            mean, std = self.model.predict(np.atleast_2d(points), return_std=True)
        return mean, std


def with_liars(points: np.ndarray, values: np.ndarray, pending: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The data plus each point in flight, registered with the mean observed value (a constant
    liar, per column of `values`)."""
    if not len(pending):
        return points, values
    liar = np.broadcast_to(values.mean(axis=0), (len(pending), *values.shape[1:]))
    return np.concatenate([points, pending]), np.concatenate([values, liar])


def candidates(rng: np.random.RandomState, dim: int, anchors: np.ndarray, scale: float = LOCAL_SCALE):
    """Random points of the unit cube plus Gaussian perturbations of `anchors` (rows)."""
    anchors = np.asarray(anchors, float).reshape(-1, dim)[:N_ANCHORS]
    around = anchors.repeat(N_AROUND, axis=0) + rng.normal(0.0, scale, (len(anchors) * N_AROUND, dim))
    # Reflected at the cube's faces, not clipped: clipping would pile candidates onto the faces.
    around = 1.0 - np.abs(1.0 - np.abs(around) % 2.0)
    return np.concatenate([rng.uniform(size=(N_RANDOM, dim)), around])


def maximise(
    score: Callable[[np.ndarray], np.ndarray],
    rng: np.random.RandomState,
    dim: int,
    anchors: np.ndarray,
    fixed: np.ndarray | None = None,
) -> np.ndarray:
    """The candidate point with the highest `score` (a vectorised acquisition): over `fixed`
    points where given (a lattice), else over candidates around `anchors` and then, finer,
    around the best of those."""
    if fixed is not None:
        return fixed[int(np.argmax(score(fixed)))]
    first = candidates(rng, dim, anchors)
    values = score(first)
    best = first[np.argsort(values)[-N_REFINE:]]
    second = candidates(rng, dim, best, LOCAL_SCALE / 4)[N_RANDOM:]
    pool = np.concatenate([first, second])
    values = np.concatenate([values, score(second)])
    starts = np.argsort(values)[-N_POLISH:]
    polished, polished_values = polish(score, pool[starts], values[starts])
    return polished[int(np.argmax(polished_values))]


def polish(
    score: Callable[[np.ndarray], np.ndarray], starts: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A few steps of gradient ascent from each row of `starts` (their scores `values`), all
    rows at once: the gradient by forward differences, then the best of a few step lengths
    along it (or no step), inside the cube. The candidates' search finds the right basin; this
    finds its top, as BoTorch and Optuna do with L-BFGS-B from their best candidates, where a
    score's gradient comes from autograd and here costs one vectorised call per step."""
    x, f = np.array(starts, float), np.array(values, float)
    n, dim = x.shape
    steps = np.array(POLISH_STEPS)
    for _ in range(POLISH_ITERATIONS):
        probes = np.clip(x[:, None, :] + POLISH_DELTA * np.eye(dim)[None], 0.0, 1.0)
        slopes = (score(probes.reshape(-1, dim)).reshape(n, dim) - f[:, None]) / POLISH_DELTA
        norms = np.linalg.norm(slopes, axis=1, keepdims=True)
        direction = slopes / np.where(norms > 0, norms, 1.0)
        tried = np.clip(x[:, None, :] + steps[None, :, None] * direction[:, None, :], 0.0, 1.0)
        tried_values = score(tried.reshape(-1, dim)).reshape(n, len(steps))
        pick = np.argmax(tried_values, axis=1)
        better = tried_values[np.arange(n), pick] > f
        x[better] = tried[np.arange(n), pick][better]
        f[better] = tried_values[np.arange(n), pick][better]
    return x, f


def best_first(values: np.ndarray) -> np.ndarray:
    """Row indices of `values` (one column, larger is better) from the best down."""
    return np.argsort(-np.asarray(values, float).ravel(), kind="stable")

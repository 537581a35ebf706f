"""Acquisition functions, vectorised over candidate points: each takes the Gaussian processes'
posterior means and standard deviations at the candidates (arrays of one length, or (n, 2) for the
two objectives of a front) and returns one score per candidate, larger is better. Every quantity
is oriented so that larger is better; a constraint is met where its quantity is at most 0."""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

TINY = 1e-12  # a standard deviation below this is treated as this (no division by zero)


def probability_of_improvement(mean: np.ndarray, std: np.ndarray, best: float, xi: float) -> np.ndarray:
    """P(f > best + xi) (Kushner 1964): the study's acquisition."""
    return norm.cdf((mean - best - xi) / np.maximum(std, TINY))


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
    """E[max(f - best, 0)] (Jones et al. 1998)."""
    std = np.maximum(std, TINY)
    z = (mean - best) / std
    return (mean - best) * norm.cdf(z) + std * norm.pdf(z)


def probability_feasible(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """P(c <= 0) for a constraint c modelled by a Gaussian process (Gardner et al. 2014)."""
    return norm.cdf(-mean / np.maximum(std, TINY))


def log_probability_feasible(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """log P(c <= 0), accurate where the probability itself underflows to 0 (far from feasible,
    where candidates must still be told apart)."""
    return norm.logcdf(-mean / np.maximum(std, TINY))


def _below(threshold: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """E[max(threshold - X, 0)] for X ~ N(mean, std^2), broadcast; 0 where threshold is -inf."""
    with np.errstate(invalid="ignore"):  # -inf * 0 at the first strip's open end
        z = (threshold - mean) / std
        value = (threshold - mean) * norm.cdf(z) + std * norm.pdf(z)
    return np.where(np.isneginf(threshold), 0.0, value)


def expected_hypervolume_improvement(
    mean: np.ndarray, std: np.ndarray, front: np.ndarray, reference: np.ndarray
) -> np.ndarray:
    """Exact expected hypervolume improvement of two independent Gaussian objectives over a
    front (Emmerich et al. 2011; what Optuna's GPSampler and BoTorch compute, there in logs).

    Args:
        mean, std: (n, 2) posterior of each candidate's two objectives, larger is better.
        front: (k, 2) the non-dominated observations, larger is better.
        reference: (2,) a point worse than every front point in both objectives.

    In cost terms (c = -gain) the region the front leaves open is a staircase of k + 1 vertical
    strips: strip j spans costs [l_j, u_j) in the first objective and lies below the height h_j
    in the second. A candidate at (x, y) adds the sum over strips of (length of [max(x, l_j), u_j))
    times max(h_j - y, 0); the two objectives are independent, so each term's expectation is the
    product of E[(u_j - max(x, l_j))^+] = g_x(u_j) - g_x(l_j) and E[(h_j - y)^+] = g_y(h_j), with
    g(t) = E[(t - X)^+] in closed form. O(n k), no sampling."""
    cost_mean, std = -np.asarray(mean, float), np.maximum(np.asarray(std, float), TINY)
    ref = -np.asarray(reference, float)
    front = -np.asarray(front, float).reshape(-1, 2)
    front = front[(front < ref).all(axis=1)]
    order = np.argsort(front[:, 0])
    a, b = front[order, 0], front[order, 1]
    lows = np.concatenate([[-np.inf], a])
    highs = np.concatenate([a, [ref[0]]])
    heights = np.concatenate([[ref[1]], np.minimum.accumulate(b)]) if len(b) else np.array([ref[1]])
    x_mean, x_std = cost_mean[:, :1], std[:, :1]
    y_mean, y_std = cost_mean[:, 1:], std[:, 1:]
    lengths = _below(highs[None, :], x_mean, x_std) - _below(lows[None, :], x_mean, x_std)
    return (lengths * _below(heights[None, :], y_mean, y_std)).sum(axis=1)

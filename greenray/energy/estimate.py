"""The energy of one device over one window from what the meter has (sample integrals, counter
reads), each with its expected error, and the choice of the one with the smaller error. Every
error here is an about-95% bound in Joules: what the estimate stays within for about 19
windows in 20 (docs/ENERGY.md, "Expected error")."""

from __future__ import annotations

import math
from dataclasses import dataclass

from greenray.energy.calibration import sampling_error_j, tick_error_j

COUNTER, SAMPLES = "counter", "samples"


@dataclass(frozen=True)
class Estimate:
    joules: float
    uncertainty_j: float
    kind: str  # COUNTER or SAMPLES


def lag_mass_s(seconds: float, average_s: float) -> float:
    """How much of a window a moving average of `average_s` puts outside it: integrating such a
    reading over `seconds` weighs the power of earlier moments in place of the window's own.
    Times the power's swing, it bounds the error."""
    if average_s <= 0:
        return 0.0
    return seconds - seconds**2 / (2 * average_s) if seconds < average_s else average_s / 2


def from_samples(
    samples_j: float,
    b2_j2: float,
    seconds: float,
    *,
    ratio: float,
    ratio_rel: float,
    average_s: float,
    swing_w: float,
) -> Estimate:
    """The sample integral scaled by the counter/samples ratio. Its error: the ratio's, the
    trapezoids', and for a moving-average field (`average_s` > 0) its lag over the power's swing."""
    joules = ratio * samples_j
    lag = swing_w * lag_mass_s(seconds, average_s)
    error = math.sqrt((ratio_rel * joules) ** 2 + sampling_error_j(b2_j2) ** 2 + lag**2)
    return Estimate(joules, error, SAMPLES)


def from_counter_edges(
    delta_j: float, *, period_s: float, p0_w: float, p1_w: float, read_s: float
) -> Estimate:
    """A counter read at both window edges. Its error: each read lags by part of the counter's
    period, and a read that takes `read_s` may have been taken anywhere inside it."""
    timing = max(p0_w, p1_w) * read_s / 2
    error = math.sqrt(tick_error_j(period_s, p0_w, p1_w) ** 2 + 2 * timing**2)
    return Estimate(delta_j, error, COUNTER)


def from_anchors(
    counter_j: float,
    edge_samples_j: float,
    edge_b2_j2: float,
    edge_seconds: tuple[float, float],
    *,
    period_s: float,
    p_first_w: float,
    p_last_w: float,
    ratio: float,
    ratio_rel: float,
    average_s: float,
    swing_w: float,
) -> Estimate:
    """The counter between two background reads inside the window, plus the scaled samples of
    the two stretches between the window's edges and those reads."""
    edge = ratio * edge_samples_j
    lag = swing_w * sum(lag_mass_s(s, average_s) for s in edge_seconds)
    error = math.sqrt(
        tick_error_j(period_s, p_first_w, p_last_w) ** 2
        + (ratio_rel * edge) ** 2
        + sampling_error_j(edge_b2_j2) ** 2
        + lag**2
    )
    return Estimate(counter_j + edge, error, COUNTER)


def best(estimates: list[Estimate]) -> Estimate:
    """The estimate with the smallest expected error (the counter on a tie: it needs no
    scaling)."""
    return min(estimates, key=lambda e: (e.uncertainty_j, e.kind != COUNTER))

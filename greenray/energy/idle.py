"""The idle baseline's rules: when a device's power has settled (a GPU just out of work draws
more for a while, and an averaged reading lags behind it), and what a baseline says of itself."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# measure_idle waits until the power is steady (its mean over the last SETTLE_SPAN_S, half
# against half, moves less than SETTLE_REL, SETTLE_ABS_W or three standard errors) or
# SETTLE_MAX_S has passed; a moving-average field needs twice its window.
SETTLE_SPAN_S = 1.0
SETTLE_STEP_S = 0.1
SETTLE_MAX_S = 10.0
SETTLE_REL = 0.005
SETTLE_ABS_W = 0.25


@dataclass(frozen=True)
class IdleStats:
    """One device's idle baseline and how far to trust it. Units: W, s."""

    mean_w: float
    spread_w: float  # standard deviation of the samples over the measurement
    uncertainty_w: float | None  # about-95% bound on the mean's error
    samples: int
    settle_s: float  # waited for the power to settle before measuring
    settled: bool  # False: it was still changing when SETTLE_MAX_S ran out
    power_field: str


def steady(times: np.ndarray, watts: np.ndarray, now: float, span: float) -> bool:
    """Whether one device's readings over the last `span` seconds before `now` are steady: the
    mean of the newer half moved from the older half's by no more than SETTLE_REL of it,
    SETTLE_ABS_W, or three standard errors (a noisy reading, as RAPL's, is not a trend)."""
    ok = ~np.isnan(watts)
    times, values = times[ok], watts[ok]
    older, newer = values[times < now - span / 2], values[times >= now - span / 2]
    if len(older) < 3 or len(newer) < 3:
        return False
    moved = abs(newer.mean() - older.mean())
    noise = 3 * math.sqrt(older.var(ddof=1) / len(older) + newer.var(ddof=1) / len(newer))
    return moved <= max(SETTLE_REL * abs(newer.mean()), SETTLE_ABS_W, noise)

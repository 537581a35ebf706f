"""The idle baseline's rules: when a device's power has settled (a GPU just out of work draws
more for a while, and an averaged reading lags behind it), waiting until it has, and what a
baseline says of itself (EnergyMeter.measure_idle)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from greenray.energy.columns import Columns
from greenray.energy.measurement import Measurement
from greenray.energy.sensor import Sensor

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


def measure(
    sensor: Sensor,
    which: list[int],
    seconds: float,
    settle_max_s: float,
    *,
    begin: Callable[..., None],
    end: Callable[[str], Measurement],
    warn: Callable[[str, str], None],
) -> dict[str, IdleStats]:
    """The idle baseline of the devices `which`: their mean power over an idle window of
    `seconds` opened (`begin`) and closed (`end`) once their power has settled."""
    sensor.dense += 1  # the baseline's spread and settling need every interval's sample
    try:
        settled = settle(sensor, which, settle_max_s, warn)
        name = f"idle-{uuid.uuid4().hex}"
        begin(name, busy=False)
        sensor.wait(seconds)
        m = end(name)
    finally:
        sensor.dense -= 1
    t1 = sensor.clock()
    _, watts = sensor.rows(t1 - m.seconds - sensor.interval_s, t1)
    return idle_stats(sensor.devices, which, m, watts, settled)


def settle(
    sensor: Sensor, which: list[int], max_s: float, warn: Callable[[str, str], None]
) -> tuple[float, bool]:
    """Wait until the power of every device in `which` is steady; (seconds waited, whether it
    settled)."""
    clock, columns = sensor.clock, sensor.devices
    start = clock()
    span = max([SETTLE_SPAN_S] + [2 * columns.all[i].average_s for i in which])

    def is_steady(i: int) -> bool:
        now = clock()
        times, watts = sensor.rows(now - span, now)
        return steady(times, watts[:, i] if len(times) else np.empty(0), now, span)

    while True:
        sensor.wait(SETTLE_STEP_S)
        waited = clock() - start
        if waited >= span and all(is_steady(i) for i in which):
            return waited, True
        if waited >= max_s:
            keys = ", ".join(columns.all[i].device.key for i in which)
            warn(
                f"unsettled:{keys}",
                f"the power of {keys} was still changing after {max_s:g} s: the idle baseline may be high",
            )
            return waited, False


def idle_stats(
    columns: Columns,
    which: list[int],
    m: Measurement,
    watts: np.ndarray,
    settled: tuple[float, bool],
) -> dict[str, IdleStats]:
    """Per device in `which` that measured its idle window `m`, its baseline: `watts` are the
    trace's rows over the window (one column per device), `settled` what `settle` said."""
    found = {}
    for i in which:
        reading = m.devices[i]
        if reading.joules is None or not reading.seconds:
            continue
        column = watts[:, i][~np.isnan(watts[:, i])] if len(watts) else np.array([])
        found[reading.device.key] = IdleStats(
            mean_w=reading.joules / reading.seconds,
            spread_w=float(column.std(ddof=1)) if len(column) > 1 else 0.0,
            uncertainty_w=reading.uncertainty_j / reading.seconds
            if reading.uncertainty_j is not None
            else None,
            samples=reading.samples,
            settle_s=settled[0],
            settled=settled[1],
            power_field=columns.all[i].field,
        )
    return found

"""A meter's reads of its devices, made outside its lock: a pass over every device's power, the
counters at a window's edges, and the background reads of costly counters ("anchors", which
calibrate the power samples: calibration.py). A read slower than SLOW_READ_S has no known time
(the driver stalled): its value is not used."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from greenray.energy.backend import EnergyUnavailable
from greenray.energy.calibration import Anchor
from greenray.energy.columns import Columns
from greenray.energy.trace import PowerTrace

SLOW_READ_S = 0.05

Clock = Callable[[], float]
Warn = Callable[[str, str], None]
Failures = list[tuple[int, Exception]]


def read_power(columns: Columns, clock: Clock, warn: Warn) -> tuple[list[float], list[float], Failures]:
    """One pass over every device still there: per device the moment of its read and its Watts
    (NaN where it gave none), and the reads that failed."""
    n = len(columns)
    stamps, watts = [float("nan")] * n, [float("nan")] * n
    failures: Failures = []
    before = clock()
    for i, c in enumerate(columns.all):
        if columns.health[i].ended_at is not None:
            continue
        try:
            value = c.backend.read_power_w(c.device)
        except EnergyUnavailable as exc:
            failures.append((i, exc))
            before = clock()
            continue
        after = clock()
        if after - before > SLOW_READ_S:
            warn(f"slow:{i}", f"a power read of {c.device.key} stalled: its value is not used")
        else:
            stamps[i], watts[i] = before, value  # read at once, but the GIL may delay the return
        before = after
    return stamps, watts, failures


def read_edge_counters(
    columns: Columns,
    which: list[int],
    clock: Clock,
    warn: Warn,
    failed: Callable[[int, Exception], None],
    lock: threading.RLock,
) -> tuple[float, dict[int, tuple[float, float]]]:
    """The counters of the columns `which` (J, and what each read took) and the moment they
    stand for: the middle of the reads, or their start when one stalled (its value is dropped,
    so the window is not stretched by it). A failed read is told to `failed` at once."""
    values: dict[int, tuple[float, float]] = {}
    first = clock()
    stalled = False
    for i in which:
        c = columns.all[i]
        before = clock()
        try:
            value = c.backend.read_counter_j(c.device)
        except EnergyUnavailable as exc:
            with lock:
                failed(i, exc)
            continue
        took = clock() - before
        if took > SLOW_READ_S:
            stalled = True
            warn(f"slow-counter:{i}", f"a counter read of {c.device.key} stalled: not used")
            continue
        values[i] = (value, took)
    return (first if stalled else (first + clock()) / 2), values


def read_anchors(columns: Columns, clock: Clock) -> tuple[list[tuple[int, float, float]], Failures]:
    """One pass over the costly counters of the devices still there: (column, moment, J) per
    timely read, and the reads that failed."""
    reads: list[tuple[int, float, float]] = []
    failures: Failures = []
    for i, c in enumerate(columns.all):
        if not c.anchored or not columns.live(i):
            continue
        before = clock()
        try:
            value = c.backend.read_counter_j(c.device)
        except EnergyUnavailable as exc:
            failures.append((i, exc))
            continue
        after = clock()
        if after - before <= SLOW_READ_S:
            reads.append((i, (before + after) / 2, value))
    return reads, failures


def take_anchor(
    columns: Columns, trace: PowerTrace, i: int, t: float, counter_j: float, interval_s: float, warn: Warn
) -> Anchor | None:
    """Pair a background counter read with the power samples' running sum at its moment; the
    device's latest anchor, or None where it has no power reading yet to pair it with."""
    at = trace.at(i, t)
    if at is None:
        return None
    calibration = columns.calibration[i]
    # A read lags the truth by the energy since the counter last moved: the highest power
    # over that period bounds it (the reading at the read itself may be a lull).
    _, recent = trace.rows(t - calibration.period_s - interval_s, t)
    seen = recent[:, i][~np.isnan(recent[:, i])]
    power = float(trace.high_w()[i]) if columns.all[i].average_s else float(seen.max(initial=0.0))
    jump = calibration.add(t, counter_j, at[0], at[1], power)
    if jump is not None:
        warn(
            f"jump:{i}:{calibration.epoch}",
            f"the energy counter of {columns.all[i].device.key} jumped ({jump}: a GPU reset, "
            "a driver reload or a wrap): windows spanning it use the power samples",
        )
    return calibration.latest

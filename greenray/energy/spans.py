"""A serving replica's per-batch energy windows, the cheap way (EnergyMeter.open_span and
close_span). The batch's own thread takes a power reading and the time at each edge; where no
other reading came between the two (the sampler sleeps through most short batches), the
batch's Joules and peak are the two readings' trapezoid and the higher of them, a few float
operations, without touching the trace (which integrates the readings later, in bulk); else
they come from the trace's running sums at the edges (PowerTrace.state) and the rows folded in
while the span was open. So the Joules its answers carry are known at its close. What else its
record holds (the expected error, the idle-free Joules) is worked out later for many batches at
once (`settle`), by whoever reads them.

The general windows (EnergyMeter.begin_window) search the trace at both edges, weigh counter
reads and build a Measurement: about 0.4 ms of CPU each on cpu-vm-2, a tenth of a replica's CPU
at 64 batches/s. A span uses the power samples alone, scaled by the device's counter/samples
ratio: a batch is far shorter than a counter's step or the background counter reads' spacing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from greenray.energy.measurement import UNMEASURED, combined_source

Edge = tuple[float, float, int] | None  # a device's running Joules, J^2 and readings at an edge


class Reading(NamedTuple):
    """One pass over the devices' power as the meter took it: each device's time and Watts (NaN:
    no reading), and the number of its row in the trace."""

    stamps: list[float]
    watts: list[float]
    row: int


@dataclass(slots=True, eq=False)  # one span is itself alone (the meter finds it by identity)
class BatchSpan:
    """One batch's window: its start on the meter's clock and in Unix seconds, the power reading
    taken at its start, and what is known once it has closed."""

    t0: float
    wall0: float
    begin: Reading | None
    peak_from: float = -math.inf  # the trace rows from this time on count for its peak
    peak_w: float = math.nan  # the compute devices' highest summed reading, edges included
    t1: float = math.nan
    device_j: list[float | None] = field(default_factory=list)  # samples' Joules x the device's ratio
    b2: list[float] = field(default_factory=list)  # per device: its sampling error sum (J^2)
    joules: float | None = None  # the compute devices' (None: none measured)
    source: str = UNMEASURED  # where `joules` come from

    @property
    def seconds(self) -> float:
        return max(self.t1 - self.t0, 0.0)

    def fold(self, summed: float) -> None:
        """Take one trace row's summed compute power into the peak (NaN: no reading)."""
        if summed > self.peak_w or (self.peak_w != self.peak_w and summed == summed):
            self.peak_w = summed


class SpanEnergy(NamedTuple):
    """What a settled span measured. Units: J, W."""

    joules: float | None
    uncertainty_j: float | None  # about-95% bound on the error of `joules`
    idle_free_joules: float | None  # None where a measured device has no idle baseline
    peak_power_w: float | None


@dataclass(frozen=True)
class DeviceTerms:
    """What settling needs of one compute device, as the meter has it when spans are settled."""

    index: int
    ratio_rel: float  # the counter/samples ratio's relative error
    average_s: float  # > 0 only for a moving-average power field
    swing_w: float  # how far its power may swing
    idle_w: float | None


def own_readings(begin: Reading | None, end: Reading | None, gap_s: float) -> bool:
    """Whether a span's two readings are next to each other in the trace (no other reading came
    between them), every device answered both, and none of their segments is a gap (longer than
    `gap_s`, whose error the trace bounds by the power's swing then): its Joules are then the two
    readings' alone."""
    if begin is None or end is None or end.row != begin.row + 1:
        return False
    return all(
        pb == pb and pe == pe and te - tb <= gap_s
        for tb, pb, te, pe in zip(begin.stamps, begin.watts, end.stamps, end.watts, strict=True)
    )


def close_on_readings(
    span: BatchSpan,
    end: Reading,
    t1: float,
    ratios: Sequence[float],
    compute: Sequence[int],
) -> None:
    """Close `span` at `t1` on its own two readings (`own_readings`), as the trace integrates
    them: power linear between them and held after the last; the segment's error bound
    |dW| x dt / 2."""
    begin = span.begin
    span.device_j, span.b2 = [], []
    for i, ratio in enumerate(ratios):
        tb, pb, te, pe = begin.stamps[i], begin.watts[i], end.stamps[i], end.watts[i]
        dt = te - tb
        p0 = pb + (pe - pb) * (span.t0 - tb) / dt if dt > 0 else pe
        span.device_j.append(ratio * ((p0 + pe) / 2 * (te - span.t0) + pe * (t1 - te)))
        worst = abs(pe - pb) * dt / 2
        span.b2.append(worst * worst)
    span.t1 = t1
    span.fold(sum(begin.watts[i] for i in compute))
    span.fold(sum(end.watts[i] for i in compute))
    _sum(span, compute)


def close_on_sums(
    span: BatchSpan,
    start: list[Edge],
    end: list[Edge],
    t1: float,
    ratios: Sequence[float],
    compute: Sequence[int],
) -> None:
    """Close `span` at `t1` on the trace's running sums at its two edges (`start`, `end`)."""
    span.t1 = t1
    span.device_j = [
        ratio * (e[0] - s[0]) if s is not None and e is not None else None
        for s, e, ratio in zip(start, end, ratios, strict=True)
    ]
    span.b2 = [
        e[1] - s[1] if s is not None and e is not None else 0.0 for s, e in zip(start, end, strict=True)
    ]
    _sum(span, compute)


def _sum(span: BatchSpan, compute: Sequence[int]) -> None:
    measured = [span.device_j[i] for i in compute if span.device_j[i] is not None]
    span.joules = float(sum(measured)) if measured else None


def source(span: BatchSpan, compute: Sequence[int], sources: Sequence[str]) -> str:
    """Where a closed span's Joules come from: the power source of the compute devices that
    measured it."""
    if span.joules is None:
        return UNMEASURED
    return combined_source(sources[i] for i in compute if span.device_j[i] is not None)


def settle(spans: Sequence[BatchSpan], devices: Sequence[DeviceTerms]) -> list[SpanEnergy]:
    """The closed spans' full measurements, in one vectorised pass per compute device: the
    expected error as a window's samples estimate has it (greenray.energy.estimate.from_samples:
    the ratio's, the trapezoids', a moving average's lag), and the idle-free Joules."""
    k = len(spans)
    seconds = np.array([s.seconds for s in spans])
    variance, idle_free = np.zeros(k), np.zeros(k)
    idle_known = np.ones(k, dtype=bool)
    for d in devices:
        i = d.index
        joules = np.array([np.nan if s.device_j[i] is None else s.device_j[i] for s in spans])
        b2 = np.array([s.b2[i] for s in spans])
        measured = ~np.isnan(joules)
        j = np.where(measured, joules, 0.0)
        lag = d.swing_w * _lag_mass(seconds, d.average_s)
        # sampling_error_j(b2)^2 = 4 b2 / 3
        variance += np.where(measured, (d.ratio_rel * j) ** 2 + 4.0 * np.maximum(b2, 0.0) / 3.0 + lag**2, 0.0)
        if d.idle_w is None:
            idle_known &= ~measured
        else:
            idle_free += np.where(measured, j - d.idle_w * seconds, 0.0)
    errors, idle_free = np.sqrt(variance).tolist(), idle_free.tolist()
    return [
        SpanEnergy(
            span.joules,
            errors[n] if span.joules is not None else None,
            idle_free[n] if span.joules is not None and idle_known[n] else None,
            None if math.isnan(span.peak_w) else span.peak_w,
        )
        for n, span in enumerate(spans)
    ]


def _lag_mass(seconds: np.ndarray, average_s: float) -> np.ndarray:
    """greenray.energy.estimate.lag_mass_s over many windows."""
    if average_s <= 0:
        return np.zeros_like(seconds)
    return np.where(seconds < average_s, seconds - seconds**2 / (2 * average_s), average_s / 2)

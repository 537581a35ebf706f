"""What a meter knows about each device (Column), what a window holds while it is open (Window:
its start, edge counter reads, background reads, peaks), and how one device's Joules over a
window are read off the power trace and the counters: each way with its expected error, the
smaller error chosen (greenray.energy.estimate)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from greenray.energy import estimate
from greenray.energy.backend import Backend, Device
from greenray.energy.calibration import UNCALIBRATED_REL, Anchor, Calibration, disagrees, implausible
from greenray.energy.health import DeviceHealth
from greenray.energy.measurement import DeviceEnergy, Measurement, is_approximate
from greenray.energy.trace import PowerTrace

# A counter read at most this slow (RAPL's, the model's) is read at the edges of every window;
# a costlier one (NVML's, about 4 ms) only in the background.
CHEAP_READ_S = 0.001
# A window whose expected error is above this share of its Joules is marked approximate.
APPROXIMATE_REL = 0.01


@dataclass(frozen=True)
class Column:
    """What the meter knows about one device, fixed when it opens."""

    backend: Backend
    device: Device
    field: str
    period_s: float
    average_s: float  # > 0 only for a moving-average power field
    limit_w: float | None
    model_idle_w: float | None
    edge_counter: bool  # read the counter at window edges (cheap, or the best there is)
    anchored: bool  # read the counter in the background


def column(backend: Backend, device: Device) -> Column:
    has_counter = backend.has_counter(device)
    field_name = getattr(backend, "power_field", "average")
    cheap = getattr(backend, "counter_read_s", 0.004) <= CHEAP_READ_S
    limit = getattr(backend, "power_limit_w", None)
    return Column(
        backend=backend,
        device=device,
        field=field_name,
        period_s=getattr(backend, "counter_period_s", 0.1),
        average_s=getattr(backend, "average_window_s", 1.0) if field_name == "average" else 0.0,
        limit_w=limit(device) if callable(limit) else None,
        model_idle_w=backend.model_idle_w(device),
        # With only an averaged power field, the counter is the better estimate at any length.
        edge_counter=has_counter and (cheap or field_name == "average"),
        anchored=has_counter and not cheap,
    )


@dataclass
class Window:
    name: str
    t0: float
    wall0: float
    busy: bool
    start: list[tuple[float, float, int] | None]  # per device: Joules, J^2, readings at t0
    counters: dict[int, tuple[float, float]]  # device column -> counter J, read seconds
    anchors: list[Anchor | None]  # per device: the first background read inside the window
    peak_w: list[float]  # per device, its highest reading so far
    peak_sum_w: float = math.nan
    seen_t: float = -math.inf  # the latest trace row folded into the peaks


@dataclass(frozen=True)
class Span:
    """One device's samples over a window: running sums at its two edges. Units: s, J, J^2, W."""

    t0: float
    t1: float
    start_j: float
    end_j: float
    b2: float
    samples: int
    peak_w: float | None

    @property
    def seconds(self) -> float:
        return max(self.t1 - self.t0, 0.0)


def fold(window: Window, times: list[float], watts: list[list[float]], summed: list[float]) -> None:
    """Fold trace rows (and their summed compute power) into a window's peaks. Plain Python: a
    few rows at a time, where numpy's fixed cost would dominate. NaN (no reading) never wins a
    comparison."""
    since, peaks = max(window.t0, window.seen_t), window.peak_w
    for t, row, total in zip(times, watts, summed, strict=True):
        if t < since:
            continue
        for i, w in enumerate(row):
            if w > peaks[i] or (peaks[i] != peaks[i] and w == w):
                peaks[i] = w
        if total > window.peak_sum_w or (window.peak_sum_w != window.peak_sum_w and total == total):
            window.peak_sum_w = total
        window.seen_t = t


@dataclass(frozen=True)
class DeviceState:
    """One device's part of a meter, as a window's measurement reads it."""

    index: int
    column: Column
    health: DeviceHealth
    calibration: Calibration | None
    idle_w: float | None


def device_energy(
    window: Window,
    state: DeviceState,
    t1: float,
    counters: dict[int, tuple[float, float]],
    trace: PowerTrace,
    warn: Callable[[str, str], None],
) -> DeviceEnergy:
    """Device `state`'s energy over [window.t0, t1]; `counters` are the counter reads at t1."""
    i, c, health = state.index, state.column, state.health
    partial = health.ended_at is not None and health.ended_at < t1
    notes = [health.reason] if partial else []
    if c.device.shared:
        notes.append(f"{c.device.key} is MIG instance {c.device.mig_uuid}: the energy of its whole GPU")
    span = _span(window, i, min(t1, health.ended_at) if partial else t1, partial, health, trace)
    if span is None:  # nothing of the window was measured on it
        return DeviceEnergy(
            c.device,
            None,
            None,
            None,
            None,
            0,
            "none",
            partial=True,
            power_field=c.field,
            note="; ".join(notes),
        )
    ratio = sample_ratio(state)
    high_w, swing_w = float(trace.high_w()[i]), float(trace.swing_w()[i])
    candidates = [_from_samples(c, span, ratio, swing_w)]
    if i in window.counters and i in counters and not partial:
        edges = _from_counter_edges(c, span, window.counters[i], counters[i], high_w, notes)
        edges = [e for e in edges if _explained(c, e, candidates[0], notes)]
        if not edges:  # the counter jumped between them
            warn(f"edge-jump:{i}", notes[-1])
        candidates += edges
    candidates += _from_anchors(window.anchors[i], state.calibration, c, span, ratio, high_w, swing_w, notes)
    chosen = estimate.best(candidates)
    idle = state.idle_w
    return DeviceEnergy(
        device=c.device,
        joules=chosen.joules,
        idle_free_joules=chosen.joules - idle * span.seconds if idle is not None else None,
        avg_power_w=chosen.joules / span.seconds if span.seconds > 0 else None,
        peak_power_w=span.peak_w,
        samples=span.samples,
        source=c.backend.counter_source if chosen.kind == estimate.COUNTER else c.backend.power_source,
        idle_w=idle,
        uncertainty_j=chosen.uncertainty_j,
        partial=partial,
        power_field=c.field,
        seconds=span.seconds,
        note="; ".join(notes),
    )


def measure(
    window: Window,
    states: list[DeviceState],
    t1: float,
    counters: dict[int, tuple[float, float]],
    trace: PowerTrace,
    warn: Callable[[str, str], None],
    power_field: str | None,
) -> Measurement:
    """The measurement of `window` up to `t1`, from each device's `state`, the edge `counters`
    read at `t1` and the trace."""
    readings = tuple(device_energy(window, state, t1, counters, trace, warn) for state in states)
    peak = window.peak_sum_w if not math.isnan(window.peak_sum_w) else None
    return Measurement(
        name=window.name,
        started_at=window.wall0,
        seconds=t1 - window.t0,
        devices=readings,
        peak_power_w=peak,
        power_field=power_field,
        approximate=is_approximate(readings, APPROXIMATE_REL),
        clock_start=window.t0,
    )


def _span(
    window: Window, i: int, t_end: float, partial: bool, health: DeviceHealth, trace: PowerTrace
) -> Span | None:
    """What device i's samples hold over [window.t0, t_end]; None when nothing."""
    if partial and health.ended_at <= window.t0:
        return None
    # Recomputed while the ring still reaches back: a reading that came after the window
    # opened makes its start exact.
    fresh = trace.at(i, window.t0) if window.t0 >= trace.oldest_t else None
    start = fresh or window.start[i]
    if start is None:
        return None
    end = trace.at(i, t_end, hold=not partial)
    if end is None:  # its last reading has left the ring: the running sums are at it
        end = (float(trace.joules[i]), float(trace.b2[i]), int(trace.samples[i]))
    peak = float(window.peak_w[i])
    return Span(
        t0=window.t0,
        t1=t_end,
        start_j=start[0],
        end_j=end[0],
        b2=trace.b2_after(i, t_end) - start[1],
        samples=end[2] - start[2],
        peak_w=None if math.isnan(peak) else peak,
    )


def sample_ratio(state: DeviceState) -> tuple[float, float]:
    """The factor that scales the device's sample integrals to its counter, and its relative error."""
    if state.calibration is not None:
        return state.calibration.ratio()
    exact = state.column.field in ("model", "derived")  # the model itself, or counter deltas
    return 1.0, 0.0 if exact else UNCALIBRATED_REL


def _from_samples(c: Column, span: Span, ratio: tuple[float, float], swing_w: float) -> estimate.Estimate:
    return estimate.from_samples(
        span.end_j - span.start_j,
        span.b2,
        span.seconds,
        ratio=ratio[0],
        ratio_rel=ratio[1],
        average_s=c.average_s,
        swing_w=swing_w,
    )


def _from_counter_edges(
    c: Column,
    span: Span,
    first: tuple[float, float],
    last: tuple[float, float],
    high_w: float,
    notes: list[str],
) -> list[estimate.Estimate]:
    """The counter read at both edges, unless it jumped between them (said in `notes`). A
    model's counter is its definition (modelled work arrives in steps): not checked."""
    (c0, read0), (c1, read1) = first, last
    if c.field != "model" and implausible(c1 - c0, span.seconds, c.limit_w, c.period_s):
        notes.append(f"the energy counter of {c.device.key} jumped ({c1 - c0:+.0f} J): power samples used")
        return []
    # The tick lag is set by the power just before each read: known from instant samples,
    # only bounded (by the device's most) behind an average.
    edge_w = high_w if c.average_s else (span.peak_w or 0.0)
    return [
        estimate.from_counter_edges(
            c1 - c0, period_s=c.period_s, p0_w=edge_w, p1_w=edge_w, read_s=max(read0, read1)
        )
    ]


def _explained(c: Column, counter: estimate.Estimate, samples: estimate.Estimate, notes: list[str]) -> bool:
    """Whether the samples explain a counter estimate: both are about-95% bounds, so further
    apart than twice their combined bound is a counter step no power drew (a reset by less than
    the power limit allows); said in `notes`. A model's counter is its definition: not checked."""
    allowed = 2.0 * math.hypot(counter.uncertainty_j, samples.uncertainty_j)
    if c.field == "model" or not disagrees(counter.joules, samples.joules, allowed):
        return True
    notes.append(
        f"the energy counter of {c.device.key} jumped ({counter.joules - samples.joules:+.0f} J beside "
        f"its power samples, more than their +-{allowed:.0f} J): power samples used"
    )
    return False


def _from_anchors(
    first: Anchor | None,
    calibration: Calibration | None,
    c: Column,
    span: Span,
    ratio: tuple[float, float],
    high_w: float,
    swing_w: float,
    notes: list[str],
) -> list[estimate.Estimate]:
    """Counter energy between the first (`first`) and last background reads inside the window
    (when two of one counter epoch lie in it), and samples for the stretches outside them;
    none when there are not two, or the counter jumped (said in `notes`)."""
    if calibration is None or first is None:
        return []
    if first.epoch != calibration.epoch:
        notes.append(f"the energy counter of {c.device.key} jumped during the window: samples used")
        return []
    last = calibration.latest if calibration.latest.t <= span.t1 else calibration.previous
    if last is None or last.t <= first.t or last.epoch != first.epoch:
        return []
    edge_s = (first.t - span.t0, span.t1 - last.t)
    share = sum(edge_s) / span.seconds if span.seconds > 0 else 1.0
    estimated = estimate.from_anchors(
        last.counter_j - first.counter_j,
        (first.samples_j - span.start_j) + (span.end_j - last.samples_j),
        span.b2 * share,
        edge_s,
        period_s=c.period_s,
        p_first_w=high_w if c.average_s else first.power_w,
        p_last_w=high_w if c.average_s else last.power_w,
        ratio=ratio[0],
        ratio_rel=ratio[1],
        average_s=c.average_s,
        swing_w=swing_w,
    )
    return [estimated]

"""A costly energy counter (NVML's: about 4 ms a read, moving every 100 ms) read in the
background, about once a second: its reads ("anchors") keep the power samples honest over long
spans (the ratio counter / samples that scales sample integrals), give long windows counter
energy, and show when the counter jumps (GPU reset, driver reload, wrap)."""

from __future__ import annotations

import math
from dataclasses import dataclass

# The counter must have covered this long before its ratio to the samples is trusted.
MIN_SPAN_S = 10.0
# Until then, and where the ratio looks wrong, the samples' own error: the one H100 reference
# (shared/reference/h100.md, before greenray) had 10 ms samples 0.7% under the counter.
UNCALIBRATED_REL = 0.02
# A ratio further than this from 1 means a broken counter or field, not a bias to correct.
MAX_RATIO_OFF = 0.2
# The ratio follows drift (temperature, load mix): a fit older than this is replaced by a
# newer one once that is as good, so it covers the last one to two hours.
REFIT_S = 3600.0
# Where the power limit is unknown, a counter moving faster than this (W) has jumped.
UNKNOWN_LIMIT_W = 2000.0


def sampling_error_j(b2_j2: float) -> float:
    """Two standard deviations of a trapezoid sum whose segments each err uniformly within
    their worst case b (a step anywhere inside): the variance of one is b^2 / 3."""
    return 2.0 * math.sqrt(max(b2_j2, 0.0) / 3.0)


def tick_error_j(period_s: float, p0_w: float, p1_w: float) -> float:
    """About 95% bound (two standard deviations) on the error of a counter difference whose
    two reads each lag the truth by a uniform part of `period_s` at powers up to p0 and p1."""
    return 2.0 * period_s * math.sqrt((p0_w**2 + p1_w**2) / 12.0)


def disagrees(counter_j: float, samples_j: float, allowed_j: float) -> bool:
    """A counter step that its device's power samples cannot explain: further from them than
    the two could be apart (`allowed_j`, the sum of their bounds) plus 1 J for rounding. A GPU
    reset or a driver hiccup that moves the counter by less than the power limit allows (-50 J,
    +300 J mid-window) is caught this way, not by `implausible`."""
    return abs(counter_j - samples_j) > allowed_j + 1.0


def implausible(delta_j: float, seconds: float, limit_w: float | None, period_s: float) -> bool:
    """A counter difference that no device could produce: negative, or above its power limit."""
    limit = limit_w if limit_w else UNKNOWN_LIMIT_W
    return delta_j < -0.5 or delta_j > limit * (seconds + period_s) + 1.0


@dataclass(frozen=True)
class Anchor:
    """One background counter read. Units: s (the meter's clock), J, J^2, W."""

    t: float  # the middle of the read
    counter_j: float
    samples_j: float  # the device's running sample integral at t
    samples_b2: float  # its running sampling error (trace.PowerTrace)
    power_w: float  # the highest power over the counter period before t (bounds its lag)
    epoch: int  # counts counter jumps: anchors of two epochs are never subtracted


class _Fit:
    """Least squares of counter against sample integral over anchors since `origin`, in running
    sums (constant memory). Each read's error is its lag: uniform over the counter period at up
    to its power, so its variance is (period x power)^2 / 12."""

    def __init__(self, origin: Anchor, period_s: float) -> None:
        self.origin = origin
        self.last = origin
        self.period_s = period_s
        self._n = 0
        self._sx = self._sy = self._sxx = self._sxy = 0.0
        self._v = self._xv = self._xxv = 0.0
        self.add(origin)

    @property
    def span_s(self) -> float:
        return self.last.t - self.origin.t

    def add(self, a: Anchor) -> None:
        x, y = a.samples_j - self.origin.samples_j, a.counter_j - self.origin.counter_j
        v = (self.period_s * a.power_w) ** 2 / 12.0
        self._n += 1
        self._sx += x
        self._sy += y
        self._sxx += x * x
        self._sxy += x * y
        self._v += v
        self._xv += x * v
        self._xxv += x * x * v
        self.last = a

    def ratio(self) -> tuple[float, float] | None:
        """The slope and its relative error (about 95%: two standard deviations of the lag
        errors, and the sample integral's own error over the span)."""
        if self._n < 2:
            return None
        mean_x = self._sx / self._n
        spread = self._sxx - self._sx * mean_x
        if spread <= 0:
            return None
        slope = (self._sxy - mean_x * self._sy) / spread
        if slope <= 0:
            return None
        lag_var = (self._xxv - 2 * mean_x * self._xv + mean_x**2 * self._v) / spread**2
        samples = self.last.samples_j - self.origin.samples_j
        sampling = 2.0 * math.sqrt(max(self.last.samples_b2 - self.origin.samples_b2, 0.0) / 3.0) / samples
        return slope, math.hypot(2.0 * math.sqrt(max(lag_var, 0.0)) / slope, sampling)


class Calibration:
    """One device's anchors: the latest two, and the fit of the current epoch's counter against
    its sample integral (the ratio that scales sample integrals)."""

    def __init__(self, period_s: float, limit_w: float | None, average_s: float = 0.0) -> None:
        self.period_s = period_s
        self.limit_w = limit_w
        self.average_s = average_s  # > 0: the samples are a moving average over this span
        self.epoch = 0
        self.latest: Anchor | None = None
        self.previous: Anchor | None = None  # the read before `latest`
        self._fit: _Fit | None = None
        self._next: _Fit | None = None  # a younger fit, to take over once as good
        self._ratio, self._ratio_rel = 1.0, UNCALIBRATED_REL
        self.note = ""  # why the ratio is not used, when it is not

    def add(
        self, t: float, counter_j: float, samples_j: float, samples_b2: float, power_w: float
    ) -> str | None:
        """Take one read; a message when the counter jumped since the previous one (the anchors
        before it are then never subtracted from those after)."""
        jump = None
        previous = self.latest
        if previous is not None:
            delta = counter_j - previous.counter_j
            if implausible(delta, t - previous.t, self.limit_w, self.period_s):
                jump = f"{delta / 1e6:+.3f} MJ in {t - previous.t:.2f} s"
            else:
                jump = self._unexplained(previous, t, delta, samples_j, samples_b2, power_w)
            if jump is not None:
                self.epoch += 1
                self._fit = self._next = None
        anchor = Anchor(t, counter_j, samples_j, samples_b2, power_w, self.epoch)
        self.previous, self.latest = self.latest, anchor
        self._add_to_fits(anchor)
        self._update_ratio()
        return jump

    def _unexplained(
        self, previous: Anchor, t: float, delta_j: float, samples_j: float, samples_b2: float, power_w: float
    ) -> str | None:
        """Why the counter's step since `previous` is not the device's energy (None when the
        samples explain it). Each read lags the truth by at most one counter period at the
        highest power before it, so two reads differ from the truth by at most one such lag;
        the samples, by their ratio's error, their trapezoids' and (a moving average) its lag."""
        samples = self._ratio * (samples_j - previous.samples_j)
        dt = t - previous.t
        # A moving average weighs earlier moments in place of the step's own (estimate.lag_mass_s).
        lag_s = dt - dt**2 / (2 * self.average_s) if 0 < dt < self.average_s else self.average_s / 2
        allowed = (
            self.period_s * max(power_w, previous.power_w)
            + 2.0 * math.hypot(self._ratio_rel * samples, sampling_error_j(samples_b2 - previous.samples_b2))
            + max(power_w, previous.power_w) * lag_s
        )
        if not disagrees(delta_j, samples, allowed):
            return None
        return f"{delta_j - samples:+.0f} J beside its power samples ({samples:.0f} J) in {dt:.2f} s"

    def ratio(self) -> tuple[float, float]:
        """The factor that scales sample integrals to the counter, and its relative error (about
        95%). 1 and UNCALIBRATED_REL until the counter has covered MIN_SPAN_S and the fit beats
        that; after a counter jump, the previous epoch's until the new one does."""
        return self._ratio, self._ratio_rel

    def _add_to_fits(self, anchor: Anchor) -> None:
        if self._fit is None:
            self._fit = _Fit(anchor, self.period_s)
            return
        self._fit.add(anchor)
        if self._next is not None:
            self._next.add(anchor)
        elif self._fit.span_s >= REFIT_S:
            self._next = _Fit(anchor, self.period_s)
        if self._next is not None and self._next.span_s >= MIN_SPAN_S:
            old, new = self._fit.ratio(), self._next.ratio()
            if new is not None and (old is None or new[1] <= old[1]):
                self._fit, self._next = self._next, None

    def _update_ratio(self) -> None:
        fit = self._fit
        found = fit.ratio() if fit is not None and fit.span_s >= MIN_SPAN_S else None
        if found is None:
            return  # keep what there was (the previous epoch's ratio, or none)
        ratio, error = found
        if abs(ratio - 1) > MAX_RATIO_OFF:
            self.note = f"counter/samples ratio {ratio:.3f} is implausible: samples used unscaled"
            self._ratio, self._ratio_rel = 1.0, max(UNCALIBRATED_REL, abs(ratio - 1))
            return
        if error >= UNCALIBRATED_REL:
            return  # not yet better than the samples unscaled
        self.note = ""
        self._ratio, self._ratio_rel = ratio, error
